//! `%profile NAME`: one report per table. Per column: type, null %, distinct
//! count, numeric statistics, a histogram (numbers, dates) or a top-values
//! chart (everything else), and a list of warnings (empty or constant columns,
//! many nulls, high cardinality).
//!
//! Everything is computed by lazy aggregations: one pass for the statistics of
//! all columns, then one small aggregation per column for its chart (each reads
//! only that column). The table is never collected into memory.

use crate::chart::histogram_in;
use crate::render::escape;
use crate::svg::{self, Chart, Marks, XScale};
use crate::{polars_error, table_arg, Catalog, LINE};
use ferrolab_magics::{Invocation, Magic, MagicContext, MagicError, MagicKind, MimeBundle};
use polars::prelude::*;
use serde_json::json;
use std::sync::Arc;

/// Columns profiled in detail at most (the rest are listed by name).
pub const MAX_COLUMNS: usize = 100;
/// Null share from which a column gets a warning.
pub const HIGH_NULLS: f64 = 0.2;
/// Distinct text values from which a column counts as high-cardinality
/// (when they are also more than half of its values).
pub const HIGH_CARDINALITY: u64 = 50;
const BINS: usize = 20;
const TOP_VALUES: usize = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnProfile {
    pub name: String,
    pub dtype: String,
    /// Values that are not null.
    pub count: u64,
    pub nulls: u64,
    /// Distinct values, nulls not counted.
    pub distinct: u64,
    /// mean, std, min, median, max, for numeric columns.
    pub numbers: Option<[Option<f64>; 5]>,
    /// min and max as text, for other columns that have an order.
    pub range: Option<(String, String)>,
    pub chart: Option<Chart>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub table: String,
    pub rows: u64,
    pub columns: Vec<ColumnProfile>,
    /// Columns beyond [`MAX_COLUMNS`], not profiled.
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
}

fn is_number(dtype: &DataType) -> bool {
    dtype.is_primitive_numeric() || dtype.is_decimal()
}

fn is_time(dtype: &DataType) -> bool {
    dtype.is_date() || dtype.is_datetime()
}

fn orderable(dtype: &DataType) -> bool {
    dtype.is_string() || dtype.is_temporal() || dtype.is_bool()
}

fn as_ms(name: &str) -> Expr {
    col(name)
        .cast(DataType::Datetime(TimeUnit::Milliseconds, None))
        .to_physical()
        .cast(DataType::Float64)
}

fn first_f64(df: &DataFrame, name: &str) -> Option<f64> {
    df.column(name)
        .ok()?
        .cast(&DataType::Float64)
        .ok()?
        .f64()
        .ok()?
        .get(0)
}

fn first_text(df: &DataFrame, name: &str) -> Option<String> {
    crate::render::value_text(&df.column(name).ok()?.get(0).ok()?)
}

