//! Tables for people: an HTML table in the style of polars' own notebook view,
//! and a plain-text table. Both are bounded whatever the data size: at most
//! [`EDGE_ROWS`] rows from each end and [`MAX_COLUMNS`] columns (half from each
//! side), long strings cut, every value HTML-escaped.

use polars::prelude::*;

/// Rows shown from the top and from the bottom of a longer table.
pub const EDGE_ROWS: usize = 5;
/// Columns shown at most (half from the left, half from the right).
pub const MAX_COLUMNS: usize = 75;
/// Characters of a string value shown before it is cut.
pub const MAX_CHARS: usize = 100;

pub use ferrolab_magics::escape_html as escape;

fn cut(text: &str) -> String {
    if text.chars().count() > MAX_CHARS {
        let kept: String = text.chars().take(MAX_CHARS).collect();
        format!("{kept}…")
    } else {
        text.to_string()
    }
}

/// A value as text, whole: strings without quotes, `None` for null.
pub fn value_text(value: &AnyValue<'_>) -> Option<String> {
    match value {
        AnyValue::Null => None,
        AnyValue::String(s) => Some((*s).to_string()),
        AnyValue::StringOwned(s) => Some(s.to_string()),
        other => Some(other.to_string()),
    }
}

/// One cell as text: strings without quotes, nulls as `null`, long values cut.
pub fn cell_text(value: &AnyValue<'_>) -> String {
    cut(&value_text(value).unwrap_or_else(|| "null".into()))
}

/// Which rows and columns a view shows: indexes, with `None` marking the gap.
fn pick(len: usize, keep: usize) -> Vec<Option<usize>> {
    if len <= keep {
        return (0..len).map(Some).collect();
    }
    let head = keep.div_ceil(2);
    let tail = keep / 2;
    let mut out: Vec<Option<usize>> = (0..head).map(Some).collect();
    out.push(None);
    out.extend((len - tail..len).map(Some));
    out
}

struct View {
    names: Vec<Option<String>>,
    dtypes: Vec<Option<String>>,
    rows: Vec<Option<Vec<Option<String>>>>,
    shape: (usize, usize),
}

fn view(df: &DataFrame) -> View {
    let columns = df.columns();
    let col_pick = pick(columns.len(), MAX_COLUMNS);
    let row_pick = pick(df.height(), EDGE_ROWS * 2);
    let names = col_pick
        .iter()
        .map(|c| c.map(|i| columns[i].name().to_string()))
        .collect();
    let dtypes = col_pick
        .iter()
        .map(|c| c.map(|i| columns[i].dtype().to_string()))
        .collect();
    let rows = row_pick
        .iter()
        .map(|r| {
            r.map(|row| {
                col_pick
                    .iter()
                    .map(|c| {
                        c.map(|i| {
                            columns[i]
                                .get(row)
                                .map(|v| cell_text(&v))
                                .unwrap_or_else(|_| "?".into())
                        })
                    })
                    .collect()
            })
        })
        .collect();
    View {
        names,
        dtypes,
        rows,
        shape: (df.height(), df.width()),
    }
}

/// The MIME type of the machine-readable view of a table.
pub const TABLE_MIME: &str = "application/vnd.ferrolab.table+json";

/// One value as JSON: numbers and booleans as themselves (non-finite floats as
/// strings), strings cut like the other views, everything else as its text.
pub fn cell_json(value: &AnyValue<'_>) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AnyValue::Null => Value::Null,
        AnyValue::Boolean(b) => Value::Bool(*b),
        AnyValue::Float32(f) => float_json(f64::from(*f)),
        AnyValue::Float64(f) => float_json(*f),
        v if v.dtype().is_integer() => v
            .extract::<i64>()
            .map(Value::from)
            .or_else(|| v.extract::<u64>().map(Value::from))
            .unwrap_or_else(|| Value::String(cell_text(v))),
        v => Value::String(cell_text(v)),
    }
}

fn float_json(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(f.to_string()))
}

