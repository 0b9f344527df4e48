//! Printing results as a table, JSON, YAML or CSV.

use clap::ValueEnum;
use serde_json::Value;
use std::io::Write;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// CSV with a header row.
    Csv,
}

/// The widest a table cell gets before it is cut.
const MAX_CELL: usize = 48;

fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() > MAX_CELL {
        let mut t: String = s.chars().take(MAX_CELL - 1).collect();
        t.push('…');
        t
    } else {
        s.to_owned()
    }
}

/// Prints one resource.
pub fn one(out: &mut impl Write, format: Format, value: &Value) -> std::io::Result<()> {
    match format {
        Format::Table => {
            if let Value::Object(map) = value {
                let width = map.keys().map(String::len).max().unwrap_or(0);
                for (k, v) in map {
                    writeln!(out, "{k:width$}  {}", cell(v))?;
                }
            }
            Ok(())
        }
        Format::Csv => list(out, format, std::slice::from_ref(value), &[], ""),
        Format::Json | Format::Yaml => structured(out, format, value),
    }
}

fn structured(out: &mut impl Write, format: Format, value: &Value) -> std::io::Result<()> {
    match format {
        Format::Yaml => {
            let text = serde_yaml_ng::to_string(value).map_err(std::io::Error::other)?;
            write!(out, "{text}")
        }
        _ => {
            serde_json::to_writer_pretty(&mut *out, value)?;
            writeln!(out)
        }
    }
}

/// Prints a list of resources; `columns` are the `(header, key)` pairs of the table form.
/// `key` is the JSON key of the list for the structured forms.
pub fn list(
    out: &mut impl Write,
    format: Format,
    items: &[Value],
    columns: &[(&str, &str)],
    key: &str,
) -> std::io::Result<()> {
    match format {
        Format::Json | Format::Yaml => {
            let mut map = serde_json::Map::new();
            map.insert(key.to_owned(), Value::Array(items.to_vec()));
            structured(out, format, &Value::Object(map))
        }
        Format::Csv => {
            let keys: Vec<String> = match items.first() {
                Some(Value::Object(m)) => m.keys().cloned().collect(),
                _ => Vec::new(),
            };
            let mut w = csv::Writer::from_writer(out);
            w.write_record(&keys).map_err(std::io::Error::other)?;
            for item in items {
                let row: Vec<String> = keys
                    .iter()
                    .map(|k| crate::render::csv_cell(&cell(&item[k.as_str()])))
                    .collect();
                w.write_record(&row).map_err(std::io::Error::other)?;
            }
            w.flush()
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| columns.iter().map(|(_, k)| cut(&cell(&i[*k]))).collect())
                .collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(n, (h, _))| {
                    rows.iter()
                        .map(|r| r[n].chars().count())
                        .chain([h.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            writeln!(
                out,
                "{}",
                line(columns.iter().map(|(h, _)| (*h).to_owned()).collect())
            )?;
            for row in rows {
                writeln!(out, "{}", line(row))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_and_csv_has_header() {
        let items = vec![
            json!({"id": 1, "name": "a"}),
            json!({"id": 22, "name": "bbb"}),
        ];
        let mut out = Vec::new();
        list(
            &mut out,
            Format::Table,
            &items,
            &[("ID", "id"), ("NAME", "name")],
            "x",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "ID  NAME\n1   a\n22  bbb\n");
        let mut out = Vec::new();
        list(&mut out, Format::Csv, &items, &[], "x").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "id,name\n1,a\n22,bbb\n");
    }
}
