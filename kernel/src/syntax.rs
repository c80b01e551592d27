//! Just enough Rust lexing to answer `is_complete_request` and to find the magic
//! lines in a cell, without waiting for the evaluation context.
//!
//! The lexer tracks brackets, strings, raw strings, char literals versus lifetimes
//! and nested block comments. Balanced code is then parsed by rust-analyzer's parser
//! (the one evcxr uses) to tell valid from invalid.

use ra_ap_syntax::{Edition, SourceFile};

/// The answer to `is_complete_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    Complete,
    /// More input is needed; `indent` is what the next line should start with.
    Incomplete {
        indent: String,
    },
    Invalid,
}

/// Where the lexer stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scan {
    /// Open brackets, innermost last.
    open: Vec<char>,
    /// The input ends inside a string, char literal or block comment.
    unterminated: bool,
    /// A closing bracket did not match.
    mismatched: bool,
    /// The last character outside comments and whitespace.
    last_significant: Option<char>,
    /// Bracket depth at the start of each line.
    line_depths: Vec<usize>,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn scan(code: &str) -> Scan {
    let chars: Vec<char> = code.chars().collect();
    let mut s = Scan {
        open: Vec::new(),
        unterminated: false,
        mismatched: false,
        last_significant: None,
        line_depths: vec![0],
    };
    let mut i = 0;
    let n = chars.len();
    let newline = |s: &mut Scan, depth: usize| s.line_depths.push(depth);
    while i < n {
        let c = chars[i];
        match c {
            '\n' => {
                let depth = s.open.len();
                newline(&mut s, depth);
                i += 1;
            }
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < n && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let mut depth = 1;
                i += 2;
                while i < n && depth > 0 {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                    } else {
                        if chars[i] == '\n' {
                            let d = s.open.len();
                            newline(&mut s, d);
                        }
                        i += 1;
                    }
                }
                if depth > 0 {
                    s.unterminated = true;
                }
            }
            'r' if (i == 0
                || !is_ident_char(chars[i - 1])
                || (chars[i - 1] == 'b' || chars[i - 1] == 'c')
                    && (i < 2 || !is_ident_char(chars[i - 2])))
                && matches!(chars.get(i + 1), Some('"') | Some('#')) =>
            {
                // Raw string r"…" or r#"…"#; `r#ident` is a raw identifier.
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    i = j;
                    s.last_significant = Some('#');
                    continue;
                }
                j += 1;
                let mut closed = false;
                while j < n {
                    if chars[j] == '\n' {
                        let d = s.open.len();
                        newline(&mut s, d);
                    }
                    if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                        j += 1 + hashes;
                        closed = true;
                        break;
                    }
                    j += 1;
                }
                if !closed {
                    s.unterminated = true;
                }
                s.last_significant = Some('"');
                i = j;
            }
            '"' => {
                let mut j = i + 1;
                let mut closed = false;
                while j < n {
                    match chars[j] {
                        '\\' => j += 2,
                        '"' => {
                            closed = true;
                            j += 1;
                            break;
                        }
                        '\n' => {
                            let d = s.open.len();
                            newline(&mut s, d);
                            j += 1;
                        }
                        _ => j += 1,
                    }
                }
                if !closed {
                    s.unterminated = true;
                }
                s.last_significant = Some('"');
                i = j.min(n);
            }
            '\'' => {
                // 'a', '\n', '\u{1F600}' are chars; 'a and 'label are lifetimes.
                if chars.get(i + 1) == Some(&'\\') {
                    // Skip the backslash and the escaped character (which may be `'`).
                    let mut j = i + 3;
                    while j < n && chars[j] != '\'' && chars[j] != '\n' {
                        j += 1;
                    }
                    if j >= n || chars[j] != '\'' {
                        s.unterminated = true;
                    }
                    i = (j + 1).min(n);
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else if i + 1 >= n {
                    s.unterminated = true;
                    i += 1;
                } else {
                    i += 1;
                    while i < n && is_ident_char(chars[i]) {
                        i += 1;
                    }
                }
                s.last_significant = Some('\'');
            }
            '(' | '[' | '{' => {
                s.open.push(c);
                s.last_significant = Some(c);
                i += 1;
            }
            ')' | ']' | '}' => {
                let expected = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if s.open.pop() != Some(expected) {
                    s.mismatched = true;
                }
                s.last_significant = Some(c);
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            c => {
                s.last_significant = Some(c);
                i += 1;
            }
        }
    }
    s
}

/// Lines that the kernel or evcxr handle before Rust sees the code: `%` magics and
/// evcxr's `:` commands, at the top level of the cell.
fn is_command_line(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with('%') || t.starts_with(':')
}