/// Profiles a table.
pub fn profile(table: &str, mut frame: LazyFrame) -> Result<Report, MagicError> {
    let failed = |e| polars_error(&format!("profiling `{table}`"), e);
    let schema = frame.collect_schema().map_err(failed)?;
    let (profiled, skipped): (Vec<_>, Vec<_>) = schema
        .iter()
        .enumerate()
        .partition(|(i, _)| *i < MAX_COLUMNS);
    let skipped = skipped
        .into_iter()
        .map(|(_, (n, _))| n.to_string())
        .collect();
    // Pass 1: the statistics of every column in one aggregation.
    let mut exprs = vec![len().alias("rows")];
    for (i, (name, dtype)) in &profiled {
        let c = || col(name.as_str());
        exprs.push(c().count().alias(format!("{i}:count")));
        exprs.push(c().null_count().alias(format!("{i}:nulls")));
        if !dtype.is_nested() && !dtype.is_object() {
            exprs.push(c().drop_nulls().n_unique().alias(format!("{i}:distinct")));
        }
        if is_number(dtype) {
            let v = || c().cast(DataType::Float64);
            exprs.push(v().mean().alias(format!("{i}:mean")));
            exprs.push(v().std(1).alias(format!("{i}:std")));
            exprs.push(v().min().alias(format!("{i}:min")));
            exprs.push(v().median().alias(format!("{i}:median")));
            exprs.push(v().max().alias(format!("{i}:max")));
        } else if orderable(dtype) {
            exprs.push(c().min().alias(format!("{i}:min")));
            exprs.push(c().max().alias(format!("{i}:max")));
        }
        if is_time(dtype) {
            // The histogram's bounds, read in this same pass.
            exprs.push(as_ms(name).min().alias(format!("{i}:min_ms")));
            exprs.push(as_ms(name).max().alias(format!("{i}:max_ms")));
        }
    }
    let stats = crate::run(frame.clone().select(exprs)).map_err(failed)?;
    let rows = first_f64(&stats, "rows").unwrap_or(0.0) as u64;
    let mut columns = Vec::new();
    let mut warnings = Vec::new();
    for (i, (name, dtype)) in profiled {
        let stat = |what: &str| first_f64(&stats, &format!("{i}:{what}"));
        let count = stat("count").unwrap_or(0.0) as u64;
        let nulls = stat("nulls").unwrap_or(0.0) as u64;
        let distinct = stat("distinct").unwrap_or(0.0) as u64;
        let numbers = is_number(dtype).then(|| {
            [
                stat("mean"),
                stat("std"),
                stat("min"),
                stat("median"),
                stat("max"),
            ]
        });
        let range = (!is_number(dtype) && orderable(dtype)).then(|| {
            (
                first_text(&stats, &format!("{i}:min")).unwrap_or_default(),
                first_text(&stats, &format!("{i}:max")).unwrap_or_default(),
            )
        });
        // Pass 2: this column's chart, from an aggregation of this column alone.
        let chart = if count == 0 {
            None
        } else if is_number(dtype) || is_time(dtype) {
            let (min, max) = match numbers {
                Some(n) => (n[2], n[4]),
                None => (stat("min_ms"), stat("max_ms")),
            };
            let value = if is_time(dtype) {
                as_ms(name)
            } else {
                col(name.as_str()).cast(DataType::Float64)
            };
            match (min, max) {
                (Some(min), Some(max)) => Some(Chart {
                    title: String::new(),
                    x_label: name.to_string(),
                    y_label: "rows".into(),
                    x_scale: if is_time(dtype) {
                        XScale::Time
                    } else {
                        XScale::Linear
                    },
                    marks: Marks::Bins(histogram_in(&frame, value, BINS, min, max)?),
                    color_label: None,
                }),
                _ => None,
            }
        } else if !dtype.is_nested() && !dtype.is_object() {
            let top = crate::run(
                frame
                    .clone()
                    .select([col(name.as_str()).cast(DataType::String).alias("value")])
                    .group_by([col("value")])
                    .agg([len().cast(DataType::Float64).alias("n")])
                    .sort(
                        ["n", "value"],
                        SortMultipleOptions::default()
                            .with_order_descending_multi([true, false])
                            .with_nulls_last(true),
                    )
                    .limit(TOP_VALUES as IdxSize),
            )
            .map_err(failed)?;
            let values: Vec<String> = top
                .column("value")
                .and_then(|c| c.str().cloned())
                .map(|c| c.iter().map(|v| v.unwrap_or("null").to_string()).collect())
                .unwrap_or_default();
            let counts: Vec<f64> = top
                .column("n")
                .and_then(|c| c.f64().cloned())
                .map(|c| c.iter().map(|v| v.unwrap_or(0.0)).collect())
                .unwrap_or_default();
            Some(Chart {
                title: String::new(),
                x_label: name.to_string(),
                y_label: "rows".into(),
                x_scale: XScale::Band,
                marks: Marks::Bars {
                    categories: values,
                    series: vec![(None, counts)],
                },
                color_label: None,
            })
        } else {
            None
        };
        // Warnings, most serious first.
        if rows > 0 && count == 0 {
            warnings.push(format!("`{name}` is entirely null"));
        } else if distinct == 1 {
            let value = range
                .as_ref()
                .map(|(min, _)| min.clone())
                .or_else(|| numbers.and_then(|n| n[2]).map(|v| v.to_string()))
                .map(|v| format!(" ({v})"))
                .unwrap_or_default();
            warnings.push(format!("`{name}` is constant{value}"));
        }
        if rows > 0 && count > 0 {
            let share = nulls as f64 / rows as f64;
            if share >= HIGH_NULLS {
                warnings.push(format!("`{name}` has {:.1}% nulls", share * 100.0));
            }
        }
        if dtype.is_string() && distinct > HIGH_CARDINALITY && distinct * 2 > count {
            warnings.push(if distinct == count {
                format!("`{name}` has high cardinality: every one of its {distinct} values is distinct (an identifier?)")
            } else {
                format!("`{name}` has high cardinality: {distinct} distinct values in {count}")
            });
        }
        columns.push(ColumnProfile {
            name: name.to_string(),
            dtype: dtype.to_string(),
            count,
            nulls,
            distinct,
            numbers,
            range,
            chart,
        });
    }
    Ok(Report {
        table: table.to_string(),
        rows,
        columns,
        skipped,
        warnings,
    })
}

