//! The HTML report: one file, nothing loaded, nothing run (but the inlined chart
//! script, when asked for).

use crate::markdown::{self, Heading};
use crate::notebook::{text, Kind, Notebook};
use crate::sanitize::{self, escape, is_base64};
use crate::{ansi, highlight, Options};
use serde_json::{Map, Value as Json};

/// No script runs and nothing is fetched, whatever got past the sanitiser:
/// styles and `data:` images only.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; form-action 'none'; base-uri 'none'";

/// The policy of an interactive report: the same, and the one chart script may
/// run, named by its SHA-256 (no `unsafe-inline`, no `unsafe-eval`: a script the
/// notebook smuggled in still cannot run).
fn csp_with_script(script: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
    format!("{CSP}; script-src 'sha256-{hash}'")
}

/// A classic script inside `<script>` ends at the first `</script`; the chart
/// library has none, but a later version might: `<\/` means the same in JS.
fn inline_script(script: &str) -> String {
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(at) = rest.find("</") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        if after
            .get(..6)
            .is_some_and(|word| word.eq_ignore_ascii_case("script"))
        {
            out.push_str("<\\/");
        } else {
            out.push_str("</");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The MIME type of a chart spec in a display bundle, and vega-embed's mode for it.
fn chart_spec(data: &Map<String, Json>) -> Option<(&str, &Json, &'static str)> {
    data.iter().find_map(|(mime, spec)| {
        let mode = if mime.starts_with("application/vnd.vegalite.v") {
            "vega-lite"
        } else if mime.starts_with("application/vnd.vega.v") {
            "vega"
        } else {
            return None;
        };
        (mime.ends_with("+json") && spec.is_object()).then_some((mime.as_str(), spec, mode))
    })
}

const CSS: &str = r#"
:root { --fg: #1f2328; --muted: #6b7280; --line: #d8dee4; --panel: #f6f8fa; --accent: #1a73e8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.page { max-width: 980px; margin: 0 auto; padding: 32px 24px 64px; }
header.report { border-bottom: 1px solid var(--line); margin-bottom: 24px; padding-bottom: 12px; }
header.report h1 { margin: 0 0 6px; font-size: 28px; }
header.report .meta { color: var(--muted); font-size: 13px; margin: 0; }
nav.toc { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; margin-bottom: 24px; font-size: 14px; }
nav.toc ul { margin: 4px 0; padding-left: 18px; }
nav.toc a { color: var(--accent); text-decoration: none; }
.cell { margin: 10px 0; }
.input { position: relative; }
.input pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.prompt { position: absolute; left: -58px; top: 10px; width: 50px; text-align: right; color: var(--muted); font: 12px ui-monospace, monospace; }
pre { margin: 0; overflow-x: auto; font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; word-break: break-word; }
.outputs { margin-top: 6px; }
.output { margin: 4px 0; overflow-x: auto; }
.output pre { padding: 4px 2px; }
.stderr { background: #fff5f5; }
.error pre { background: #fff0f0; border-left: 3px solid #d92d20; padding: 6px 10px; }
.output img, .markdown img { max-width: 100%; }
.output svg { max-width: 100%; height: auto; }
.output table, .markdown table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
.output th, .output td, .markdown th, .markdown td { border: 1px solid var(--line); padding: 3px 9px; text-align: left; }
.markdown code { background: var(--panel); padding: 1px 4px; border-radius: 4px; font-size: 90%; }
.markdown pre code { background: none; padding: 0; }
.markdown pre { background: var(--panel); padding: 10px 12px; border-radius: 6px; }
.math { font-family: "Latin Modern Math", "STIX Two Math", serif; font-style: italic; }
.math-display { display: block; text-align: center; margin: 10px 0; }
.note { color: var(--muted); font-size: 13px; font-style: italic; }
details.hidden-input summary { color: var(--muted); font-size: 13px; cursor: pointer; }
.keyword { color: #a626a4; } .string { color: #50a14f; } .comment { color: #8b949e; font-style: italic; }
.number { color: #986801; } .macro { color: #4078f2; } .type { color: #c18401; } .magic { color: #0184bc; }
.ansi-bold { font-weight: bold; } .ansi-dim { color: #8b949e; }
.ansi-black { color: #3e424d; } .ansi-red { color: #e75c58; } .ansi-green { color: #00a250; } .ansi-yellow { color: #b8860b; }
.ansi-blue { color: #208ffb; } .ansi-magenta { color: #d160c4; } .ansi-cyan { color: #60c6c8; } .ansi-white { color: #c5c1b4; }
.ansi-bright-black { color: #6b7280; } .ansi-bright-red { color: #ff6b6b; } .ansi-bright-green { color: #2ecc71; } .ansi-bright-yellow { color: #d4a017; }
.ansi-bright-blue { color: #5dade2; } .ansi-bright-magenta { color: #e07ad8; } .ansi-bright-cyan { color: #76d7d9; } .ansi-bright-white { color: #eee; }
@media print {
  body { font-size: 11pt; }
  .page { max-width: none; padding: 0; }
  nav.toc { page-break-after: always; border: none; background: none; }
  .cell { page-break-inside: avoid; }
  .prompt { display: none; }
  a { color: inherit; text-decoration: none; }
  details.hidden-input { display: none; }
}
"#;

/// Chooses and renders one display bundle.
fn bundle_html(data: &Map<String, Json>) -> String {
    // A chart: its static SVG (the Vega-Lite spec needs a script, which never runs here).
    if let Some(svg) = data.get("image/svg+xml") {
        return sanitize::html(&text(Some(svg)));
    }
    if let Some(html) = data.get("text/html") {
        return sanitize::html(&text(Some(html)));
    }
    for mime in ["image/png", "image/jpeg", "image/gif", "image/webp"] {
        if let Some(image) = data.get(mime) {
            let image = text(Some(image));
            if is_base64(&image) {
                let image: String = image.split_whitespace().collect();
                return format!("<img alt=\"output\" src=\"data:{mime};base64,{image}\">");
            }
            return "<p class=\"note\">(an image that is not valid base64 was left out)</p>".into();
        }
    }
    if let Some(md) = data.get("text/markdown") {
        let mut counter = 0;
        return markdown::render(&text(Some(md)), &Map::new(), &mut counter).0;
    }
    if let Some(latex) = data.get("text/latex") {
        return format!(
            "<div class=\"math math-display\">{}</div>",
            escape(&text(Some(latex)))
        );
    }
    if let Some(json) = data.get("application/json") {
        let pretty = serde_json::to_string_pretty(json).unwrap_or_default();
        return format!("<pre>{}</pre>", escape(&pretty));
    }
    if let Some(plain) = data.get("text/plain") {
        return format!("<pre>{}</pre>", ansi::to_html(&text(Some(plain))));
    }
    let kinds: Vec<String> = data.keys().map(|k| escape(k)).collect();
    format!(
        "<p class=\"note\">(an output a report cannot show: {})</p>",
        kinds.join(", ")
    )
}

/// How charts are drawn, and how many an interactive report has.
struct Charts {
    interactive: bool,
    count: usize,
}

fn output_html(output: &Json, charts: &mut Charts) -> String {
    match output.get("output_type").and_then(Json::as_str) {
        Some("stream") => {
            let class = if output.get("name").and_then(Json::as_str) == Some("stderr") {
                "output stream stderr"
            } else {
                "output stream"
            };
            format!(
                "<div class=\"{class}\"><pre>{}</pre></div>",
                ansi::to_html(&text(output.get("text")))
            )
        }
        Some("error") => {
            let body = match output.get("traceback") {
                Some(Json::Array(lines)) if !lines.is_empty() => lines
                    .iter()
                    .map(|l| ansi::to_html(&text(Some(l))))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => escape(&format!(
                    "{}: {}",
                    text(output.get("ename")),
                    text(output.get("evalue"))
                )),
            };
            format!("<div class=\"output error\"><pre>{body}</pre></div>")
        }
        Some("display_data" | "execute_result") => {
            match output.get("data").and_then(Json::as_object) {
                Some(data) => match chart_spec(data).filter(|_| charts.interactive) {
                    // The spec rides along as data (an attribute, escaped); the
                    // static picture stays for readers without scripts.
                    Some((mime, spec, mode)) => {
                        charts.count += 1;
                        let mut fallback = data.clone();
                        fallback.remove(mime);
                        let picture = if fallback.is_empty() {
                            String::new()
                        } else {
                            format!("<div class=\"picture\">{}</div>", bundle_html(&fallback))
                        };
                        format!(
                            "<div class=\"output chart\" data-{mode}=\"{}\">{picture}</div>",
                            escape(&spec.to_string())
                        )
                    }
                    None => format!("<div class=\"output\">{}</div>", bundle_html(data)),
                },
                None => String::new(),
            }
        }
        _ => String::new(),
    }
}

fn toc(headings: &[Heading]) -> String {
    if headings.is_empty() {
        return String::new();
    }
    let mut out =
        String::from("<nav class=\"toc\" aria-label=\"Contents\"><strong>Contents</strong><ul>");
    let top = headings.iter().map(|h| h.level).min().unwrap_or(1);
    for h in headings {
        let indent = (h.level - top) as usize;
        out.push_str(&format!(
            "<li style=\"margin-left:{}em\"><a href=\"#{}\">{}</a></li>",
            indent,
            escape(&h.id),
            escape(h.text.trim())
        ));
    }
    out.push_str("</ul></nav>");
    out
}

/// The whole report.
pub fn report(nb: &Notebook, options: &Options) -> String {
    let title = options
        .title
        .clone()
        .or_else(|| nb.title.clone())
        .unwrap_or_else(|| options.fallback_title.clone());
    let mut headings = Vec::new();
    let mut counter = 0;
    let mut body = String::new();
    let mut charts = Charts {
        interactive: options.chart_script.is_some(),
        count: 0,
    };
    for cell in &nb.cells {
        if cell.tagged("remove-cell") {
            continue;
        }
        match cell.kind {
            Kind::Markdown => {
                let (html, mut found) =
                    markdown::render(&cell.source, &cell.attachments, &mut counter);
                headings.append(&mut found);
                body.push_str(&format!(
                    "<section class=\"cell markdown\" data-cell=\"{}\">{html}</section>\n",
                    escape(&cell.id)
                ));
            }
            Kind::Raw => body.push_str(&format!(
                "<section class=\"cell raw\" data-cell=\"{}\"><pre>{}</pre></section>\n",
                escape(&cell.id),
                escape(&cell.source)
            )),
            Kind::Code => {
                let mut html = String::new();
                let show_input = !options.no_input && !cell.tagged("remove-input");
                if show_input {
                    let prompt = match cell.execution_count {
                        Some(n) => format!("[{n}]:"),
                        None => "[ ]:".into(),
                    };
                    let code = format!(
                        "<div class=\"input\"><span class=\"prompt\">{prompt}</span><pre><code>{}</code></pre></div>",
                        highlight::code(&cell.source, &nb.language)
                    );
                    if cell.tagged("hide-input") {
                        html.push_str(&format!(
                            "<details class=\"hidden-input\"><summary>Show code</summary>{code}</details>"
                        ));
                    } else {
                        html.push_str(&code);
                    }
                }
                if !cell.tagged("remove-output") && !cell.outputs.is_empty() {
                    html.push_str("<div class=\"outputs\">");
                    for output in &cell.outputs {
                        html.push_str(&output_html(output, &mut charts));
                    }
                    html.push_str("</div>");
                }
                if html.is_empty() {
                    continue;
                }
                body.push_str(&format!(
                    "<section class=\"cell code\" data-cell=\"{}\">{html}</section>\n",
                    escape(&cell.id)
                ));
            }
        }
    }
    let mut meta = Vec::new();
    if !nb.authors.is_empty() {
        meta.push(escape(&nb.authors.join(", ")));
    }
    meta.push(escape(&nb.date.clone().unwrap_or_else(|| {
        chrono::Utc::now().format("%Y-%m-%d").to_string()
    })));
    let contents = if options.toc {
        toc(&headings)
    } else {
        String::new()
    };
    // Only a report that has a chart carries the chart library (about 1 MB).
    let (csp, script) = match &options.chart_script {
        Some(script) if charts.count > 0 => {
            let inlined = inline_script(script);
            (
                csp_with_script(&inlined),
                format!("<script>{inlined}</script>\n"),
            )
        }
        _ => (CSP.to_string(), String::new()),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"ferrolab export\">\n\
         <title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<div class=\"page\">\n\
         <header class=\"report\"><h1>{title}</h1><p class=\"meta\">{meta}</p></header>\n\
         {contents}\n<main>\n{body}</main>\n</div>\n{script}</body>\n</html>\n",
        title = escape(&title),
        meta = meta.join(" · "),
    )
}

#[cfg(test)]
mod tests {
    use crate::{export, Format, Options};
    use serde_json::json;

    fn html_of(nb: serde_json::Value, options: Options) -> String {
        String::from_utf8(export(&nb, &options).expect("export").document).expect("utf-8")
    }

    #[test]
    fn tags_toc_title_and_escaping() {
        let nb = json!({
            "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"title": "Review </title><script>alert(1)</script>", "authors": [{"name": "Ada <b>"}], "date": "2026-11-29"},
            "cells": [
                {"id": "m", "cell_type": "markdown", "metadata": {}, "source": "# Findings\n## Loss"},
                {"id": "gone", "cell_type": "code", "metadata": {"tags": ["remove-cell"]}, "source": "secret_cell()", "outputs": [], "execution_count": 1},
                {"id": "noin", "cell_type": "code", "metadata": {"tags": ["remove-input"]}, "source": "hidden_input()", "outputs": [{"output_type": "stream", "name": "stdout", "text": "shown output"}], "execution_count": 2},
                {"id": "noout", "cell_type": "code", "metadata": {"tags": ["remove-output"]}, "source": "shown_input()", "outputs": [{"output_type": "stream", "name": "stdout", "text": "hidden output"}], "execution_count": 3},
                {"id": "x\"><script>", "cell_type": "code", "metadata": {"tags": ["hide-input"]}, "source": "folded()", "outputs": [], "execution_count": 4}
            ]
        });
        let html = html_of(
            nb,
            Options {
                format: Format::Html,
                toc: true,
                ..Default::default()
            },
        );
        assert!(!html.contains("<script>alert"), "the title is escaped");
        assert!(html.contains("Review &lt;/title&gt;"));
        assert!(html.contains("Ada &lt;b&gt;"));
        assert!(
            !html.contains("secret_cell")
                && !html.contains("hidden_input")
                && !html.contains("hidden output")
        );
        assert!(html.contains("shown output") && html.contains("shown_input"));
        assert!(html.contains("<details class=\"hidden-input\">"));
        assert!(html.contains("href=\"#nb-h1\"") && html.contains("id=\"nb-h1\""));
        // A hostile cell id is not valid nbformat: the reader replaces it before
        // it gets near the page (and ids are escaped there anyway).
        assert!(html.contains("data-cell=\"cell-4\""));
        assert!(!html.contains("x\"><script>") && !html.contains("x&quot;&gt;&lt;script"));
        assert!(html.contains("Content-Security-Policy"));
    }

    #[test]
    fn charts_are_their_svg_and_images_inline() {
        let nb = json!({
            "nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"id": "c", "cell_type": "code", "metadata": {}, "source": "%plot t", "execution_count": 1, "outputs": [
                {"output_type": "display_data", "metadata": {}, "data": {
                    "application/vnd.vegalite.v5+json": {"mark": "line"},
                    "image/svg+xml": "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><rect width=\"5\" height=\"5\"/><script>alert(1)</script></svg>",
                    "text/plain": "chart"}},
                {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo=\n", "text/plain": "img"}},
                {"output_type": "display_data", "metadata": {}, "data": {"image/png": "\"><script>alert(2)</script>"}}
            ]}]
        });
        let html = html_of(nb, Options::default());
        assert!(html.contains("<rect"));
        assert!(!html.contains("alert("), "{html}");
        assert!(html.contains("src=\"data:image/png;base64,iVBORw0KGgo=\""));
        assert!(html.contains("not valid base64"));
    }

    #[test]
    fn interactive_reports_carry_the_spec_and_only_their_own_script() {
        let chart = |title: &str| {
            json!({"output_type": "display_data", "metadata": {}, "data": {
                "application/vnd.vegalite.v5+json": {"mark": "bar", "title": title},
                "image/svg+xml": "<svg xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"5\" height=\"5\"/></svg>"}})
        };
        let nb = |outputs: Vec<serde_json::Value>| {
            json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                "cells": [{"id": "c", "cell_type": "code", "metadata": {}, "source": "%plot", "execution_count": 1, "outputs": outputs}]})
        };
        let script = "window.drawn = '</script><!-- ok';";
        let options = Options {
            chart_script: Some(script.into()),
            ..Default::default()
        };
        let html = html_of(
            nb(vec![chart("\"><script>alert(1)</script>")]),
            options.clone(),
        );
        // The spec is an escaped attribute; the static SVG is still there.
        assert!(html.contains("<div class=\"output chart\" data-vega-lite=\"{&quot;mark&quot;:&quot;bar&quot;,&quot;title&quot;:&quot;\\&quot;&gt;&lt;script&gt;"));
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("<rect"));
        // The script is inlined so that it cannot end early, and the policy names
        // exactly the inlined text by its hash.
        let inlined = "window.drawn = '<\\/script><!-- ok';";
        assert!(
            html.contains(&format!("<script>{inlined}</script>")),
            "{html}"
        );
        assert_eq!(html.matches("<script>").count(), 1);
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(inlined));
        assert!(html.contains(&format!("script-src 'sha256-{hash}'\"")));
        assert!(!html.contains("unsafe-eval") && !html.contains("script-src 'unsafe-inline'"));
        // No chart, no library: the report stays script-free.
        let plain = html_of(
            nb(vec![
                json!({"output_type": "stream", "name": "stdout", "text": "hi"}),
            ]),
            options,
        );
        assert!(!plain.contains("<script") && !plain.contains("script-src"));
        // Without the option a chart is only its picture.
        let fixed = html_of(nb(vec![chart("t")]), Options::default());
        assert!(!fixed.contains("data-vega-lite") && !fixed.contains("<script"));
    }

    #[test]
    fn a_missing_chart_script_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("ferrolab-no-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let err = crate::chart_script(Some(&dir)).expect_err("no script there");
        assert!(
            err.0.contains("make web") && err.0.contains("report-charts.js"),
            "{err}"
        );
        std::fs::write(dir.join("report-charts.js"), "draw()").expect("write");
        assert_eq!(&*crate::chart_script(Some(&dir)).expect("found"), "draw()");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn old_formats_are_refused_clearly() {
        let err = export(
            &json!({"nbformat": 3, "worksheets": []}),
            &Options::default(),
        )
        .expect_err("v3");
        assert!(err.0.contains("nbformat 3"));
    }
}
