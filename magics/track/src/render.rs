//! Tables as HTML (for the notebook and reports) and as plain text (for consoles).

use ferrolab_magics::escape_html;

pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Rows drawn in bold with a tinted background (differing params, failures).
    pub marked: Vec<bool>,
}

impl Table {
    pub fn new(headers: Vec<String>) -> Table {
        Table {
            headers,
            rows: Vec::new(),
            marked: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>, marked: bool) {
        self.rows.push(row);
        self.marked.push(marked);
    }

    pub fn html(&self) -> String {
        let mut out = String::from(
            "<table class=\"ferrolab-track\" style=\"border-collapse:collapse;font-size:13px\"><thead><tr>",
        );
        for h in &self.headers {
            out.push_str(&format!(
                "<th style=\"text-align:left;padding:2px 8px;border-bottom:1px solid #999\">{}</th>",
                escape_html(h)
            ));
        }
        out.push_str("</tr></thead><tbody>");
        for (row, marked) in self.rows.iter().zip(&self.marked) {
            if *marked {
                out.push_str("<tr style=\"background:#fff4d6;font-weight:600\">");
            } else {
                out.push_str("<tr>");
            }
            for cell in row {
                out.push_str(&format!(
                    "<td style=\"padding:2px 8px;border-bottom:1px solid #eee;font-family:monospace\">{}</td>",
                    escape_html(cell)
                ));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
        out
    }

    pub fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .chain(std::iter::once(&self.headers[i]))
                    .map(|c| c.chars().count().min(40))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String], mark: &str| -> String {
            let body: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| {
                    let c: String = c.chars().take(40).collect();
                    format!("{c:<w$}")
                })
                .collect();
            format!("{mark}{}", body.join("  ")).trim_end().to_string()
        };
        let mut out = line(&self.headers, "  ");
        for (row, marked) in self.rows.iter().zip(&self.marked) {
            out.push('\n');
            out.push_str(&line(row, if *marked { "* " } else { "  " }));
        }
        out
    }
}

pub fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A metric or param value for a table cell.
pub fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{}", (f * 1e6).round() / 1e6),
            _ => n.to_string(),
        },
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_escape_and_mark_rows() {
        let mut t = Table::new(vec!["key".into(), "a".into()]);
        t.push(vec!["lr".into(), "<b>".into()], true);
        t.push(vec!["r".into(), "8".into()], false);
        assert!(t.html().contains("&lt;b&gt;") && t.html().contains("font-weight:600"));
        assert_eq!(t.text(), "  key  a\n* lr   <b>\n  r    8");
    }
}
