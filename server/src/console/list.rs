//! What the console's lists share: the header row of a table and the "next page" link.

use maud::{Markup, html};

/// The header of a list's table: one column header per (translated) title, and a last one
/// with `last` in it (the actions' column), if given.
pub fn head(titles: &[&str], last: Option<Markup>) -> Markup {
    html! {
        thead { tr {
            @for title in titles {
                th scope="col" { (title) }
            }
            @if let Some(last) = last {
                th scope="col" { (last) }
            }
        } }
    }
}

/// The link to a list's next page, in its `nav.pager`.
pub struct NextPage<'a> {
    /// The link's address.
    pub href: String,
    /// The link's text, translated.
    pub label: &'a str,
    /// The link's `data-testid`.
    pub testid: &'a str,
    /// The link's `rel`, if any.
    pub rel: Option<&'a str>,
    /// The `nav`'s `aria-label`, if any.
    pub nav_label: Option<&'a str>,
}

impl NextPage<'_> {
    /// The pager.
    pub fn render(&self) -> Markup {
        html! {
            nav.pager aria-label=[self.nav_label] {
                a rel=[self.rel] data-testid=(self.testid) href=(self.href) { (self.label) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_and_the_pager_render_as_written_by_hand() {
        assert_eq!(
            head(&["A", "B"], None).into_string(),
            r#"<thead><tr><th scope="col">A</th><th scope="col">B</th></tr></thead>"#
        );
        assert_eq!(
            head(&["A"], Some(html! { span { "C" } })).into_string(),
            r#"<thead><tr><th scope="col">A</th><th scope="col"><span>C</span></th></tr></thead>"#
        );
        let next = NextPage {
            href: "/x?page=2&a=b".into(),
            label: "Next",
            testid: "next",
            rel: Some("next"),
            nav_label: None,
        };
        assert_eq!(
            next.render().into_string(),
            r#"<nav class="pager"><a rel="next" data-testid="next" href="/x?page=2&amp;a=b">Next</a></nav>"#
        );
    }
}
