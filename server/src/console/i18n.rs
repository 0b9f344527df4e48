//! The console's words in English and Brazilian Portuguese: `key = value` catalogues per
//! language and area (`i18n/en/*.txt`, `i18n/pt-BR/*.txt`), chosen by the user's switch or the browser's
//! `Accept-Language`. No user-facing string lives in code; a test checks that both catalogues
//! have the same keys and that every key the code uses exists.

use std::collections::HashMap;
use std::sync::OnceLock;

/// A language of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Brazilian Portuguese.
    PtBr,
}

/// The English catalogues, one per area of the console.
const EN: [&str; 3] = [
    include_str!("i18n/en/core.txt"),
    include_str!("i18n/en/accounts.txt"),
    include_str!("i18n/en/pages.txt"),
];
/// The Brazilian Portuguese catalogues, the same areas.
const PT_BR: [&str; 3] = [
    include_str!("i18n/pt-BR/core.txt"),
    include_str!("i18n/pt-BR/accounts.txt"),
    include_str!("i18n/pt-BR/pages.txt"),
];

impl Lang {
    /// Every language, for the switch.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::PtBr];

    /// The language tag (`en`, `pt-BR`), for `lang=` and the cookie.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::PtBr => "pt-BR",
        }
    }

    /// The language named by `tag` (`pt-BR`, `pt`, `en-GB`, …), if it is one of ours.
    pub fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "pt" => Some(Lang::PtBr),
            _ => None,
        }
    }

    /// The best of ours for an `Accept-Language` header, by its q-values; English otherwise.
    pub fn negotiate(accept_language: Option<&str>) -> Self {
        let Some(header) = accept_language else {
            return Lang::En;
        };
        let mut best: Option<(f32, Lang)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or_default();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if let Some(lang) = Lang::from_tag(tag)
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }

    fn catalogue(self) -> &'static HashMap<&'static str, &'static str> {
        static CATALOGUES: OnceLock<[HashMap<&'static str, &'static str>; 2]> = OnceLock::new();
        let all = CATALOGUES.get_or_init(|| [parse(EN), parse(PT_BR)]);
        match self {
            Lang::En => &all[0],
            Lang::PtBr => &all[1],
        }
    }

    /// The text of `key`. A missing key (a test keeps them all present) shows as the key.
    pub fn t(self, key: &'static str) -> &'static str {
        self.catalogue().get(key).copied().unwrap_or(key)
    }

    /// The text of `key` with each `{name}` replaced by its value.
    pub fn tf(self, key: &'static str, args: &[(&str, &str)]) -> String {
        let mut text = self.t(key).to_owned();
        for (name, value) in args {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }
}

/// `key = value` lines; `#` starts a comment line.
fn parse(texts: [&'static str; 3]) -> HashMap<&'static str, &'static str> {
    texts
        .into_iter()
        .flat_map(str::lines)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn both_catalogues_have_the_same_keys_and_no_empty_text() {
        let en: BTreeSet<_> = parse(EN).keys().copied().collect();
        let pt: BTreeSet<_> = parse(PT_BR).keys().copied().collect();
        assert_eq!(
            en.difference(&pt).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "missing in pt-BR"
        );
        assert_eq!(
            pt.difference(&en).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "missing in en"
        );
        for (k, v) in parse(EN).into_iter().chain(parse(PT_BR)) {
            assert!(!v.is_empty(), "{k} is empty");
        }
    }

    /// Every `.t("key")` and `.tf("key"` in the console's code names a key of the catalogues.
    #[test]
    fn every_key_the_code_uses_exists() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console");
        let mut used = BTreeSet::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("i18n.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for marker in [".t(\"", ".tf(\""] {
                        for piece in text.split(marker).skip(1) {
                            if let Some(end) = piece.find('"') {
                                used.insert(piece[..end].to_owned());
                            }
                        }
                    }
                }
            }
        }
        assert!(used.len() > 10, "the scan found the keys: {used:?}");
        let en = parse(EN);
        let missing: Vec<_> = used
            .iter()
            .filter(|k| !en.contains_key(k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "keys used but not in the catalogues: {missing:?}"
        );
    }

    #[test]
    fn accept_language_picks_by_quality() {
        assert_eq!(Lang::negotiate(Some("pt-BR,pt;q=0.9,en;q=0.8")), Lang::PtBr);
        assert_eq!(Lang::negotiate(Some("de-DE,en;q=0.5,pt;q=0.4")), Lang::En);
        assert_eq!(Lang::negotiate(Some("en;q=0.2,pt;q=0.7")), Lang::PtBr);
        assert_eq!(Lang::negotiate(Some("fr")), Lang::En);
        assert_eq!(Lang::negotiate(None), Lang::En);
        assert_eq!(Lang::PtBr.t("nav.accounts"), "Contas");
    }
}
