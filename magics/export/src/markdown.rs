//! Markdown cells rendered for reports (then sanitised), and the markdown export.

use crate::notebook::{text, Kind, Notebook};
use crate::sanitize::{self, escape, is_base64};
use crate::Options;
use base64::Engine;
use pulldown_cmark::{CowStr, Event, Options as MdOptions, Parser, Tag, TagEnd};
use serde_json::{Map, Value as Json};

/// A heading for the table of contents: level, text, the id it has in the report.
pub struct Heading {
    pub level: u8,
    pub text: String,
    pub id: String,
}

fn md_options() -> MdOptions {
    MdOptions::ENABLE_TABLES
        | MdOptions::ENABLE_STRIKETHROUGH
        | MdOptions::ENABLE_TASKLISTS
        | MdOptions::ENABLE_FOOTNOTES
        | MdOptions::ENABLE_MATH
}

/// The `data:` URL of a cell attachment that is an image, if it is one.
pub fn attachment_url(attachments: &Map<String, Json>, name: &str) -> Option<String> {
    let bundle = attachments.get(name)?.as_object()?;
    for mime in ["image/png", "image/jpeg", "image/gif", "image/webp"] {
        if let Some(data) = bundle.get(mime) {
            let data = text(Some(data));
            if is_base64(&data) {
                let data: String = data.split_whitespace().collect();
                return Some(format!("data:{mime};base64,{data}"));
            }
        }
    }
    if let Some(svg) = bundle.get("image/svg+xml") {
        let svg = text(Some(svg));
        let encoded = base64::engine::general_purpose::STANDARD.encode(sanitize::html(&svg));
        return Some(format!("data:image/svg+xml;base64,{encoded}"));
    }
    None
}

/// Renders a markdown cell to safe HTML; headings get ids `h<n>` (the report's
/// sanitiser prefixes them: `nb-h<n>`) and are returned for the contents.
pub fn render(
    source: &str,
    attachments: &Map<String, Json>,
    counter: &mut usize,
) -> (String, Vec<Heading>) {
    let mut headings = Vec::new();
    let mut current: Option<Heading> = None;
    let mut events = Vec::new();
    for event in Parser::new_ext(source, md_options()) {
        match event {
            Event::Start(Tag::Heading {
                level,
                classes,
                attrs,
                ..
            }) => {
                *counter += 1;
                let id = format!("h{counter}");
                current = Some(Heading {
                    level: level as u8,
                    text: String::new(),
                    id: format!("nb-{id}"),
                });
                events.push(Event::Start(Tag::Heading {
                    level,
                    id: Some(CowStr::from(id)),
                    classes,
                    attrs,
                }));
            }
            Event::End(TagEnd::Heading(level)) => {
                if let Some(h) = current.take() {
                    headings.push(h);
                }
                events.push(Event::End(TagEnd::Heading(level)));
            }
            Event::Text(t) | Event::Code(t) if current.is_some() => {
                if let Some(h) = current.as_mut() {
                    h.text.push_str(&t);
                }
                events.push(Event::Text(t));
            }
            Event::Start(Tag::Image {
                link_type,
                dest_url,
                title,
                id,
            }) => {
                let url = match dest_url.strip_prefix("attachment:") {
                    Some(name) => attachment_url(attachments, name).unwrap_or_default(),
                    None => dest_url.to_string(),
                };
                events.push(Event::Start(Tag::Image {
                    link_type,
                    dest_url: CowStr::from(url),
                    title,
                    id,
                }));
            }
            Event::InlineMath(tex) => events.push(Event::Html(CowStr::from(format!(
                "<span class=\"math math-inline\">{}</span>",
                escape(&tex)
            )))),
            Event::DisplayMath(tex) => events.push(Event::Html(CowStr::from(format!(
                "<div class=\"math math-display\">{}</div>",
                escape(&tex)
            )))),
            other => events.push(other),
        }
    }
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    (sanitize::html(&html), headings)
}

fn fence(body: &str, language: &str) -> String {
    let mut ticks = "```".to_string();
    while body.contains(&ticks) {
        ticks.push('`');
    }
    let body = body.strip_suffix('\n').unwrap_or(body);
    format!("{ticks}{language}\n{body}\n{ticks}\n\n")
}

/// A file name for the export's images: only safe characters, whatever the
/// notebook called the attachment.
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "file".into()
    } else {
        trimmed.chars().take(80).collect()
    }
}

struct Files<'a> {
    dir: Option<&'a str>,
    files: Vec<(String, Vec<u8>)>,
}

impl Files<'_> {
    /// A reference to `bytes` of type `mime`: a file beside the document, or a `data:` URL.
    fn add(&mut self, name: &str, mime: &str, bytes: Vec<u8>) -> String {
        match self.dir {
            Some(dir) => {
                let path = format!("{dir}/{}", safe_name(name));
                self.files.push((path.clone(), bytes));
                path.replace(' ', "%20")
            }
            None => format!(
                "data:{mime};base64,{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
        }
    }
}

const IMAGE_TYPES: [(&str, &str); 4] = [
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
];

fn decode(data: &str) -> Option<Vec<u8>> {
    let data: String = data.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(data).ok()
}

