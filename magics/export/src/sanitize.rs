//! The allow-list every piece of HTML or SVG from a notebook goes through before
//! it reaches a report (outputs, rendered markdown, attachments), and escaping for
//! everything else. See `docs/export.md` for the threat model.

use ammonia::{Builder, UrlRelative};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// SVG drawing elements: shapes, text, gradients, clipping. Not `use`, `image`,
/// `foreignObject`, `a`, `script`, `style` or animation, which can load, link,
/// embed HTML or run code.
const SVG_TAGS: &[&str] = &[
    "svg",
    "g",
    "path",
    "rect",
    "circle",
    "ellipse",
    "line",
    "polyline",
    "polygon",
    "text",
    "tspan",
    "title",
    "desc",
    "defs",
    "clipPath",
    "linearGradient",
    "radialGradient",
    "stop",
    "marker",
    "symbol",
];

const SVG_ATTRIBUTES: &[&str] = &[
    "viewBox",
    "width",
    "height",
    "x",
    "y",
    "x1",
    "y1",
    "x2",
    "y2",
    "cx",
    "cy",
    "r",
    "rx",
    "ry",
    "d",
    "points",
    "fill",
    "fill-opacity",
    "fill-rule",
    "stroke",
    "stroke-width",
    "stroke-opacity",
    "stroke-dasharray",
    "stroke-linecap",
    "stroke-linejoin",
    "opacity",
    "transform",
    "font-family",
    "font-size",
    "font-weight",
    "font-style",
    "text-anchor",
    "dominant-baseline",
    "dx",
    "dy",
    "clip-path",
    "offset",
    "stop-color",
    "stop-opacity",
    "gradientUnits",
    "gradientTransform",
    "markerWidth",
    "markerHeight",
    "refX",
    "refY",
    "orient",
    "preserveAspectRatio",
    "xmlns",
    "version",
    "role",
    "aria-label",
    "clipPathUnits",
    "marker-start",
    "marker-end",
    "marker-mid",
    "visibility",
    "display",
];

fn builder() -> &'static Builder<'static> {
    static BUILDER: OnceLock<Builder<'static>> = OnceLock::new();
    BUILDER.get_or_init(|| {
        let mut b = Builder::default();
        b.add_tags(SVG_TAGS.iter().copied());
        for tag in SVG_TAGS {
            b.add_tag_attributes(*tag, SVG_ATTRIBUTES.iter().copied());
        }
        b.add_tag_attributes("img", ["width", "height", "alt", "src"]);
        b.add_tags(["details", "summary", "figure", "figcaption", "caption"]);
        b.add_tag_attributes("td", ["colspan", "rowspan", "align"]);
        b.add_tag_attributes("th", ["colspan", "rowspan", "align", "scope"]);
        for heading in ["h1", "h2", "h3", "h4", "h5", "h6"] {
            b.add_tag_attributes(heading, ["id"]);
        }
        // Ids a notebook chooses cannot clobber the report's own.
        b.id_prefix(Some("nb-"));
        let mut classes: HashMap<&str, HashSet<&str>> = HashMap::new();
        classes.insert("span", ["math", "math-inline"].into_iter().collect());
        classes.insert("div", ["math", "math-display"].into_iter().collect());
        b.allowed_classes(classes);
        b.url_schemes(["http", "https", "mailto", "data"].into_iter().collect());
        // Relative URLs would be fetched from wherever the report is opened.
        b.url_relative(UrlRelative::Deny);
        b.link_rel(Some("noopener noreferrer nofollow"));
        b.attribute_filter(filter_url);
        b
    })
}

/// Images only from `data:` URLs of image types (a report never loads anything);
/// links never to `data:` (a page made of the notebook's own bytes).
fn filter_url<'u>(element: &str, attribute: &str, value: &'u str) -> Option<Cow<'u, str>> {
    let lower = value.trim_start().to_ascii_lowercase();
    match (element, attribute) {
        ("img", "src") => is_image_data_url(&lower).then_some(Cow::Borrowed(value)),
        (_, "href") if lower.starts_with("data:") => None,
        (_, "src" | "srcset" | "poster" | "background" | "cite" | "longdesc") => None,
        _ => Some(Cow::Borrowed(value)),
    }
}

/// `data:image/(png|jpeg|gif|webp|svg+xml)[;base64],…`
pub fn is_image_data_url(lower: &str) -> bool {
    ["png", "jpeg", "gif", "webp", "svg+xml"]
        .iter()
        .any(|kind| {
            lower.starts_with(&format!("data:image/{kind};"))
                || lower.starts_with(&format!("data:image/{kind},"))
        })
}

/// HTML from a notebook (outputs, rendered markdown), made safe.
pub fn html(untrusted: &str) -> String {
    builder().clean(untrusted).to_string()
}

/// Escapes text for HTML element content and quoted attribute values (the
/// magics' own escaping, shared).
pub use ferrolab_magics::escape_html as escape;

/// True when `data` is plain base64 (what an image output must be before it goes
/// into a `data:` URL): no quotes, angle brackets or other ways out of the attribute.
pub fn is_base64(data: &str) -> bool {
    !data.is_empty()
        && data.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r' | b' ')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_handlers_and_remote_loads_are_removed() {
        let out = html(
            r#"<p onclick="x()">hi</p><script>alert(1)</script><img src="http://evil/x.png" onerror="alert(2)"><a href="javascript:alert(3)">j</a><a href="data:text/html,<script>alert(4)</script>">d</a><iframe src="https://evil"></iframe><style>body{}</style>"#,
        );
        for bad in [
            "onclick",
            "<script",
            "alert(1)",
            "onerror",
            "http://evil",
            "javascript:",
            "data:text",
            "<iframe",
            "<style",
        ] {
            assert!(!out.contains(bad), "{bad} survived in {out}");
        }
        assert!(out.contains("<p>hi</p>"));
    }

    #[test]
    fn svg_drawings_survive_and_svg_tricks_do_not() {
        let out = html(
            r#"<svg viewBox="0 0 10 10" onload="alert(1)"><script>alert(2)</script><rect width="5" height="5" fill="red"/><use href="http://evil#x"/><foreignObject><iframe src="x"></iframe></foreignObject><animate attributeName="href" to="javascript:alert(3)"/></svg>"#,
        );
        assert!(out.contains("<rect"), "{out}");
        assert!(out.contains("viewBox"), "{out}");
        for bad in [
            "onload",
            "<script",
            "<use",
            "foreignObject",
            "<iframe",
            "animate",
            "javascript",
        ] {
            assert!(!out.contains(bad), "{bad} survived in {out}");
        }
    }

    #[test]
    fn data_images_only() {
        let png = r#"<img src="data:image/png;base64,AAAA"><img src="data:text/html;base64,PHNjcmlwdD4="><img src="x.png">"#;
        let out = html(png);
        assert_eq!(out.matches("src=").count(), 1, "{out}");
        assert!(out.contains("data:image/png;base64,AAAA"));
    }

    #[test]
    fn escaping_and_base64() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert!(is_base64("iVBORw0KGgo=\n"));
        assert!(!is_base64("AAAA\" onerror=\"x"));
        assert!(!is_base64(""));
    }
}