/// Decides whether `code` is a complete cell, needs more lines, or cannot be valid.
pub fn is_complete(code: &str) -> Completeness {
    if code.trim_start().starts_with("%%") {
        return Completeness::Complete;
    }
    let scan = scan(code);
    if scan.mismatched {
        return Completeness::Invalid;
    }
    if scan.unterminated || !scan.open.is_empty() {
        return Completeness::Incomplete {
            indent: "    ".repeat(scan.open.len()),
        };
    }
    // A trailing operator means the expression goes on.
    if matches!(
        scan.last_significant,
        Some('=' | '+' | '-' | '*' | '/' | '%' | '&' | '|' | '^' | ',' | '.' | '<' | '!')
    ) && !code.trim_end().ends_with("..")
        && !last_line_is_command(code)
    {
        return Completeness::Incomplete {
            indent: String::new(),
        };
    }
    let rust: String = code
        .lines()
        .zip(scan.line_depths.iter())
        .map(|(line, depth)| {
            if *depth == 0 && is_command_line(line) {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let wrapped = format!("fn __ferrolab_cell() {{\n{rust}\n}}\n");
    let parse = SourceFile::parse(&wrapped, Edition::Edition2021);
    if parse.errors().is_empty() {
        Completeness::Complete
    } else {
        Completeness::Invalid
    }
}

fn last_line_is_command(code: &str) -> bool {
    code.trim_end().lines().last().is_some_and(is_command_line)
}

/// One piece of a cell, run in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Rust code (and evcxr `:` commands) for the evaluation context.
    Rust(String),
    /// A `%` line magic, or a whole `%%` cell magic.
    Magic(String),
}

/// Splits a cell into Rust code and magic invocations. A cell starting with `%%` is
/// one cell magic; otherwise each `%` line outside any bracket is a line magic, and
/// the Rust lines between them run as separate evcxr evaluations (they share state).
pub fn segments(code: &str) -> Vec<Segment> {
    if code.trim_start().starts_with("%%") {
        return vec![Segment::Magic(code.trim_start().to_string())];
    }
    let scan = scan(code);
    let mut out = Vec::new();
    let mut rust = String::new();
    // evcxr takes `:` commands only before any code in an evaluation, so a command
    // after code starts a new evaluation.
    let mut has_code = false;
    for (line, depth) in code.split('\n').zip(scan.line_depths.iter()) {
        let top = *depth == 0;
        let trimmed = line.trim_start();
        if top && trimmed.starts_with('%') {
            if !rust.trim().is_empty() {
                rust.pop();
                out.push(Segment::Rust(std::mem::take(&mut rust)));
            }
            rust.clear();
            has_code = false;
            out.push(Segment::Magic(line.trim().to_string()));
            continue;
        }
        if top && trimmed.starts_with(':') && has_code {
            rust.pop();
            out.push(Segment::Rust(std::mem::take(&mut rust)));
            has_code = false;
        }
        if !(trimmed.is_empty() || top && trimmed.starts_with(':')) {
            has_code = true;
        }
        rust.push_str(line);
        rust.push('\n');
    }
    if !rust.trim().is_empty() {
        // Keep the user's text exactly, less the newline we added.
        rust.pop();
        out.push(Segment::Rust(rust));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incomplete(indent: &str) -> Completeness {
        Completeness::Incomplete {
            indent: indent.to_string(),
        }
    }

    #[test]
    fn completeness_table() {
        let cases: &[(&str, Completeness)] = &[
            ("1 + 1", Completeness::Complete),
            ("let x = 1;", Completeness::Complete),
            ("fn f() -> i32 { 1 }", Completeness::Complete),
            (
                "struct P { x: i32 }\nimpl P { fn x(&self) -> i32 { self.x } }",
                Completeness::Complete,
            ),
            ("let s = \"a { b\";", Completeness::Complete),
            ("let s = r#\"a \" { b\"#;", Completeness::Complete),
            ("let c = '{';", Completeness::Complete),
            ("let q = '\\''; let b = '{';", Completeness::Complete),
            (
                "fn f<'a>(x: &'a str) -> &'a str { x }",
                Completeness::Complete,
            ),
            ("// a comment with {\n1", Completeness::Complete),
            ("/* nested /* { */ */ 1", Completeness::Complete),
            (":dep serde\nlet x = 1;", Completeness::Complete),
            ("%time 1 + 1", Completeness::Complete),
            ("%%html\n<div>", Completeness::Complete),
            ("let r = 0..;", Completeness::Complete),
            ("fn f() {", incomplete("    ")),
            ("fn f() {\n    if x {", incomplete("        ")),
            ("let v = vec![1,", incomplete("    ")),
            ("let s = \"abc", incomplete("")),
            ("let s = r#\"abc\"", incomplete("")),
            ("/* open comment", incomplete("")),
            ("let x = 1 +", incomplete("")),
            ("let x =", incomplete("")),
            ("fn f() }", Completeness::Invalid),
            ("let x = (1];", Completeness::Invalid),
            ("let x = );", Completeness::Invalid),
            ("let = 5;", Completeness::Invalid),
            ("fn 1x() {}", Completeness::Invalid),
        ];
        for (code, expected) in cases {
            assert_eq!(&is_complete(code), expected, "code: {code:?}");
        }
    }

    #[test]
    fn segments_split_magics_from_rust() {
        assert_eq!(
            segments("let x = 1;\n%time x + 1\nx * 2"),
            vec![
                Segment::Rust("let x = 1;".into()),
                Segment::Magic("%time x + 1".into()),
                Segment::Rust("x * 2".into()),
            ]
        );
        assert_eq!(
            segments("%%html\n<b>x</b>\n%not a line magic"),
            vec![Segment::Magic("%%html\n<b>x</b>\n%not a line magic".into())]
        );
        // A `%` inside a bracket is the remainder operator, not a magic.
        assert_eq!(
            segments("let x = (10\n% 3);"),
            vec![Segment::Rust("let x = (10\n% 3);".into())]
        );
        assert_eq!(segments("  \n"), vec![]);
        // evcxr commands after code start a new evaluation; before code they stay.
        assert_eq!(
            segments(":dep regex\nlet x = 1;\n:vars"),
            vec![
                Segment::Rust(":dep regex\nlet x = 1;".into()),
                Segment::Rust(":vars".into()),
            ]
        );
    }

    #[test]
    fn scanner_survives_arbitrary_input() {
        let nasty = "r#\"'\\\"/*{[(\u{0}'a'\\'\"#r\"b'";
        for end in nasty.char_indices().map(|(i, _)| i) {
            let _ = is_complete(&nasty[..end]);
            let _ = segments(&nasty[..end]);
        }
    }
}
