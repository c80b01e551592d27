//! Parsing `%name args` and `%%name args\nbody` invocations, with shell-like quoting.

use std::fmt;

/// Whether a magic was invoked on one line (`%`) or for a whole cell (`%%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MagicKind {
    Line,
    Cell,
}

impl MagicKind {
    pub fn prefix(self) -> &'static str {
        match self {
            MagicKind::Line => "%",
            MagicKind::Cell => "%%",
        }
    }
}

/// One parsed magic invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub kind: MagicKind,
    pub name: String,
    /// The arguments after the name, split with shell-like quoting.
    pub args: Vec<String>,
    /// The arguments exactly as typed (for magics that take code, such as `%time`).
    pub raw_args: String,
    /// For cell magics, every line after the first; empty for line magics.
    pub body: String,
    /// `%name?` asks for the magic's help instead of running it.
    pub help: bool,
}

/// Why an invocation could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a cell or line that starts with `%` or `%%`.
///
/// Returns `Ok(None)` when `source` is not a magic at all (leading whitespace and
/// blank lines before the magic are allowed).
pub fn parse(source: &str) -> Result<Option<Invocation>, ParseError> {
    let trimmed = source.trim_start();
    let (kind, rest) = if let Some(rest) = trimmed.strip_prefix("%%") {
        (MagicKind::Cell, rest)
    } else if let Some(rest) = trimmed.strip_prefix('%') {
        (MagicKind::Line, rest)
    } else {
        return Ok(None);
    };
    let (first_line, body) = match (kind, rest.split_once('\n')) {
        (MagicKind::Cell, Some((line, body))) => (line, body),
        (MagicKind::Cell, None) => (rest, ""),
        (MagicKind::Line, Some((line, more))) => {
            if !more.trim().is_empty() {
                return Err(ParseError {
                    message: "a line magic takes one line; use %% for a cell magic, \
                              or put each line magic on its own line"
                        .into(),
                });
            }
            (line, "")
        }
        (MagicKind::Line, None) => (rest, ""),
    };
    let first_line = first_line.trim_end_matches('\r');
    let name_end = first_line
        .find(|c: char| c.is_whitespace())
        .unwrap_or(first_line.len());
    let mut name = &first_line[..name_end];
    let raw_args = first_line[name_end..].trim().to_string();
    let mut help = false;
    if let Some(stripped) = name.strip_suffix('?') {
        name = stripped;
        help = true;
    }
    if name.is_empty() {
        return Err(ParseError {
            message: format!(
                "`{}` needs a magic name after it, as in `{}lsmagic`",
                kind.prefix(),
                kind.prefix()
            ),
        });
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ParseError {
            message: format!(
                "`{}{name}` is not a magic name: names use letters, digits, `_` and `-`",
                kind.prefix()
            ),
        });
    }
    let args = split_args(&raw_args).map_err(|message| ParseError {
        message: format!("in `{}{name}`: {message}", kind.prefix()),
    })?;
    Ok(Some(Invocation {
        kind,
        name: name.to_string(),
        args,
        raw_args,
        body: body.to_string(),
        help,
    }))
}

/// Splits an argument string the way a POSIX shell would: whitespace separates,
/// `'…'` is literal, `"…"` allows `\"` and `\\`, and a backslash outside quotes
/// escapes the next character.
pub fn split_args(input: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = input.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, c)) => current.push(c),
                        None => {
                            return Err(format!(
                                "unterminated ' quote starting at column {}",
                                pos + 1
                            ))
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, c @ ('"' | '\\' | '$' | '`'))) => current.push(c),
                            Some((_, c)) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => {
                                return Err(format!(
                                    "unterminated \" quote starting at column {}",
                                    pos + 1
                                ))
                            }
                        },
                        Some((_, c)) => current.push(c),
                        None => {
                            return Err(format!(
                                "unterminated \" quote starting at column {}",
                                pos + 1
                            ))
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some((_, c)) => current.push(c),
                    None => current.push('\\'),
                }
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        args.push(current);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_args_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("a b  c", &["a", "b", "c"]),
            ("'a b' c", &["a b", "c"]),
            (r#""a \"b\"" c"#, &["a \"b\"", "c"]),
            (r#""C:\path""#, &[r"C:\path"]),
            (r"a\ b", &["a b"]),
            ("--sep=';' x", &["--sep=;", "x"]),
            ("''", &[""]),
            ("héllo wörld", &["héllo", "wörld"]),
        ];
        for (input, expected) in cases {
            let got = split_args(input).unwrap();
            assert_eq!(&got, expected, "input {input:?}");
        }
    }

    #[test]
    fn split_args_reports_unterminated_quotes() {
        let err = split_args("a 'b c").unwrap_err();
        assert!(err.contains("unterminated ' quote"), "{err}");
        assert!(err.contains("column 3"), "{err}");
        assert!(split_args("\"abc").unwrap_err().contains('"'));
    }

    #[test]
    fn parses_line_and_cell_magics() {
        let inv = parse("%env FOO=bar").unwrap().unwrap();
        assert_eq!(inv.kind, MagicKind::Line);
        assert_eq!(inv.name, "env");
        assert_eq!(inv.args, vec!["FOO=bar"]);
        assert!(inv.body.is_empty());

        let inv = parse("\n  %%html --x 'a b'\n<b>hi</b>\nmore")
            .unwrap()
            .unwrap();
        assert_eq!(inv.kind, MagicKind::Cell);
        assert_eq!(inv.name, "html");
        assert_eq!(inv.args, vec!["--x", "a b"]);
        assert_eq!(inv.raw_args, "--x 'a b'");
        assert_eq!(inv.body, "<b>hi</b>\nmore");

        let inv = parse("%time 1 + 1").unwrap().unwrap();
        assert_eq!(inv.raw_args, "1 + 1");
    }

    #[test]
    fn question_mark_asks_for_help() {
        let inv = parse("%time?").unwrap().unwrap();
        assert!(inv.help);
        assert_eq!(inv.name, "time");
    }

    #[test]
    fn not_a_magic() {
        assert_eq!(parse("let x = 1 % 2;").unwrap(), None);
        assert_eq!(parse(":dep serde").unwrap(), None);
    }

    #[test]
    fn rejects_bad_names_and_stray_lines() {
        assert!(parse("%")
            .unwrap_err()
            .message
            .contains("needs a magic name"));
        assert!(parse("%%").unwrap_err().message.contains("%%lsmagic"));
        assert!(parse("%a.b")
            .unwrap_err()
            .message
            .contains("not a magic name"));
        assert!(parse("%env\nlet x = 1;")
            .unwrap_err()
            .message
            .contains("one line"));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A cheap deterministic fuzz: every prefix of a nasty string.
        let nasty = "%%a'b\"c\\\n%x \"\\\u{0}é'\r\n\t%%%?";
        for end in nasty.char_indices().map(|(i, _)| i) {
            let _ = parse(&nasty[..end]);
            let _ = split_args(&nasty[..end]);
        }
    }
}
