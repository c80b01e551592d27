//! Code highlighting for reports: a small tokenizer (keywords, strings, comments,
//! numbers, macros, types, magics) that escapes everything it emits.

use crate::sanitize::escape;

const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while",
];

const SQL_KEYWORDS: &[&str] = &[
    "select", "from", "where", "group", "by", "order", "limit", "join", "left", "inner", "on",
    "as", "and", "or", "not", "count", "sum", "avg", "min", "max", "having", "desc", "asc", "with",
    "distinct", "case", "when", "then", "else", "end", "null", "is", "in",
];

fn span(class: &str, text: &str) -> String {
    format!("<span class=\"{class}\">{}</span>", escape(text))
}

/// Highlighted, escaped HTML for a cell's source.
pub fn code(source: &str, language: &str) -> String {
    let sql = source.trim_start().starts_with("%%sql");
    let keywords: &[&str] = if sql {
        SQL_KEYWORDS
    } else if language == "rust" {
        RUST_KEYWORDS
    } else {
        &[]
    };
    let mut out = String::with_capacity(source.len() * 2);
    for (n, line) in source.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        // Magic lines (%load, %%sql …) are commands, not Rust.
        if trimmed.starts_with('%') && (n == 0 || !trimmed.starts_with("%%")) {
            out.push_str(&span("magic", line));
            continue;
        }
        out.push_str(&tokens(line, keywords, sql));
    }
    out
}

fn tokens(line: &str, keywords: &[&str], sql: bool) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let rest: String = chars[i..].iter().collect();
        if (!sql && rest.starts_with("//")) || (sql && rest.starts_with("--")) {
            out.push_str(&span("comment", &rest));
            break;
        }
        if c == '"' || (sql && c == '\'') {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                if chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            let end = (j + 1).min(chars.len());
            out.push_str(&span("string", &chars[i..end].iter().collect::<String>()));
            i = end;
            continue;
        }
        if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_ascii_alphanumeric() || chars[j] == '_' || chars[j] == '.')
            {
                j += 1;
            }
            out.push_str(&span("number", &chars[i..j].iter().collect::<String>()));
            i = j;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let mut j = i;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            let lower = word.to_ascii_lowercase();
            let class = if keywords.contains(&if sql { lower.as_str() } else { word.as_str() }) {
                Some("keyword")
            } else if !sql && chars.get(j) == Some(&'!') {
                Some("macro")
            } else if !sql && word.starts_with(|c: char| c.is_uppercase()) {
                Some("type")
            } else {
                None
            };
            match class {
                Some(class) => out.push_str(&span(class, &word)),
                None => out.push_str(&escape(&word)),
            }
            i = j;
            continue;
        }
        out.push_str(&escape(&c.to_string()));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::code;

    #[test]
    fn rust_is_highlighted_and_escaped() {
        let html = code(
            "let x = \"<b>\"; // note\nprintln!(\"{}\", Vec::<u8>::new());",
            "rust",
        );
        assert!(html.contains("<span class=\"keyword\">let</span>"));
        assert!(html.contains("<span class=\"string\">&quot;&lt;b&gt;&quot;</span>"));
        assert!(html.contains("<span class=\"comment\">// note\n</span>"));
        assert!(html.contains("<span class=\"macro\">println</span>"));
        assert!(!html.contains("<b>"));
    }

    #[test]
    fn magics_and_sql() {
        let html = code("%%sql\nSELECT a FROM t -- c", "rust");
        assert!(html.starts_with("<span class=\"magic\">%%sql\n</span>"));
        assert!(html.contains("<span class=\"keyword\">SELECT</span>"));
        assert!(html.contains("<span class=\"comment\">-- c</span>"));
    }
}
