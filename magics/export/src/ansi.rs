//! Terminal colours in streams and tracebacks, as escaped HTML spans.

use crate::sanitize::escape;

const COLOURS: [&str; 8] = [
    "black", "red", "green", "yellow", "blue", "magenta", "cyan", "white",
];

/// Text with ANSI SGR escapes → HTML: colours (30–37, 90–97, 38;5;n) and bold as
/// classes, every other escape dropped, all text escaped.
pub fn to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open = false;
    let mut rest = text;
    while let Some(start) = rest.find('\u{1b}') {
        out.push_str(&escape(&rest[..start]));
        let tail = &rest[start + 1..];
        // CSI: ESC [ params final-byte
        if let Some(body) = tail.strip_prefix('[') {
            let end = body
                .find(|c: char| ('@'..='~').contains(&c))
                .unwrap_or(body.len());
            let (params, final_byte) = (&body[..end], body[end..].chars().next());
            if final_byte == Some('m') {
                if open {
                    out.push_str("</span>");
                    open = false;
                }
                let classes = sgr_classes(params);
                if !classes.is_empty() {
                    out.push_str(&format!("<span class=\"{}\">", classes.join(" ")));
                    open = true;
                }
            }
            rest = &body[(end + final_byte.map_or(0, char::len_utf8)).min(body.len())..];
        } else {
            rest = tail;
        }
    }
    out.push_str(&escape(rest));
    if open {
        out.push_str("</span>");
    }
    out
}

fn sgr_classes(params: &str) -> Vec<String> {
    let codes: Vec<u32> = params.split(';').filter_map(|p| p.parse().ok()).collect();
    let mut classes = Vec::new();
    let mut i = 0;
    while i < codes.len() {
        match codes[i] {
            1 => classes.push("ansi-bold".to_string()),
            c @ 30..=37 => classes.push(format!("ansi-{}", COLOURS[(c - 30) as usize])),
            c @ 90..=97 => classes.push(format!("ansi-bright-{}", COLOURS[(c - 90) as usize])),
            38 if codes.get(i + 1) == Some(&5) => {
                if let Some(n) = codes.get(i + 2) {
                    if *n < 8 {
                        classes.push(format!("ansi-{}", COLOURS[*n as usize]));
                    } else if *n < 16 {
                        classes.push(format!("ansi-bright-{}", COLOURS[(*n - 8) as usize]));
                    } else {
                        classes.push("ansi-dim".to_string());
                    }
                }
                i += 2;
            }
            _ => {}
        }
        i += 1;
    }
    classes
}

#[cfg(test)]
mod tests {
    use super::to_html;

    #[test]
    fn colours_become_classes_and_text_is_escaped() {
        assert_eq!(
            to_html("\u{1b}[31mred <b>\u{1b}[0m plain"),
            "<span class=\"ansi-red\">red &lt;b&gt;</span> plain"
        );
        assert_eq!(
            to_html("\u{1b}[38;5;246m╭\u{1b}[0m"),
            "<span class=\"ansi-dim\">╭</span>"
        );
        assert_eq!(to_html("no escapes"), "no escapes");
        assert_eq!(to_html("\u{1b}[2Kcleared"), "cleared");
    }
}
