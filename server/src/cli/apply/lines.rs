//! Where things are in the file, for messages: the line of each list item of a top-level
//! section, and of a key inside an item. YAML in block style (as `export` writes and people
//! write) is scanned; for anything else the report falls back to the item's position.

/// A line index of the file's text.
pub struct Lines {
    lines: Vec<String>,
}

/// The indentation of a line, or `None` for a blank or comment line.
fn indent(line: &str) -> Option<usize> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        None
    } else {
        Some(line.len() - trimmed.len())
    }
}

impl Lines {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        Self {
            lines: text.lines().map(str::to_owned).collect(),
        }
    }

    /// The 1-based line of the top-level `key:`.
    pub fn top_key(&self, key: &str) -> Option<usize> {
        let prefix = format!("{key}:");
        self.lines
            .iter()
            .position(|l| l.starts_with(&prefix))
            .map(|i| i + 1)
    }

    /// The 0-based line ranges of the items of the top-level list `section`.
    fn items(&self, section: &str) -> Vec<(usize, usize)> {
        let Some(start) = self.top_key(section) else {
            return Vec::new();
        };
        // The section ends at the next key at column 0 (its items may sit at column 0 too).
        let end = (start..self.lines.len())
            .find(|i| {
                let l = &self.lines[*i];
                indent(l) == Some(0) && !(l == "-" || l.starts_with("- "))
            })
            .unwrap_or(self.lines.len());
        let dash_indent = (start..end)
            .filter_map(|i| {
                let t = self.lines[i].trim_start();
                (t == "-" || t.starts_with("- ")).then(|| indent(&self.lines[i]))?
            })
            .min();
        let Some(dash_indent) = dash_indent else {
            return Vec::new();
        };
        let starts: Vec<usize> = (start..end)
            .filter(|i| {
                let l = &self.lines[*i];
                let t = l.trim_start();
                indent(l) == Some(dash_indent) && (t == "-" || t.starts_with("- "))
            })
            .collect();
        starts
            .iter()
            .enumerate()
            .map(|(n, s)| (*s, starts.get(n + 1).copied().unwrap_or(end)))
            .collect()
    }

    /// The 1-based line where item `index` of `section` starts.
    pub fn item(&self, section: &str, index: usize) -> Option<usize> {
        self.items(section).get(index).map(|(s, _)| s + 1)
    }

    /// The 1-based line of `key:` in item `index` of `section`, or the item's line.
    pub fn field(&self, section: &str, index: usize, key: &str) -> Option<usize> {
        let (start, end) = *self.items(section).get(index)?;
        let prefix = format!("{key}:");
        (start..end)
            .find(|i| {
                let t = self.lines[*i].trim_start();
                let t = t.strip_prefix("- ").map_or(t, str::trim_start);
                t.starts_with(&prefix)
            })
            .or(Some(start))
            .map(|i| i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    const TEXT: &str = "\
version: 1
# the relays
connectors:
  - display_name: dmz
    description: the DMZ

  - display_name: lab
accounts:
- account_name: alerts
  host: smtp.example.com
  port: 587
- account_name: billing
  host: smtp.example.com
";

    #[test]
    fn items_and_fields_are_found_in_block_style() {
        let lines = Lines::new(TEXT);
        assert_eq!(lines.top_key("connectors"), Some(3));
        assert_eq!(lines.item("connectors", 0), Some(4));
        assert_eq!(lines.item("connectors", 1), Some(7));
        assert_eq!(lines.item("connectors", 2), None);
        assert_eq!(lines.field("connectors", 0, "description"), Some(5));
        assert_eq!(lines.field("accounts", 0, "port"), Some(11));
        assert_eq!(lines.field("accounts", 1, "account_name"), Some(12));
        // A key the item does not have points at the item.
        assert_eq!(lines.field("accounts", 1, "port"), Some(12));
        assert_eq!(lines.item("credentials", 0), None);
    }
}
