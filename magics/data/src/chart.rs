//! `%plot SOURCE --kind line|bar|scatter|hist|box --x COL --y COL [--color COL]`:
//! charts of a table or of a SQL query. The data is reduced inside polars
//! (aggregated, binned or thinned) before anything leaves it, so a chart of ten
//! million rows sends a few thousand values at most. Each chart is a bundle of
//! Vega-Lite v5 (interactive in JupyterLab), a static SVG drawn in Rust (for
//! exports) and a line of text.

use crate::svg::{self, vega_lite, Chart, Marks, Series, XScale, XValue};
use crate::{polars_error, Catalog, BOTH};
use ferrolab_magics::{
    split_args, Invocation, Magic, MagicContext, MagicError, MagicKind, MimeBundle,
};
use polars::prelude::*;
use std::sync::Arc;

/// Points drawn at most by a line chart; longer series are thinned evenly.
pub const MAX_LINE_POINTS: usize = 2000;
/// Points drawn at most by a scatter chart.
pub const MAX_SCATTER_POINTS: usize = 5000;
/// Bars (or boxes) drawn at most; the largest are kept.
pub const MAX_BARS: usize = 50;
/// Colour values at most.
pub const MAX_COLORS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Kind {
    Line,
    Bar,
    Scatter,
    Hist,
    Box,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Line => "line",
            Kind::Bar => "bar",
            Kind::Scatter => "scatter",
            Kind::Hist => "hist",
            Kind::Box => "box",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlotArgs {
    /// A table name or a SQL query.
    pub source: String,
    pub kind: Kind,
    pub x: Option<String>,
    pub y: Option<String>,
    pub color: Option<String>,
    pub title: Option<String>,
    pub bins: usize,
}

const USAGE: &str = "usage: %plot SOURCE --kind line|bar|scatter|hist|box [--x COL] [--y COL] [--color COL] [--title T] [--bins N]\n\
                     SOURCE is a table name or a SQL query; or `%%plot --kind ...` with the query below";

/// `%plot`'s options (SOURCE, which may be SQL with spaces and quotes, is cut off first).
#[derive(clap::Parser)]
#[command(name = "%plot", no_binary_name = true, disable_help_flag = true)]
struct PlotOptions {
    #[arg(long, value_enum)]
    kind: Kind,
    #[arg(long)]
    x: Option<String>,
    #[arg(long)]
    y: Option<String>,
    #[arg(long)]
    color: Option<String>,
    #[arg(long)]
    title: Option<String>,
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=200))]
    bins: u64,
}

/// Parses `%plot`: in the line form SOURCE is everything before the first
/// option, as typed (so quotes inside SQL survive); in the cell form it is the body.
pub fn parse_plot(invocation: &Invocation) -> Result<PlotArgs, MagicError> {
    let raw = invocation.raw_args.trim();
    let (source, options) = if invocation.kind == MagicKind::Cell {
        (invocation.body.trim().to_string(), raw)
    } else {
        let at = raw
            .find(" --")
            .map(|i| i + 1)
            .unwrap_or(if raw.starts_with("--") { 0 } else { raw.len() });
        let source = raw[..at].trim();
        let source = source
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(source);
        (source.to_string(), &raw[at..])
    };
    if source.is_empty() {
        return Err(MagicError::usage(USAGE));
    }
    let options = split_args(options).map_err(MagicError::usage)?;
    let PlotOptions {
        kind,
        x,
        y,
        color,
        title,
        bins,
    } = ferrolab_magics::parse_args(&options, USAGE)?;
    let args = PlotArgs {
        source,
        kind,
        x,
        y,
        color,
        title,
        bins: bins as usize,
    };
    let need = |what: &Option<String>, flag: &str| {
        if what.is_none() {
            Err(MagicError::usage(format!(
                "a {} chart needs {flag} COL",
                args.kind.name()
            )))
        } else {
            Ok(())
        }
    };
    match args.kind {
        Kind::Line | Kind::Scatter => {
            need(&args.x, "--x")?;
            need(&args.y, "--y")?;
        }
        Kind::Bar | Kind::Hist => need(&args.x, "--x")?,
        Kind::Box => need(&args.y, "--y")?,
    }
    if matches!(args.kind, Kind::Hist | Kind::Box) && args.color.is_some() {
        return Err(MagicError::usage(format!(
            "--color is not supported for {} charts; for one chart per group, filter with SQL",
            args.kind.name()
        )));
    }
    Ok(args)
}

