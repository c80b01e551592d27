//! Static SVG charts drawn in Rust, so that a chart shows wherever SVG shows
//! (exported reports, GitHub, consoles that save images) without a JavaScript
//! renderer. The same [`Chart`] also becomes a Vega-Lite spec ([`vega_lite`]), so
//! every magic that draws (data charts, training curves, the serving monitor) shows
//! the interactive view where the front end renders Vega and this SVG elsewhere.

use crate::escape_html as escape;
use serde_json::{json, Value};
use std::fmt::Write;

/// The colours of series, the same as Vega's default `tableau10`, so the SVG and
/// the Vega-Lite view of a chart agree.
pub const PALETTE: [&str; 10] = [
    "#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6",
    "#9d755d", "#bab0ac",
];

/// How the x axis maps values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XScale {
    /// Numbers.
    Linear,
    /// Milliseconds since the Unix epoch, labelled as dates.
    Time,
    /// Categories, one band each.
    Band,
}

/// What is drawn. Every variant is already bounded (see `chart.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum Marks {
    /// Line or scatter: one series per colour value.
    Points { line: bool, series: Vec<Series> },
    /// Bars per category, stacked by series (colour value).
    Bars {
        categories: Vec<String>,
        series: Vec<(Option<String>, Vec<f64>)>,
    },
    /// Histogram bins: start, end, count.
    Bins(Vec<(f64, f64, f64)>),
    /// Box per group: min, q1, median, q3, max.
    Boxes(Vec<(String, [f64; 5])>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: Option<String>,
    /// x as a number (or ms since the epoch) unless the x scale is a band.
    pub x: Vec<XValue>,
    pub y: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum XValue {
    Num(f64),
    Cat(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: XScale,
    pub marks: Marks,
    /// The colour column, when series are split by one.
    pub color_label: Option<String>,
}

/// Round tick steps: 1, 2 or 5 times a power of ten.
pub fn nice_ticks(min: f64, max: f64, count: usize) -> Vec<f64> {
    if !min.is_finite() || !max.is_finite() {
        return Vec::new();
    }
    let (min, max) = if max > min {
        (min, max)
    } else {
        (min - 1.0, max + 1.0)
    };
    let raw = (max - min) / count.max(1) as f64;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power);
    let first = (min / step).ceil() as i64;
    let last = (max / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A domain widened to round tick steps on both ends, with its ticks.
pub fn nice_domain(min: f64, max: f64, count: usize) -> (f64, f64, Vec<f64>) {
    let ticks = nice_ticks(min, max, count);
    let step = match ticks.as_slice() {
        [a, b, ..] => b - a,
        _ => return (min, max, ticks),
    };
    let lo = (min / step).floor() * step;
    let hi = (max / step).ceil() * step;
    let n = ((hi - lo) / step).round() as i64;
    (lo, hi, (0..=n).map(|i| lo + i as f64 * step).collect())
}

/// A short label for a number: thousands as k, millions as M, no float noise.
pub fn number_label(value: f64) -> String {
    let abs = value.abs();
    let (scaled, suffix) = if abs >= 1e9 {
        (value / 1e9, "G")
    } else if abs >= 1e6 {
        (value / 1e6, "M")
    } else if abs >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    let text = if text == "-0" { "0" } else { text };
    format!("{text}{suffix}")
}

/// `YYYY-MM-DD` (and the time when the span is short) for ms since the epoch.
pub fn date_label(ms: f64, with_time: bool) -> String {
    let secs = (ms / 1000.0).floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if with_time {
        format!(
            "{year:04}-{month:02}-{day:02} {:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60
        )
    } else {
        format!("{year:04}-{month:02}-{day:02}")
    }
}

fn cut(label: &str, max: usize) -> String {
    if label.chars().count() > max {
        format!("{}…", label.chars().take(max - 1).collect::<String>())
    } else {
        label.to_string()
    }
}

struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

struct Linear {
    domain: (f64, f64),
    range: (f64, f64),
}

impl Linear {
    fn new(min: f64, max: f64, range: (f64, f64)) -> Self {
        let (min, max) = if max > min {
            (min, max)
        } else {
            (min - 1.0, max + 1.0)
        };
        Linear {
            domain: (min, max),
            range,
        }
    }
    fn at(&self, v: f64) -> f64 {
        let t = (v - self.domain.0) / (self.domain.1 - self.domain.0);
        self.range.0 + t * (self.range.1 - self.range.0)
    }
}

fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

/// Renders a chart as a standalone SVG document of the given size.
pub fn render(chart: &Chart, width: f64, height: f64) -> String {
    let small = width < 400.0;
    let band_labels = match &chart.marks {
        Marks::Bars { categories, .. } => categories.len(),
        Marks::Boxes(groups) => groups.len(),
        Marks::Points { series, .. } if chart.x_scale == XScale::Band => {
            series.first().map_or(0, |s| s.x.len())
        }
        _ => 0,
    };
    let rotate = band_labels > 8 && !small;
    let legend = chart.color_label.is_some() && !small;
    let frame = Frame {
        left: if small { 40.0 } else { 64.0 },
        top: if chart.title.is_empty() { 12.0 } else { 32.0 },
        width: width - if small { 48.0 } else { 80.0 } - if legend { 120.0 } else { 0.0 },
        height: height
            - if chart.title.is_empty() { 12.0 } else { 32.0 }
            - if rotate {
                96.0
            } else if small {
                24.0
            } else {
                48.0
            },
    };
    let font = if small { 9 } else { 11 };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="{font}"><rect width="100%" height="100%" fill="white"/>"#
    );
    if !chart.title.is_empty() {
        let _ = write!(
            out,
            r#"<text x="{}" y="20" font-size="{}" font-weight="bold">{}</text>"#,
            frame.left,
            font + 2,
            escape(&cut(&chart.title, 90))
        );
    }
    let y_range = (frame.top + frame.height, frame.top);
    let x_range = (frame.left, frame.left + frame.width);
    // The y extent of every mark, starting at zero for bars and histograms.
    let (y_min, y_max) = match &chart.marks {
        Marks::Points { series, .. } => extent(series.iter().flat_map(|s| s.y.iter().copied())),
        Marks::Bars { categories, series } => {
            let totals = (0..categories.len()).map(|i| {
                series
                    .iter()
                    .map(|(_, v)| v.get(i).copied().unwrap_or(0.0))
                    .sum::<f64>()
            });
            let (lo, hi) = extent(totals);
            (lo.min(0.0), hi.max(0.0))
        }
        Marks::Bins(bins) => (0.0, extent(bins.iter().map(|b| b.2)).1.max(1.0)),
        Marks::Boxes(groups) => extent(groups.iter().flat_map(|(_, s)| s.iter().copied())),
    };
    let (y_lo, y_hi, y_ticks) = nice_domain(y_min, y_max, if small { 3 } else { 6 });
    let y = Linear::new(y_lo, y_hi, y_range);
    for tick in &y_ticks {
        let py = y.at(*tick);
        let _ = write!(
            out,
            r##"<line x1="{}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            frame.left,
            frame.left + frame.width,
            frame.left - 4.0,
            py + 3.0,
            number_label(*tick)
        );
    }
    // x axis: a band per category, or a linear/time scale.
    let categories: Vec<String> = match &chart.marks {
        Marks::Bars { categories, .. } => categories.clone(),
        Marks::Boxes(groups) => groups.iter().map(|(g, _)| g.clone()).collect(),
        Marks::Points { series, .. } if chart.x_scale == XScale::Band => {
            let mut seen = Vec::new();
            for s in series {
                for x in &s.x {
                    if let XValue::Cat(c) = x {
                        if !seen.contains(c) {
                            seen.push(c.clone());
                        }
                    }
                }
            }
            seen
        }
        _ => Vec::new(),
    };
    let band = frame.width / categories.len().max(1) as f64;
    let band_center = |i: usize| frame.left + band * (i as f64 + 0.5);
    let (x_min, x_max) = match &chart.marks {
        Marks::Points { series, .. } => extent(series.iter().flat_map(|s| {
            s.x.iter().filter_map(|x| match x {
                XValue::Num(n) => Some(*n),
                XValue::Cat(_) => None,
            })
        })),
        Marks::Bins(bins) => (
            bins.first().map_or(0.0, |b| b.0),
            bins.last().map_or(1.0, |b| b.1),
        ),
        _ => (0.0, 1.0),
    };
    let (x_min, x_max, x_ticks) = match (&chart.marks, chart.x_scale) {
        (Marks::Points { .. }, XScale::Linear) => {
            nice_domain(x_min, x_max, if small { 3 } else { 6 })
        }
        _ => (
            x_min,
            x_max,
            nice_ticks(x_min, x_max, if small { 3 } else { 6 }),
        ),
    };
    let x = Linear::new(x_min, x_max, x_range);
    let axis_y = frame.top + frame.height;
    let _ = write!(
        out,
        r##"<line x1="{}" x2="{}" y1="{axis_y}" y2="{axis_y}" stroke="#888"/>"##,
        frame.left,
        frame.left + frame.width
    );
    if chart.x_scale == XScale::Band || !categories.is_empty() {
        let every = if small {
            categories.len().div_ceil(6).max(1)
        } else {
            1
        };
        for (i, label) in categories.iter().enumerate().step_by(every) {
            let px = band_center(i);
            let label = escape(&cut(label, if small { 8 } else { 16 }));
            if rotate {
                let _ = write!(
                    out,
                    r#"<text transform="translate({px:.1},{:.1}) rotate(-45)" text-anchor="end">{label}</text>"#,
                    axis_y + 12.0
                );
            } else {
                let _ = write!(
                    out,
                    r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
                    axis_y + 14.0
                );
            }
        }
    } else {
        let ticks = if chart.x_scale == XScale::Time {
            let n = if small { 3 } else { 5 };
            (0..n)
                .map(|i| x_min + (x_max - x_min) * i as f64 / (n - 1) as f64)
                .collect()
        } else {
            x_ticks
        };
        let with_time = x_max - x_min < 3.0 * 86_400_000.0;
        // One point in time, or a span shorter than a label's precision, would
        // print the same label several times over itself: each label once.
        let mut last_label = None;
        for tick in ticks {
            let px = x.at(tick);
            let label = if chart.x_scale == XScale::Time {
                date_label(tick, with_time)
            } else {
                number_label(tick)
            };
            if last_label.as_ref() == Some(&label) {
                continue;
            }
            last_label = Some(label.clone());
            let _ = write!(
                out,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{axis_y}" y2="{}" stroke="#888"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                axis_y + 4.0,
                axis_y + 14.0
            );
        }
    }
    // Axis titles.
    if !small {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
            frame.left + frame.width / 2.0,
            height - 6.0,
            escape(&cut(&chart.x_label, 60))
        );
        let _ = write!(
            out,
            r#"<text transform="translate(12,{:.1}) rotate(-90)" text-anchor="middle" font-weight="bold">{}</text>"#,
            frame.top + frame.height / 2.0,
            escape(&cut(&chart.y_label, 40))
        );
    }
    match &chart.marks {
        Marks::Points { line, series } => {
            for (index, s) in series.iter().enumerate() {
                let color = PALETTE[index % PALETTE.len()];
                let points: Vec<(f64, f64)> =
                    s.x.iter()
                        .zip(&s.y)
                        .filter(|(_, y)| y.is_finite())
                        .map(|(xv, yv)| {
                            let px = match xv {
                                XValue::Num(n) => x.at(*n),
                                XValue::Cat(c) => {
                                    band_center(categories.iter().position(|k| k == c).unwrap_or(0))
                                }
                            };
                            (px, y.at(*yv))
                        })
                        .collect();
                if *line {
                    let path: Vec<String> = points
                        .iter()
                        .map(|(px, py)| format!("{px:.1},{py:.1}"))
                        .collect();
                    let _ = write!(
                        out,
                        r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                        path.join(" ")
                    );
                } else {
                    for (px, py) in points {
                        let _ = write!(
                            out,
                            r#"<circle cx="{px:.1}" cy="{py:.1}" r="2.5" fill="{color}" fill-opacity="0.6"/>"#
                        );
                    }
                }
            }
        }
        Marks::Bars { categories, series } => {
            let bar = band * 0.8;
            for i in 0..categories.len() {
                let mut base = 0.0;
                for (index, (_, values)) in series.iter().enumerate() {
                    let value = values.get(i).copied().unwrap_or(0.0);
                    if !value.is_finite() || value == 0.0 {
                        continue;
                    }
                    let (a, b) = (y.at(base), y.at(base + value));
                    base += value;
                    let _ = write!(
                        out,
                        r#"<rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" fill="{}"/>"#,
                        band_center(i) - bar / 2.0,
                        a.min(b),
                        (a - b).abs(),
                        PALETTE[index % PALETTE.len()]
                    );
                }
            }
        }
        Marks::Bins(bins) => {
            for (start, end, count) in bins {
                let (x0, x1) = (x.at(*start), x.at(*end));
                let top = y.at(*count);
                let _ = write!(
                    out,
                    r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}" stroke="white" stroke-width="0.5"/>"#,
                    x0,
                    (x1 - x0).max(0.5),
                    (axis_y - top).max(0.0),
                    PALETTE[0]
                );
            }
        }
        Marks::Boxes(groups) => {
            let width = band * 0.5;
            for (i, (_, [min, q1, median, q3, max])) in groups.iter().enumerate() {
                let cx = band_center(i);
                let (left, right) = (cx - width / 2.0, cx + width / 2.0);
                let _ = write!(
                    out,
                    r##"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="#333"/><rect x="{left:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="{}" stroke="#333"/><line x1="{left:.1}" x2="{right:.1}" y1="{:.1}" y2="{:.1}" stroke="white" stroke-width="2"/>"##,
                    y.at(*min),
                    y.at(*max),
                    y.at(*q3) - 1.0,
                    (y.at(*q1) - y.at(*q3)).abs() + 2.0,
                    PALETTE[0],
                    y.at(*median),
                    y.at(*median),
                );
            }
        }
    }
    if legend {
        let names: Vec<String> = match &chart.marks {
            Marks::Points { series, .. } => series
                .iter()
                .map(|s| s.name.clone().unwrap_or_else(|| "null".into()))
                .collect(),
            Marks::Bars { series, .. } => series
                .iter()
                .map(|(n, _)| n.clone().unwrap_or_else(|| "null".into()))
                .collect(),
            _ => Vec::new(),
        };
        let lx = width - 128.0;
        if let Some(label) = &chart.color_label {
            let _ = write!(
                out,
                r#"<text x="{lx}" y="{}" font-weight="bold">{}</text>"#,
                frame.top + 4.0,
                escape(&cut(label, 18))
            );
        }
        for (index, name) in names.iter().enumerate() {
            let ly = frame.top + 20.0 + index as f64 * 16.0;
            let _ = write!(
                out,
                r#"<rect x="{lx}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{}" y="{:.1}">{}</text>"#,
                ly - 9.0,
                PALETTE[index % PALETTE.len()],
                lx + 14.0,
                ly,
                escape(&cut(name, 16))
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// The Vega-Lite v5 spec of a chart, with its (bounded) data inline.
pub fn vega_lite(chart: &Chart) -> Value {
    let x_type = match chart.x_scale {
        XScale::Linear => "quantitative",
        XScale::Time => "temporal",
        XScale::Band => "ordinal",
    };
    let color = chart
        .color_label
        .as_ref()
        .map(|label| json!({"field": "color", "type": "nominal", "title": label}));
    let number = |v: f64| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
    let body = match &chart.marks {
        Marks::Points { line, series } => {
            let mut values = Vec::new();
            for s in series {
                for (xv, yv) in s.x.iter().zip(&s.y) {
                    let x = match xv {
                        XValue::Num(n) => number(*n),
                        XValue::Cat(c) => Value::String(c.clone()),
                    };
                    values.push(json!({"x": x, "y": number(*yv), "color": s.name}));
                }
            }
            let mut encoding = json!({
                "x": {"field": "x", "type": x_type, "title": chart.x_label, "sort": null},
                "y": {"field": "y", "type": "quantitative", "title": chart.y_label},
            });
            if let Some(color) = &color {
                encoding["color"] = color.clone();
            }
            json!({
                "data": {"values": values},
                "mark": if *line { json!({"type": "line"}) } else { json!({"type": "point", "filled": true, "opacity": 0.6}) },
                "encoding": encoding,
            })
        }
        Marks::Bars { categories, series } => {
            let mut values = Vec::new();
            for (name, bars) in series {
                for (category, value) in categories.iter().zip(bars) {
                    values.push(json!({"x": category, "y": number(*value), "color": name}));
                }
            }
            let mut encoding = json!({
                "x": {"field": "x", "type": "nominal", "title": chart.x_label, "sort": categories},
                "y": {"field": "y", "type": "quantitative", "title": chart.y_label},
            });
            if let Some(color) = &color {
                encoding["color"] = color.clone();
            }
            json!({"data": {"values": values}, "mark": "bar", "encoding": encoding})
        }
        Marks::Bins(bins) => {
            let values: Vec<Value> = bins
                .iter()
                .map(|(start, end, n)| json!({"start": number(*start), "end": number(*end), "count": number(*n)}))
                .collect();
            json!({
                "data": {"values": values},
                "mark": "bar",
                "encoding": {
                    "x": {"field": "start", "type": "quantitative", "bin": {"binned": true}, "title": chart.x_label},
                    "x2": {"field": "end"},
                    "y": {"field": "count", "type": "quantitative", "title": chart.y_label},
                },
            })
        }
        Marks::Boxes(groups) => {
            let values: Vec<Value> = groups
                .iter()
                .map(|(group, [min, q1, median, q3, max])| {
                    json!({"group": group, "min": number(*min), "q1": number(*q1),
                           "median": number(*median), "q3": number(*q3), "max": number(*max)})
                })
                .collect();
            let x = json!({"field": "group", "type": "nominal", "title": chart.x_label});
            json!({
                "data": {"values": values},
                "layer": [
                    {"mark": "rule", "encoding": {"x": x, "y": {"field": "min", "type": "quantitative", "title": chart.y_label}, "y2": {"field": "max"}}},
                    {"mark": {"type": "bar", "size": 24}, "encoding": {"x": x, "y": {"field": "q1", "type": "quantitative"}, "y2": {"field": "q3"}}},
                    {"mark": {"type": "tick", "color": "white", "size": 24}, "encoding": {"x": x, "y": {"field": "median", "type": "quantitative"}}},
                ],
            })
        }
    };
    let mut spec = json!({
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": chart.title,
        "width": 560,
        "height": 300,
    });
    if let (Some(spec), Some(body)) = (spec.as_object_mut(), body.as_object()) {
        spec.extend(body.clone());
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        let ticks = nice_ticks(0.13, 0.91, 4);
        assert!(
            ticks
                .iter()
                .all(|t| (t * 10.0 - (t * 10.0).round()).abs() < 1e-9),
            "{ticks:?}"
        );
        assert_eq!(number_label(1_500_000.0), "1.5M");
        assert_eq!(number_label(0.30000000000000004), "0.3");
        assert_eq!(number_label(25_000.0), "25k");
    }

    #[test]
    fn dates_are_civil_dates() {
        assert_eq!(date_label(0.0, false), "1970-01-01");
        assert_eq!(date_label(1_709_164_800_000.0, false), "2024-02-29");
        assert_eq!(
            date_label(1_709_164_800_000.0 + 3_660_000.0, true),
            "2024-02-29 01:01"
        );
    }

    #[test]
    fn one_point_in_time_gets_one_label() {
        let at = 1_709_164_800_000.0;
        let chart = Chart {
            title: "requests per minute".into(),
            x_label: "minute".into(),
            y_label: "requests".into(),
            x_scale: XScale::Time,
            marks: Marks::Points {
                line: true,
                series: vec![Series {
                    name: None,
                    x: vec![XValue::Num(at)],
                    y: vec![5.0],
                }],
            },
            color_label: None,
        };
        let svg = render(&chart, 420.0, 240.0);
        assert_eq!(svg.matches("2024-02-29 00:00").count(), 1, "{svg}");
    }

    #[test]
    fn labels_are_escaped_and_every_bar_is_drawn() {
        let chart = Chart {
            title: "<script>".into(),
            x_label: "model".into(),
            y_label: "tokens".into(),
            x_scale: XScale::Band,
            marks: Marks::Bars {
                categories: vec!["a&b".into(), "c".into()],
                series: vec![(None, vec![3.0, 5.0])],
            },
            color_label: None,
        };
        let svg = render(&chart, 640.0, 360.0);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
        assert!(svg.contains("a&amp;b"));
        assert_eq!(
            svg.matches("<rect").count(),
            1 + 2,
            "background and two bars"
        );
    }
}