fn number(value: Option<f64>) -> String {
    match value {
        None => "—".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) => {
            let text = format!("{v:.4}");
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

fn null_share(column: &ColumnProfile, rows: u64) -> String {
    if rows == 0 {
        "0%".into()
    } else {
        format!("{:.1}%", column.nulls as f64 * 100.0 / rows as f64)
    }
}

/// The rows of a column's statistics table.
fn facts(column: &ColumnProfile, rows: u64) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        (
            "nulls",
            format!("{} ({})", column.nulls, null_share(column, rows)),
        ),
        ("distinct", column.distinct.to_string()),
    ];
    if let Some([mean, std, min, median, max]) = column.numbers {
        facts.extend([
            ("mean", number(mean)),
            ("std", number(std)),
            ("min", number(min)),
            ("median", number(median)),
            ("max", number(max)),
        ]);
    }
    if let Some((min, max)) = &column.range {
        facts.extend([("min", min.clone()), ("max", max.clone())]);
    }
    facts
}

pub fn html(report: &Report) -> String {
    let mut out = String::from(
        "<div class=\"ferrolab-profile\"><style>\
         .ferrolab-profile .cols{display:flex;flex-wrap:wrap;gap:12px}\
         .ferrolab-profile .col{border:1px solid #ddd;border-radius:4px;padding:8px;width:300px}\
         .ferrolab-profile h4{margin:0 0 4px 0}.ferrolab-profile td{padding:0 8px 0 0}\
         .ferrolab-profile .warn{color:#a15c00}</style>",
    );
    out.push_str(&format!(
        "<h3>Profile of <code>{}</code></h3><p>{} rows · {} columns · {} warnings</p>",
        escape(&report.table),
        report.rows,
        report.columns.len() + report.skipped.len(),
        report.warnings.len()
    ));
    if !report.warnings.is_empty() {
        out.push_str("<ul class=\"warn\">");
        for warning in &report.warnings {
            out.push_str(&format!("<li>{}</li>", escape(warning)));
        }
        out.push_str("</ul>");
    }
    out.push_str("<div class=\"cols\">");
    for column in &report.columns {
        out.push_str(&format!(
            "<div class=\"col\"><h4>{} <small>{}</small></h4><table>",
            escape(&column.name),
            escape(&column.dtype)
        ));
        for (what, value) in facts(column, report.rows) {
            out.push_str(&format!(
                "<tr><td>{what}</td><td>{}</td></tr>",
                escape(&value)
            ));
        }
        out.push_str("</table>");
        if let Some(chart) = &column.chart {
            out.push_str(&svg::render(chart, 280.0, 140.0));
        }
        out.push_str("</div>");
    }
    out.push_str("</div>");
    if !report.skipped.is_empty() {
        out.push_str(&format!(
            "<p>Not profiled (only the first {MAX_COLUMNS} columns are): {}</p>",
            escape(&report.skipped.join(", "))
        ));
    }
    out.push_str("</div>");
    out
}

