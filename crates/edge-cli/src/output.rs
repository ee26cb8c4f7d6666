//! What the CLI prints: JSON as the server sent it (`-o json`, for
//! scripts), or aligned columns for people. Values a box reported pass
//! through [`edge_core::text::display_safe_bounded`] before they reach a
//! terminal, so a hostile name cannot send escape sequences.

use crate::Format;
use serde_json::Value;

/// A JSON value as one table cell.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    };
    edge_core::text::display_safe_bounded(&text, 80)
}

/// Rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(&c);
            out.extend(std::iter::repeat_n(' ', w - c.chars().count()));
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&mut header.iter().map(|h| h.to_uppercase()));
    for row in rows {
        out.push('\n');
        out.push_str(&line(&mut row.iter().cloned()));
    }
    out
}

pub fn print_devices(devices: &[Value], format: Format) {
    if format == Format::Json {
        println!("{}", Value::Array(devices.to_vec()));
        return;
    }
    let header = ["id", "name", "status", "health", "labels", "model"];
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            vec![
                cell(&d["id"]),
                cell(&d["name"]),
                cell(&d["status"]),
                cell(&d["health"]["state"]),
                cell(&d["labels"]),
                cell(&d["model"]),
            ]
        })
        .collect();
    println!("{}", table(&header, &rows));
}

/// One object: JSON, or `key  value` lines of `fields`.
pub fn print_one(v: &Value, format: Format, fields: &[&str]) {
    if format == Format::Json {
        println!("{v}");
        return;
    }
    let rows: Vec<Vec<String>> = fields
        .iter()
        .map(|f| vec![(*f).to_owned(), cell(&v[*f])])
        .collect();
    println!("{}", table(&["field", "value"], &rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_hostile_text_is_made_safe() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned()],
            vec![
                "bbb".to_owned(),
                cell(&Value::String("x\u{1b}[31my".into())),
            ],
        ];
        let t = table(&["k", "v"], &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "K    V");
        assert_eq!(lines[1], "a    long value");
        assert!(!t.contains('\u{1b}'), "{t:?}");
        assert_eq!(cell(&serde_json::json!(["x", "y"])), "x,y");
        assert_eq!(cell(&Value::Null), "-");
    }
}