/// The same bounded view as the HTML table, as JSON: `shape`, `columns`,
/// `dtypes`, `rows` (full-precision values) and `row_numbers` (which rows of
/// the table those are), for programs that read outputs.
pub fn json(df: &DataFrame) -> serde_json::Value {
    let columns = df.columns();
    let col_pick: Vec<usize> = pick(columns.len(), MAX_COLUMNS)
        .into_iter()
        .flatten()
        .collect();
    let row_pick: Vec<usize> = pick(df.height(), EDGE_ROWS * 2)
        .into_iter()
        .flatten()
        .collect();
    let rows: Vec<serde_json::Value> = row_pick
        .iter()
        .map(|&row| {
            col_pick
                .iter()
                .map(|&c| {
                    columns[c]
                        .get(row)
                        .map(|v| cell_json(&v))
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    serde_json::json!({
        "shape": [df.height(), df.width()],
        "columns": col_pick.iter().map(|&c| columns[c].name().to_string()).collect::<Vec<_>>(),
        "dtypes": col_pick.iter().map(|&c| columns[c].dtype().to_string()).collect::<Vec<_>>(),
        "rows": rows,
        "row_numbers": row_pick,
    })
}

/// The HTML table, polars-style: shape line, header, dtype row, edge rows.
pub fn html(df: &DataFrame) -> String {
    let v = view(df);
    let mut out = String::new();
    out.push_str(
        "<div><style>.ferrolab-df td,.ferrolab-df th{white-space:pre;text-align:right}</style>",
    );
    out.push_str(&format!(
        "<small>shape: ({}, {})</small>",
        v.shape.0, v.shape.1
    ));
    out.push_str("<table border=\"1\" class=\"dataframe ferrolab-df\"><thead><tr>");
    for name in &v.names {
        out.push_str(&format!(
            "<th>{}</th>",
            name.as_deref().map_or("…".to_string(), escape)
        ));
    }
    out.push_str("</tr><tr>");
    for dtype in &v.dtypes {
        out.push_str(&format!(
            "<td>{}</td>",
            dtype.as_deref().map_or("…".to_string(), escape)
        ));
    }
    out.push_str("</tr></thead><tbody>");
    for row in &v.rows {
        out.push_str("<tr>");
        match row {
            Some(cells) => {
                for cell in cells {
                    out.push_str(&format!(
                        "<td>{}</td>",
                        cell.as_deref().map_or("…".to_string(), escape)
                    ));
                }
            }
            None => {
                for _ in &v.names {
                    out.push_str("<td>…</td>");
                }
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// The plain-text table: shape line, header, dtypes, edge rows, aligned.
pub fn text(df: &DataFrame) -> String {
    let v = view(df);
    let mut grid: Vec<Vec<String>> = Vec::new();
    let show = |c: &Option<String>| c.clone().unwrap_or_else(|| "…".into());
    grid.push(v.names.iter().map(show).collect());
    grid.push(v.dtypes.iter().map(show).collect());
    for row in &v.rows {
        grid.push(match row {
            Some(cells) => cells.iter().map(show).collect(),
            None => v.names.iter().map(|_| "…".into()).collect(),
        });
    }
    let widths: Vec<usize> = (0..v.names.len())
        .map(|c| grid.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!("shape: ({}, {})\n", v.shape.0, v.shape.1);
    let line = |row: &Vec<String>| {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:>width$}", width = *width))
            .collect();
        format!("│ {} │\n", cells.join(" ┆ "))
    };
    let rule: String = widths
        .iter()
        .map(|w| "─".repeat(*w))
        .collect::<Vec<_>>()
        .join("─┼─");
    for (index, row) in grid.iter().enumerate() {
        out.push_str(&line(row));
        if index == 1 {
            out.push_str(&format!(
                "╞═{}═╡\n",
                rule.replace('─', "═").replace('┼', "╪")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(rows: usize, cols: usize) -> DataFrame {
        let columns: Vec<Column> = (0..cols)
            .map(|c| Column::new(format!("c{c}").into(), (0..rows as i64).collect::<Vec<_>>()))
            .collect();
        DataFrame::new_infer_height(columns).expect("frame")
    }

    #[test]
    fn values_are_escaped_and_cut() {
        let long = "x".repeat(300);
        let df = df!("name" => ["<b>&'\"", long.as_str()], "n" => [Some(1i64), None]).expect("df");
        let html = html(&df);
        assert!(html.contains("&lt;b&gt;&amp;&#39;&quot;"), "{html}");
        assert!(!html.contains("<b>&"));
        assert!(html.contains(&format!("{}…", "x".repeat(MAX_CHARS))));
        assert!(!html.contains(&"x".repeat(MAX_CHARS + 1)));
        assert!(html.contains("<td>null</td>"));
        assert!(html.contains("shape: (2, 2)"));
        let text = text(&df);
        assert!(
            text.contains("null") && text.starts_with("shape: (2, 2)"),
            "{text}"
        );
    }

    #[test]
    fn long_and_wide_tables_are_bounded() {
        let df = frame(1000, 200);
        let html = html(&df);
        assert_eq!(
            html.matches("<th>").count(),
            MAX_COLUMNS + 1,
            "75 columns and a gap"
        );
        assert!(
            html.contains("<th>c0</th>")
                && html.contains("<th>c199</th>")
                && !html.contains("<th>c100</th>")
        );
        assert_eq!(
            html.matches("<tr>").count(),
            2 + EDGE_ROWS * 2 + 1,
            "header, dtypes, 10 rows and a gap"
        );
        assert!(html.contains("<td>999</td>") && !html.contains("<td>500</td>"));
        assert!(html.len() < 60_000, "bounded payload: {} bytes", html.len());
        let small = frame(3, 2);
        assert_eq!(html_rows(&small), 3);
    }

    #[test]
    fn json_view_keeps_full_precision_and_the_same_bounds() {
        let df = df!("x" => [0.1f64 + 0.2, f64::NAN], "s" => [Some("a"), None]).expect("df");
        let value = json(&df);
        assert_eq!(value["rows"][0][0], serde_json::json!(0.1f64 + 0.2));
        assert_eq!(value["rows"][1][0], serde_json::json!("NaN"));
        assert_eq!(value["rows"][1][1], serde_json::Value::Null);
        assert_eq!(value["dtypes"], serde_json::json!(["f64", "str"]));
        let big = json(&frame(1000, 200));
        assert_eq!(big["shape"], serde_json::json!([1000, 200]));
        assert_eq!(big["columns"].as_array().map(Vec::len), Some(MAX_COLUMNS));
        assert_eq!(big["row_numbers"][9], serde_json::json!(999));
    }

    fn html_rows(df: &DataFrame) -> usize {
        html(df).matches("<tr>").count() - 2
    }
}
