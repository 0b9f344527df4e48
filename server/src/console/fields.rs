//! What the console's forms share: the parser of the API's field errors and the markup of a
//! labelled input, select or checkbox with its error under it (`aria-invalid`,
//! `aria-describedby`, the error's id `{name}-error` and `data-testid="error-{name}"`).

use maud::{Markup, html};

/// Splits the API's INVALID_ARGUMENT message `field: message` into the input's name and the
/// message. The field may be a path (`account.sender_email`,
/// `credential.allowed_destinations[2]`): the input is its last part, without the index.
/// `None` when the message does not start with a field.
pub fn parse_field_error(message: &str) -> Option<(String, String)> {
    let (path, text) = message.split_once(": ")?;
    let path = path.split('[').next().unwrap_or(path);
    let field = path.rsplit('.').next().unwrap_or(path);
    (!field.is_empty() && field.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .then(|| (field.to_owned(), text.to_owned()))
}

/// The error under input `name`, if any.
pub fn error_note(name: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error {
            p.error id={ (name) "-error" } data-testid={ "error-" (name) } { (error) }
        }
    }
}

/// A labelled form control: its name, id, label, help and error.
pub struct Field<'a> {
    /// The control's `name`; its error's id is `{name}-error`, its help's `{name}-help`.
    pub name: &'a str,
    /// The control's id: `name` after this prefix (`""` on the accounts pages, `"field-"` on
    /// the others).
    pub id_prefix: &'a str,
    /// The label's text, translated.
    pub label: &'a str,
    /// The error shown under the control.
    pub error: Option<&'a str>,
    /// A help text under the control, translated.
    pub help: Option<&'a str>,
}

impl<'a> Field<'a> {
    /// A field with no error or help yet.
    pub fn new(id_prefix: &'a str, name: &'a str, label: &'a str) -> Self {
        Self {
            name,
            id_prefix,
            label,
            error: None,
            help: None,
        }
    }

    /// With the error under it.
    #[must_use]
    pub fn error(mut self, error: Option<&'a str>) -> Self {
        self.error = error;
        self
    }

    /// With a help text under it.
    #[must_use]
    pub fn help(mut self, help: Option<&'a str>) -> Self {
        self.help = help;
        self
    }

    fn id(&self) -> String {
        format!("{}{}", self.id_prefix, self.name)
    }

    /// What `aria-describedby` names: the help, then the error.
    fn described(&self) -> Option<String> {
        let help = self.help.map(|_| format!("{}-help", self.name));
        let error = self.error.map(|_| format!("{}-error", self.name));
        match (help, error) {
            (Some(h), Some(e)) => Some(format!("{h} {e}")),
            (h, e) => h.or(e),
        }
    }

    fn invalid(&self) -> Option<&'static str> {
        self.error.map(|_| "true")
    }

    /// The label, the control, the help and the error.
    fn wrap(&self, check: bool, control: Markup) -> Markup {
        html! {
            div.field.check[check] {
                label for=(self.id()) { (self.label) }
                (control)
                @if let Some(help) = self.help {
                    p.muted id={ (self.name) "-help" } { (help) }
                }
                (error_note(self.name, self.error))
            }
        }
    }

    /// An `<input type=kind>` showing `value`.
    pub fn input(&self, kind: &str, value: &str, required: bool) -> Markup {
        self.wrap(
            false,
            html! {
                input id=(self.id()) name=(self.name) type=(kind) value=(value) required[required]
                    aria-invalid=[self.invalid()] aria-describedby=[self.described()];
            },
        )
    }

    /// A password input, always empty: a secret is never rendered back.
    pub fn password(&self) -> Markup {
        self.wrap(
            false,
            html! {
                input id=(self.id()) type="password" name=(self.name) value=""
                    autocomplete="new-password"
                    aria-invalid=[self.invalid()] aria-describedby=[self.described()];
            },
        )
    }

    /// A checkbox (sent as `on`).
    pub fn checkbox(&self, checked: bool) -> Markup {
        self.wrap(
            true,
            html! {
                input id=(self.id()) name=(self.name) type="checkbox" value="on" checked[checked]
                    aria-invalid=[self.invalid()] aria-describedby=[self.described()];
            },
        )
    }

    /// A `<textarea>` of `rows` rows.
    pub fn textarea(&self, value: &str, rows: u32) -> Markup {
        self.wrap(
            false,
            html! {
                textarea id=(self.id()) name=(self.name) rows=(rows)
                    aria-invalid=[self.invalid()] aria-describedby=[self.described()] { (value) }
            },
        )
    }

    /// A `<select>` of `options` (value, label) with `value` selected, after a first empty
    /// choice labelled `none` if given.
    pub fn select(&self, value: &str, none: Option<&str>, options: &[(String, String)]) -> Markup {
        self.wrap(
            false,
            html! {
                select id=(self.id()) name=(self.name)
                    aria-invalid=[self.invalid()] aria-describedby=[self.described()] {
                    @if let Some(none) = none {
                        option value="" selected[value.is_empty()] { (none) }
                    }
                    @for (v, label) in options {
                        option value=(v) selected[v == value] { (label) }
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_name_the_input() {
        let parse = |m: &str| parse_field_error(m);
        assert_eq!(
            parse("sender_email: is not an e-mail address"),
            Some(("sender_email".into(), "is not an e-mail address".into()))
        );
        assert_eq!(
            parse("account.port: 0 is out of range"),
            Some(("port".into(), "0 is out of range".into()))
        );
        assert_eq!(
            parse("credential.allowed_destinations[2]: bad host"),
            Some(("allowed_destinations".into(), "bad host".into()))
        );
        assert_eq!(parse("no field here"), None);
        assert_eq!(parse("Two Words: x"), None);
    }

    #[test]
    fn a_field_links_its_error_and_help() {
        let f = Field::new("field-", "secret", "Secret")
            .error(Some("too short"))
            .help(Some("Keep it"));
        let html = f.password().into_string();
        assert!(html.contains(r#"<label for="field-secret">"#), "{html}");
        assert!(html.contains(r#"aria-describedby="secret-help secret-error""#));
        assert!(html.contains(r#"aria-invalid="true""#));
        assert!(html.contains(
            r#"<p class="error" id="secret-error" data-testid="error-secret">too short</p>"#
        ));
        let html = Field::new("", "host", "Host")
            .input("text", "h", true)
            .into_string();
        assert!(
            html.contains(r#"id="host""#) && !html.contains("aria-"),
            "{html}"
        );
    }
}