pub fn text(report: &Report) -> String {
    let mut out = format!(
        "profile of `{}`: {} rows, {} columns\n",
        report.table,
        report.rows,
        report.columns.len() + report.skipped.len()
    );
    if report.warnings.is_empty() {
        out.push_str("no warnings\n");
    } else {
        out.push_str("warnings:\n");
        for warning in &report.warnings {
            out.push_str(&format!("  - {warning}\n"));
        }
    }
    for column in &report.columns {
        let facts: Vec<String> = facts(column, report.rows)
            .into_iter()
            .map(|(what, value)| format!("{what} {value}"))
            .collect();
        out.push_str(&format!(
            "{} ({}): {}\n",
            column.name,
            column.dtype,
            facts.join(", ")
        ));
    }
    if !report.skipped.is_empty() {
        out.push_str(&format!("not profiled: {}\n", report.skipped.join(", ")));
    }
    out
}

/// The report as JSON, for programs that read outputs.
pub fn json(report: &Report) -> serde_json::Value {
    json!({
        "table": report.table,
        "rows": report.rows,
        "warnings": report.warnings,
        "skipped": report.skipped,
        "columns": report.columns.iter().map(|c| json!({
            "name": c.name,
            "dtype": c.dtype,
            "count": c.count,
            "nulls": c.nulls,
            "distinct": c.distinct,
            "numbers": c.numbers.map(|[mean, std, min, median, max]| json!({
                "mean": mean, "std": std, "min": min, "median": median, "max": max
            })),
            "range": c.range.as_ref().map(|(min, max)| json!([min, max])),
        })).collect::<Vec<_>>(),
    })
}

pub const PROFILE_MIME: &str = "application/vnd.ferrolab.profile+json";

pub(crate) struct Profile(pub(crate) Arc<Catalog>);

impl Magic for Profile {
    fn name(&self) -> &str {
        "profile"
    }
    fn summary(&self) -> &str {
        "A report on every column of a table, with charts and warnings"
    }
    fn usage(&self) -> &str {
        "%profile NAME\n\n\
         Reports on table NAME: per column its type, null share, distinct values,\n\
         numeric statistics, a histogram (numbers, dates) or its top values, and\n\
         warnings for empty, constant, mostly-null and high-cardinality columns.\n\
         Computed with lazy aggregations; the table is never loaded whole."
    }
    fn kinds(&self) -> &[MagicKind] {
        LINE
    }
    fn run(
        &self,
        invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let name = table_arg(invocation)?;
        let report = profile(name, self.0.get(name)?.frame)?;
        Ok(Some(
            MimeBundle::text(text(&report))
                .with("text/html", html(&report))
                .with(PROFILE_MIME, json(&report)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_and_warnings() {
        let ids: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
        let df = df!(
            "id" => ids,
            "tokens" => (0..100).map(|i| if i % 4 == 0 { None } else { Some(i as i64) }).collect::<Vec<_>>(),
            "region" => (0..100).map(|_| "eu").collect::<Vec<_>>(),
            "empty" => (0..100).map(|_| None::<f64>).collect::<Vec<_>>(),
        )
        .expect("df");
        let report = profile("logs", df.lazy()).expect("profile");
        assert_eq!(report.rows, 100);
        let tokens = &report.columns[1];
        assert_eq!((tokens.count, tokens.nulls, tokens.distinct), (75, 25, 75));
        let [mean, _, min, _, max] = tokens.numbers.expect("numbers");
        assert_eq!((min, max), (Some(1.0), Some(99.0)));
        assert!((mean.expect("mean") - 50.0).abs() < 1e-9);
        let Some(Chart {
            marks: Marks::Bins(bins),
            ..
        }) = &tokens.chart
        else {
            panic!("a histogram")
        };
        assert_eq!(bins.iter().map(|b| b.2).sum::<f64>(), 75.0);
        let warnings = report.warnings.join("\n");
        assert!(warnings.contains("`tokens` has 25.0% nulls"), "{warnings}");
        assert!(warnings.contains("`region` is constant (eu)"), "{warnings}");
        assert!(warnings.contains("`empty` is entirely null"), "{warnings}");
        assert!(warnings.contains("`id` has high cardinality"), "{warnings}");
        let html = html(&report);
        assert_eq!(
            html.matches("<svg").count(),
            3,
            "every non-empty column has a chart"
        );
        assert!(text(&report).contains("tokens (i64): nulls 25 (25.0%)"));
    }
}