/// The notebook as markdown; images as files in `options.files_dir` (or inline).
pub fn export(nb: &Notebook, options: &Options) -> (String, Vec<(String, Vec<u8>)>) {
    let mut out = String::new();
    let mut files = Files {
        dir: options.files_dir.as_deref(),
        files: Vec::new(),
    };
    let title = options.title.clone().or_else(|| nb.title.clone());
    if let Some(title) = title {
        out.push_str(&format!("# {}\n\n", title.replace('\n', " ")));
    }
    for (index, cell) in nb.cells.iter().enumerate() {
        if cell.tagged("remove-cell") {
            continue;
        }
        match cell.kind {
            Kind::Markdown => {
                let mut source = cell.source.clone();
                for name in cell.attachments.keys() {
                    let reference = format!("attachment:{name}");
                    if !source.contains(&reference) {
                        continue;
                    }
                    let Some(bundle) = cell.attachments.get(name).and_then(Json::as_object) else {
                        continue;
                    };
                    let found = IMAGE_TYPES.iter().find_map(|(mime, ext)| {
                        bundle
                            .get(*mime)
                            .and_then(|d| decode(&text(Some(d))))
                            .map(|b| (*mime, *ext, b))
                    });
                    if let Some((mime, ext, bytes)) = found {
                        let file = files.add(
                            &format!("cell{index}-{}.{ext}", safe_name(name)),
                            mime,
                            bytes,
                        );
                        source = source.replace(&reference, &file);
                    }
                }
                out.push_str(source.trim_end());
                out.push_str("\n\n");
            }
            Kind::Raw => out.push_str(&fence(&cell.source, "")),
            Kind::Code => {
                if !options.no_input
                    && !cell.tagged("remove-input")
                    && !cell.source.trim().is_empty()
                {
                    out.push_str(&fence(&cell.source, &nb.language));
                }
                if cell.tagged("remove-output") {
                    continue;
                }
                for (n, output) in cell.outputs.iter().enumerate() {
                    out.push_str(&output_markdown(
                        output,
                        &mut files,
                        &format!("cell{index}-output{n}"),
                    ));
                }
            }
        }
    }
    (out, files.files)
}

fn output_markdown(output: &Json, files: &mut Files<'_>, stem: &str) -> String {
    match output.get("output_type").and_then(Json::as_str) {
        Some("stream") => fence(&strip_ansi(&text(output.get("text"))), "text"),
        Some("error") => {
            let lines: Vec<String> = match output.get("traceback") {
                Some(Json::Array(lines)) if !lines.is_empty() => {
                    lines.iter().map(|l| strip_ansi(&text(Some(l)))).collect()
                }
                _ => vec![format!(
                    "{}: {}",
                    text(output.get("ename")),
                    text(output.get("evalue"))
                )],
            };
            fence(&lines.join("\n"), "text")
        }
        Some("display_data" | "execute_result") => {
            let Some(data) = output.get("data").and_then(Json::as_object) else {
                return String::new();
            };
            for (mime, ext) in IMAGE_TYPES {
                if let Some(bytes) = data.get(mime).and_then(|d| decode(&text(Some(d)))) {
                    let file = files.add(&format!("{stem}.{ext}"), mime, bytes);
                    return format!("![output]({file})\n\n");
                }
            }
            if let Some(svg) = data.get("image/svg+xml") {
                let clean = sanitize::html(&text(Some(svg)));
                let file = files.add(&format!("{stem}.svg"), "image/svg+xml", clean.into_bytes());
                return format!("![chart]({file})\n\n");
            }
            if let Some(md) = data.get("text/markdown") {
                return format!("{}\n\n", text(Some(md)).trim_end());
            }
            if let Some(html) = data.get("text/html") {
                return format!("{}\n\n", sanitize::html(&text(Some(html))).trim_end());
            }
            if let Some(plain) = data.get("text/plain") {
                return fence(&strip_ansi(&text(Some(plain))), "text");
            }
            String::new()
        }
        _ => String::new(),
    }
}

/// Text without terminal escapes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_get_ids_and_raw_html_is_sanitised() {
        let mut n = 0;
        let (html, headings) = render(
            "# Results <script>alert(1)</script>\n\nSome $x^2$ and <img src=x onerror=alert(2)>\n\n| a | b |\n|---|---|\n| 1 | 2 |",
            &Map::new(),
            &mut n,
        );
        assert_eq!(headings.len(), 1);
        assert_eq!(headings[0].id, "nb-h1");
        assert!(headings[0].text.starts_with("Results"));
        assert!(html.contains("id=\"nb-h1\""), "{html}");
        assert!(html.contains("<table>"));
        assert!(html.contains("class=\"math math-inline\""), "{html}");
        assert!(
            !html.contains("<script") && !html.contains("onerror"),
            "{html}"
        );
    }

    #[test]
    fn attachment_images_inline_and_names_are_made_safe() {
        let mut attachments = Map::new();
        attachments.insert(
            "a\"b.png".into(),
            serde_json::json!({"image/png": "iVBORw0KGgo="}),
        );
        let mut n = 0;
        let (html, _) = render("![x](attachment:a\"b.png)", &attachments, &mut n);
        assert!(
            html.contains("src=\"data:image/png;base64,iVBORw0KGgo=\""),
            "{html}"
        );
        assert_eq!(safe_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_name("<x>.png"), "_x_.png");
    }
}