/// What a column can be on an axis.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Axis {
    Number,
    Time,
    Category,
}

fn axis_of(dtype: &DataType) -> Axis {
    if dtype.is_primitive_numeric() || dtype.is_decimal() || dtype.is_bool() {
        Axis::Number
    } else if dtype.is_date() || dtype.is_datetime() {
        Axis::Time
    } else {
        Axis::Category
    }
}

/// The column as f64 (numbers, and dates as ms since the epoch) or text.
fn as_axis(name: &str, axis: Axis) -> Expr {
    match axis {
        Axis::Number => col(name).cast(DataType::Float64),
        Axis::Time => col(name)
            .cast(DataType::Datetime(TimeUnit::Milliseconds, None))
            .to_physical()
            .cast(DataType::Float64),
        Axis::Category => col(name).cast(DataType::String),
    }
}

fn floats(df: &DataFrame, name: &str) -> Result<Vec<f64>, MagicError> {
    let column = df
        .column(name)
        .and_then(|c| c.cast(&DataType::Float64))
        .map_err(|e| polars_error("preparing the chart", e))?;
    let values = column
        .f64()
        .map_err(|e| polars_error("preparing the chart", e))?;
    Ok(values.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

fn texts(df: &DataFrame, name: &str) -> Result<Vec<Option<String>>, MagicError> {
    let column = df
        .column(name)
        .and_then(|c| c.cast(&DataType::String))
        .map_err(|e| polars_error("preparing the chart", e))?;
    let values = column
        .str()
        .map_err(|e| polars_error("preparing the chart", e))?;
    Ok(values.iter().map(|v| v.map(str::to_string)).collect())
}

fn collect(frame: LazyFrame) -> Result<DataFrame, MagicError> {
    crate::run(frame).map_err(|e| polars_error("preparing the chart", e))
}

fn row_count(frame: &LazyFrame) -> Result<usize, MagicError> {
    crate::row_count(frame)
        .map(|n| n as usize)
        .map_err(|e| polars_error("preparing the chart", e))
}

/// Reduces the source to what the chart draws.
pub fn prepare(mut frame: LazyFrame, args: &PlotArgs) -> Result<Chart, MagicError> {
    let schema = frame
        .collect_schema()
        .map_err(|e| polars_error("reading the chart's source", e))?;
    let lookup = |name: &Option<String>| -> Result<Option<(String, Axis)>, MagicError> {
        let Some(name) = name else { return Ok(None) };
        match schema.get(name) {
            Some(dtype) => Ok(Some((name.clone(), axis_of(dtype)))),
            None => Err(MagicError::new(
                "ColumnNotFound",
                format!(
                    "no column `{name}` in the chart's source; its columns: {}",
                    schema
                        .iter_names()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    };
    let x = lookup(&args.x)?;
    let y = lookup(&args.y)?;
    let color = lookup(&args.color)?;
    let numeric = |column: &Option<(String, Axis)>, role: &str| -> Result<(), MagicError> {
        match column {
            Some((name, Axis::Category)) => Err(MagicError::new(
                "NotNumeric",
                format!(
                    "a {} chart needs numbers for {role}, but `{name}` is {}; pick a numeric column or cast it in SQL",
                    args.kind.name(),
                    schema.get(name).map(|d| d.to_string()).unwrap_or_default()
                ),
            )),
            _ => Ok(()),
        }
    };
    let color_label = color.as_ref().map(|(name, _)| name.clone());
    if let Some((name, _)) = &color {
        let distinct = collect(frame.clone().select([col(name).n_unique().alias("n")]))?;
        let n = floats(&distinct, "n")?.first().copied().unwrap_or(0.0) as usize;
        if n > MAX_COLORS {
            return Err(MagicError::usage(format!(
                "--color `{name}` has {n} values; a chart shows at most {MAX_COLORS} colours. Filter or group them with SQL first"
            )));
        }
    }
    let mut notes = Vec::new();
    let color_name = color.as_ref().map(|(name, _)| name.as_str());
    let required =
        |column: &Option<(String, Axis)>| column.clone().ok_or_else(|| MagicError::usage(USAGE));
    let drawn = match args.kind {
        Kind::Line | Kind::Scatter => {
            numeric(&y, "--y")?;
            if args.kind == Kind::Scatter {
                numeric(&x, "--x")?;
            }
            let (y_name, _) = required(&y)?;
            points(
                &frame,
                args.kind,
                required(&x)?,
                &y_name,
                color_name,
                &mut notes,
            )?
        }
        Kind::Bar => {
            numeric(&y, "--y")?;
            let (x_name, _) = required(&x)?;
            let y_name = y.as_ref().map(|(n, _)| n.as_str());
            bars(&frame, &x_name, y_name, color_name, &mut notes)?
        }
        Kind::Hist => {
            numeric(&x, "--x")?;
            let (x_name, _) = required(&x)?;
            Drawn {
                x_scale: XScale::Linear,
                marks: Marks::Bins(histogram(&frame, &x_name, args.bins)?),
                title: format!("distribution of {x_name}"),
                x_label: x_name,
                y_label: "rows".to_string(),
            }
        }
        Kind::Box => {
            numeric(&y, "--y")?;
            let (y_name, _) = required(&y)?;
            let x_name = x.as_ref().map(|(n, _)| n.as_str());
            boxes(&frame, x_name, &y_name, &mut notes)?
        }
    };
    let Drawn {
        x_scale,
        marks,
        x_label,
        y_label,
        title: default_title,
    } = drawn;
    let mut title = args.title.clone().unwrap_or(default_title);
    if !notes.is_empty() && args.title.is_none() {
        title = format!("{title} ({})", notes.join("; "));
    }
    Ok(Chart {
        title,
        x_label,
        y_label,
        x_scale,
        marks,
        color_label,
    })
}

/// What one kind of chart draws, before the title gets its notes.
struct Drawn {
    x_scale: XScale,
    marks: Marks,
    x_label: String,
    y_label: String,
    title: String,
}

/// Line and scatter charts: the points, sorted by x for lines, thinned evenly
/// past the limit, split into series by colour.
fn points(
    frame: &LazyFrame,
    kind: Kind,
    x: (String, Axis),
    y: &str,
    color: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Drawn, MagicError> {
    let (x_name, x_axis) = x;
    let y_name = y;
    let mut select = vec![
        as_axis(&x_name, x_axis).alias("x"),
        col(y_name).cast(DataType::Float64).alias("y"),
    ];
    if let Some(c) = color {
        select.push(col(c).cast(DataType::String).alias("color"));
    }
    let mut data = frame
        .clone()
        .select(select)
        .filter(col("x").is_not_null().and(col("y").is_not_null()));
    if kind == Kind::Line && x_axis != Axis::Category {
        data = data.sort(["x"], Default::default());
    }
    let max = if kind == Kind::Line {
        MAX_LINE_POINTS
    } else {
        MAX_SCATTER_POINTS
    };
    let n = row_count(&data)?;
    if n > max {
        let step = n.div_ceil(max);
        data = data
            .with_row_index("__row", None)
            .filter((col("__row") % lit(step as u64)).eq(lit(0u64)));
        notes.push(format!("every {step}th of {n} points"));
    }
    let df = collect(data)?;
    let ys = floats(&df, "y")?;
    let xs: Vec<XValue> = if x_axis == Axis::Category {
        texts(&df, "x")?
            .into_iter()
            .map(|v| XValue::Cat(v.unwrap_or_default()))
            .collect()
    } else {
        floats(&df, "x")?.into_iter().map(XValue::Num).collect()
    };
    let colors = if color.is_some() {
        texts(&df, "color")?
    } else {
        vec![None; ys.len()]
    };
    let mut series: Vec<Series> = Vec::new();
    for ((xv, yv), c) in xs.into_iter().zip(ys).zip(colors) {
        match series.iter_mut().find(|s| s.name == c) {
            Some(s) => {
                s.x.push(xv);
                s.y.push(yv);
            }
            None => series.push(Series {
                name: c,
                x: vec![xv],
                y: vec![yv],
            }),
        }
    }
    let scale = match x_axis {
        Axis::Number => XScale::Linear,
        Axis::Time => XScale::Time,
        Axis::Category => XScale::Band,
    };
    Ok(Drawn {
        x_scale: scale,
        marks: Marks::Points {
            line: kind == Kind::Line,
            series,
        },
        title: format!("{y_name} by {x_name}"),
        x_label: x_name,
        y_label: y_name.to_string(),
    })
}

/// Bar charts: y summed (or rows counted) per x and colour, in one
/// aggregation; the 50 largest categories when there are more.
fn bars(
    frame: &LazyFrame,
    x_name: &str,
    y: Option<&str>,
    color: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Drawn, MagicError> {
    let value = match y {
        Some(y_name) => col(y_name).cast(DataType::Float64).sum().alias("value"),
        None => len().cast(DataType::Float64).alias("value"),
    };
    let mut keys = vec![col(x_name).alias("x")];
    if let Some(c) = color {
        keys.push(col(c).cast(DataType::String).alias("color"));
    }
    // One pass over the source; the rest works on the (small) aggregate.
    let grouped = collect(frame.clone().group_by(keys).agg([value]))?.lazy();
    // The categories: all of them in order of x, or the largest when there are many.
    let totals = grouped
        .clone()
        .group_by([col("x")])
        .agg([col("value").sum().alias("total")]);
    let count = row_count(&totals)?;
    let kept = if count > MAX_BARS {
        notes.push(format!("the {MAX_BARS} largest of {count} bars"));
        totals
            .sort(
                ["total"],
                SortMultipleOptions::default().with_order_descending(true),
            )
            .limit(MAX_BARS as IdxSize)
    } else {
        totals
    };
    let kept = collect(
        kept.sort(["x"], SortMultipleOptions::default().with_nulls_last(true))
            .select([col("x").cast(DataType::String)]),
    )?;
    let categories: Vec<Option<String>> = texts(&kept, "x")?;
    let df = collect(grouped.select([
        col("x").cast(DataType::String),
        if color.is_some() {
            col("color")
        } else {
            lit(NULL).cast(DataType::String).alias("color")
        },
        col("value"),
    ]))?;
    let xs = texts(&df, "x")?;
    let colors = texts(&df, "color")?;
    let values = floats(&df, "value")?;
    let mut series: Vec<(Option<String>, Vec<f64>)> = Vec::new();
    for ((xv, c), v) in xs.into_iter().zip(colors).zip(values) {
        let Some(i) = categories.iter().position(|k| *k == xv) else {
            continue;
        };
        let at = match series.iter().position(|(name, _)| *name == c) {
            Some(at) => at,
            None => {
                series.push((c, vec![0.0; categories.len()]));
                series.len() - 1
            }
        };
        series[at].1[i] += v;
    }
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let y_label = y
        .map(|n| format!("sum of {n}"))
        .unwrap_or_else(|| "rows".into());
    let title = format!("{y_label} by {x_name}");
    Ok(Drawn {
        x_scale: XScale::Band,
        marks: Marks::Bars {
            categories: categories
                .into_iter()
                .map(|c| c.unwrap_or_else(|| "null".into()))
                .collect(),
            series,
        },
        x_label: x_name.to_string(),
        y_label,
        title,
    })
}

/// Box charts: min, quartiles, median and max of y, per x group if given.
fn boxes(
    frame: &LazyFrame,
    x: Option<&str>,
    y_name: &str,
    notes: &mut Vec<String>,
) -> Result<Drawn, MagicError> {
    let value = || col(y_name).cast(DataType::Float64);
    let stats = [
        value().min().alias("min"),
        value()
            .quantile(lit(0.25), QuantileMethod::Linear)
            .alias("q1"),
        value().median().alias("median"),
        value()
            .quantile(lit(0.75), QuantileMethod::Linear)
            .alias("q3"),
        value().max().alias("max"),
    ];
    let df = match x {
        Some(x_name) => {
            let grouped = collect(
                frame
                    .clone()
                    .group_by([col(x_name).cast(DataType::String).alias("group")])
                    .agg(stats),
            )?
            .lazy();
            let count = row_count(&grouped)?;
            if count > MAX_BARS {
                notes.push(format!("the first {MAX_BARS} of {count} groups"));
            }
            collect(
                grouped
                    .sort(
                        ["group"],
                        SortMultipleOptions::default().with_nulls_last(true),
                    )
                    .limit(MAX_BARS as IdxSize),
            )?
        }
        None => collect(
            frame
                .clone()
                .select(stats)
                .with_column(lit(y_name.to_string()).alias("group")),
        )?,
    };
    let groups = texts(&df, "group")?;
    let columns: Vec<Vec<f64>> = ["min", "q1", "median", "q3", "max"]
        .iter()
        .map(|name| floats(&df, name))
        .collect::<Result<_, _>>()?;
    let boxes = groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            (
                g.unwrap_or_else(|| "null".into()),
                [
                    columns[0][i],
                    columns[1][i],
                    columns[2][i],
                    columns[3][i],
                    columns[4][i],
                ],
            )
        })
        .collect();
    Ok(Drawn {
        x_scale: XScale::Band,
        marks: Marks::Boxes(boxes),
        x_label: x.unwrap_or_default().to_string(),
        y_label: y_name.to_string(),
        title: match x {
            Some(n) => format!("{y_name} by {n}"),
            None => y_name.to_string(),
        },
    })
}

/// Equal-width bins between the column's min and max, counted in polars.
pub fn histogram(
    frame: &LazyFrame,
    column: &str,
    bins: usize,
) -> Result<Vec<(f64, f64, f64)>, MagicError> {
    let value = || col(column).cast(DataType::Float64);
    let range = collect(
        frame
            .clone()
            .select([value().min().alias("min"), value().max().alias("max")]),
    )?;
    match (
        floats(&range, "min")?.first().copied(),
        floats(&range, "max")?.first().copied(),
    ) {
        (Some(min), Some(max)) => histogram_in(frame, value(), bins, min, max),
        _ => Ok(Vec::new()),
    }
}

/// Equal-width bins of `value` (an f64 expression) between known bounds.
pub fn histogram_in(
    frame: &LazyFrame,
    value: Expr,
    bins: usize,
    min: f64,
    max: f64,
) -> Result<Vec<(f64, f64, f64)>, MagicError> {
    if !min.is_finite() || !max.is_finite() || bins == 0 {
        return Ok(Vec::new());
    }
    let bins = if max > min { bins } else { 1 };
    let width = if max > min {
        (max - min) / bins as f64
    } else {
        1.0
    };
    let counts = collect(
        frame
            .clone()
            .select([((value - lit(min)) / lit(width)).floor().alias("bin")])
            .filter(col("bin").is_not_null())
            .group_by([col("bin")])
            .agg([len().cast(DataType::Float64).alias("n")]),
    )?;
    let mut out: Vec<(f64, f64, f64)> = (0..bins)
        .map(|i| (min + width * i as f64, min + width * (i + 1) as f64, 0.0))
        .collect();
    for (bin, n) in floats(&counts, "bin")?
        .into_iter()
        .zip(floats(&counts, "n")?)
    {
        if bin.is_finite() {
            // The maximum itself lands in the last bin.
            let i = (bin.max(0.0) as usize).min(bins - 1);
            out[i].2 += n;
        }
    }
    Ok(out)
}

/// A one-line description of a chart for `text/plain`.
pub fn describe_chart(kind: Kind, chart: &Chart) -> String {
    let size = match &chart.marks {
        Marks::Points { series, .. } => {
            format!("{} points", series.iter().map(|s| s.y.len()).sum::<usize>())
        }
        Marks::Bars { categories, .. } => format!("{} bars", categories.len()),
        Marks::Bins(bins) => format!("{} bins", bins.len()),
        Marks::Boxes(groups) => format!("{} boxes", groups.len()),
    };
    format!("{} chart: {} ({size})", kind.name(), chart.title)
}

pub fn chart_bundle(kind: Kind, chart: &Chart) -> MimeBundle {
    MimeBundle::text(describe_chart(kind, chart))
        .with("image/svg+xml", svg::render(chart, 640.0, 360.0))
        .with("application/vnd.vegalite.v5+json", vega_lite(chart))
}

pub(crate) struct Plot(pub(crate) Arc<Catalog>);

impl Magic for Plot {
    fn name(&self) -> &str {
        "plot"
    }
    fn summary(&self) -> &str {
        "Chart a table or a SQL query (line, bar, scatter, hist, box)"
    }
    fn usage(&self) -> &str {
        "%plot SOURCE --kind line|bar|scatter|hist|box [--x COL] [--y COL] [--color COL] [--title T] [--bins N]\n\
         %%plot --kind ... (with a SQL query on the following lines)\n\n\
         SOURCE is a loaded table or a SQL query over the loaded tables.\n\
         line/scatter: --x and --y (numbers; line also takes dates or categories on x).\n\
         bar: --x categories, --y summed per category (without --y: rows per category).\n\
         hist: --x numbers, --bins N equal-width bins (default 30).\n\
         box: --y numbers, optionally per --x group (whiskers at min and max).\n\
         --color splits line, scatter and bar charts by a column (at most 10 values).\n\
         The data is reduced in polars first: at most 2000 line points, 5000 scatter\n\
         points (evenly thinned) and 50 bars or boxes reach the notebook."
    }
    fn kinds(&self) -> &[MagicKind] {
        BOTH
    }
    fn run(
        &self,
        invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let args = parse_plot(invocation)?;
        let frame = self.0.source(&args.source)?;
        let chart = prepare(frame, &args)?;
        Ok(Some(chart_bundle(args.kind, &chart)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(source: &str) -> Invocation {
        ferrolab_magics::parse(source)
            .expect("parses")
            .expect("a magic")
    }

    #[test]
    fn sql_sources_keep_their_quotes() {
        let args = parse_plot(&invocation(
            "%plot SELECT model, tokens FROM logs WHERE status = 'ok' --kind bar --x model --y tokens",
        ))
        .expect("parses");
        assert_eq!(
            args.source,
            "SELECT model, tokens FROM logs WHERE status = 'ok'"
        );
        assert_eq!((args.kind, args.x.as_deref()), (Kind::Bar, Some("model")));
        let cell = parse_plot(&invocation(
            "%%plot --kind hist --x latency --bins 10\nSELECT latency FROM logs",
        ))
        .expect("cell");
        assert_eq!(
            (cell.source.as_str(), cell.bins),
            ("SELECT latency FROM logs", 10)
        );
    }

    #[test]
    fn missing_or_bad_options_say_what_is_needed() {
        let error = |s: &str| parse_plot(&invocation(s)).expect_err(s).evalue;
        assert!(error("%plot logs --x a").contains("--kind <KIND>"));
        assert!(error("%plot logs --kind pie --x a")
            .contains("[possible values: line, bar, scatter, hist, box]"));
        assert!(error("%plot logs --kind line --x a").contains("needs --y"));
        assert!(error("%plot logs --kind hist --x a --bins 0").contains("0 is not in 1..=200"));
        assert!(error("%plot logs --kind box --y a --color b").contains("not supported"));
        assert!(error("%plot --kind bar --x a").contains("usage"));
    }

    fn logs() -> LazyFrame {
        df!(
            "model" => ["a", "b", "a", "c", "b", "a"],
            "tokens" => [10i64, 20, 30, 40, 50, 60],
            "latency" => [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0],
        )
        .expect("df")
        .lazy()
    }

    fn args(kind: Kind, x: Option<&str>, y: Option<&str>) -> PlotArgs {
        PlotArgs {
            source: "logs".into(),
            kind,
            x: x.map(str::to_string),
            y: y.map(str::to_string),
            color: None,
            title: None,
            bins: 5,
        }
    }

    #[test]
    fn bars_sum_per_category() {
        let chart = prepare(logs(), &args(Kind::Bar, Some("model"), Some("tokens"))).expect("bar");
        assert_eq!(
            chart.marks,
            Marks::Bars {
                categories: vec!["a".into(), "b".into(), "c".into()],
                series: vec![(None, vec![100.0, 70.0, 40.0])],
            }
        );
        let spec = vega_lite(&chart);
        assert_eq!(spec["mark"], "bar");
        assert_eq!(spec["data"]["values"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn histogram_counts_every_row_once() {
        let chart = prepare(logs(), &args(Kind::Hist, Some("latency"), None)).expect("hist");
        let Marks::Bins(bins) = &chart.marks else {
            panic!("bins expected")
        };
        assert_eq!(bins.len(), 5);
        assert_eq!(bins.iter().map(|b| b.2).sum::<f64>(), 6.0);
        assert_eq!(bins[4].2, 2.0, "the maximum lands in the last bin");
    }

    #[test]
    fn long_lines_are_thinned_and_charts_on_text_are_refused() {
        let n = 10 * MAX_LINE_POINTS as i64;
        let big = df!("t" => (0..n).collect::<Vec<_>>(), "v" => (0..n).map(|v| v as f64).collect::<Vec<_>>())
            .expect("df")
            .lazy();
        let chart = prepare(big, &args(Kind::Line, Some("t"), Some("v"))).expect("line");
        let Marks::Points { series, .. } = &chart.marks else {
            panic!("points expected")
        };
        assert!(
            series[0].y.len() <= MAX_LINE_POINTS,
            "{}",
            series[0].y.len()
        );
        assert!(chart.title.contains("every 10th"), "{}", chart.title);
        let error = prepare(logs(), &args(Kind::Hist, Some("model"), None)).expect_err("text");
        assert_eq!(error.ename, "NotNumeric");
        let error = prepare(logs(), &args(Kind::Bar, Some("nope"), None)).expect_err("missing");
        assert!(
            error.evalue.contains("model, tokens, latency"),
            "{}",
            error.evalue
        );
    }

    #[test]
    fn boxes_give_five_numbers() {
        let chart = prepare(logs(), &args(Kind::Box, Some("model"), Some("latency"))).expect("box");
        let Marks::Boxes(groups) = &chart.marks else {
            panic!("boxes expected")
        };
        assert_eq!(groups[0], ("a".to_string(), [1.0, 2.0, 3.0, 4.5, 6.0]));
    }
}
