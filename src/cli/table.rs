//! Plain aligned tables and the time and duration formats shared by the operator commands.
//! Hand-formatted: a few columns of ASCII-ish text need no table crate.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::admin::why::{is_indefinite, when};

/// Columns padded to their widest cell, two spaces apart, each line indented by `indent`.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self, indent: &str) -> String {
        let width = |cell: &str| cell.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(cell));
                }
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::from(indent);
            let cells: Vec<&str> = cells.collect();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    let pad = widths.get(i).copied().unwrap_or(0);
                    out.push_str(&format!("{cell:<pad$}  "));
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = line(&mut self.headers.iter().copied());
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }
}

/// A time in a table or a line: "-" when absent, "until resumed" for an indefinite pause.
pub fn time(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match at {
        None => "-".to_owned(),
        Some(at) if is_indefinite(at) => "until resumed".to_owned(),
        Some(at) => when(at, now),
    }
}

/// Whole seconds, humantime style: "3m 2s".
pub fn duration_secs(seconds: f64) -> String {
    let whole = if seconds.is_finite() && seconds > 0.0 {
        seconds.round() as u64
    } else {
        0
    };
    humantime::format_duration(Duration::from_secs(whole)).to_string()
}

/// An optional cell.
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_lines_have_no_trailing_spaces() {
        let mut table = Table::new(&["ID", "STATE", "NOTE"]);
        table.row(vec!["1".into(), "queued".into(), "".into()]);
        table.row(vec!["1234".into(), "failed".into(), "a 503".into()]);
        assert_eq!(
            table.render("  "),
            "  ID    STATE   NOTE\n  1     queued\n  1234  failed  a 503"
        );
    }

    #[test]
    fn durations_round_to_seconds() {
        assert_eq!(duration_secs(182.4), "3m 2s");
        assert_eq!(duration_secs(-1.0), "0s");
        assert_eq!(duration_secs(f64::NAN), "0s");
    }
}
