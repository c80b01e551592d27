//! The kernel's side of what every Rust cell has in scope (the `ferrolab_cell`
//! crate, `kernel/cell/`): the line protocol its output functions speak on stdout,
//! `input()`'s encoding, and the value display settings.
//!
//! The cell API runs in evcxr's evaluation process. Output that needs no answer is
//! one line on stdout that starts with [`MARKER`] followed by a JSON object; the
//! kernel's output relay turns those lines into `display_data`,
//! `update_display_data` or panic reports instead of `stream` text. Calls that need
//! an answer go over a socket ([`crate::cell_calls`]).

use serde_json::Value;

/// Starts every prelude line on stdout; a control character no user text begins with.
pub const MARKER: &str = "\u{1}ferrolab:";

/// Prefix of an `input()` prompt encoded by the prelude (see [`decode`]).
pub const INPUT_PREFIX: &str = "\u{1}ferrolab-input~";

/// What the input callback answers when the client does not allow stdin.
pub const NO_STDIN: &str = "\u{1}no-stdin";

/// Run once when the evaluation process starts (and again after it is replaced):
/// brings the cell API into every cell's scope and installs its panic reporter.
pub const START_CELL_API: &str = "use ferrolab_cell::*;\nferrolab_cell::__ferrolab_start();";

/// The environment variable the prelude's value display reads.
pub const DISPLAY_VAR: &str = "FERROLAB_DISPLAY";

/// How cell values are shown, as set by evcxr's `:fmt` and `:types`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisplayMode {
    pub pretty: bool,
    pub types: bool,
}

impl DisplayMode {
    pub fn value(&self) -> String {
        let mut parts = Vec::new();
        if self.pretty {
            parts.push("pretty");
        }
        if self.types {
            parts.push("types");
        }
        parts.join(",")
    }

    /// Applies the `:fmt` and `:types` commands at the top of `code`; returns the
    /// formats the prelude cannot honour.
    pub fn apply_commands(&mut self, code: &str) -> Vec<String> {
        let mut unsupported = Vec::new();
        for line in code.lines().map(str::trim) {
            if !line.starts_with(':') {
                if line.is_empty() {
                    continue;
                }
                break;
            }
            let mut words = line.splitn(2, char::is_whitespace);
            match (words.next(), words.next().map(str::trim)) {
                (Some(":types"), _) => self.types = !self.types,
                (Some(":fmt"), Some("{:?}")) => self.pretty = false,
                (Some(":fmt"), Some("{:#?}")) => self.pretty = true,
                (Some(":fmt"), Some(other)) => unsupported.push(other.to_string()),
                _ => {}
            }
        }
        unsupported
    }
}

/// Defines, then moves away, a variable: warms rust-analyzer's type inference.
pub const WARM_UP_VARIABLE: [&str; 2] = [
    "let __ferrolab_warm_up = String::from(\"warm\");",
    "drop(__ferrolab_warm_up);",
];

/// One prelude line, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Display {
        id: String,
        mime: String,
        data: Value,
    },
    Update {
        id: String,
        mime: String,
        data: Value,
    },
    Clear {
        wait: bool,
    },
    Panic {
        location: String,
        message: String,
        backtrace: String,
    },
}

/// Decodes a stdout line from the evaluation process. `None` for ordinary output.
pub fn decode(line: &str) -> Option<Event> {
    let json = line.strip_prefix(MARKER)?;
    let value: Value = serde_json::from_str(json).ok()?;
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
    let mime = field("mime").to_string();
    let raw = field("data");
    // Jupyter wants JSON MIME types as JSON values, not strings.
    let data = if mime.ends_with("json") && field("kind") != "panic" {
        serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw))
    } else {
        Value::from(raw)
    };
    let id = field("id").to_string();
    match field("kind") {
        "display" => Some(Event::Display { id, mime, data }),
        "update" => Some(Event::Update { id, mime, data }),
        "clear" => Some(Event::Clear {
            wait: raw == "wait",
        }),
        "panic" => Some(Event::Panic {
            location: id,
            message: raw.to_string(),
            // The panic line carries the backtrace in the `mime` slot.
            backtrace: mime,
        }),
        _ => None,
    }
}

/// Turns the prompt evcxr hands to the input callback back into the user's text.
/// Returns `None` for prompts that did not come from the prelude's `input()`.
pub fn decode_prompt(prompt: &str) -> Option<String> {
    prompt.strip_prefix(INPUT_PREFIX).map(unpercent)
}

/// Encodes an answer so that it stays one line on the way to the evaluation process.
pub fn encode_answer(answer: &str) -> String {
    let mut out = String::with_capacity(answer.len());
    for c in answer.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}

fn unpercent(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_display_lines() {
        let line = format!(
            "{MARKER}{{\"kind\":\"display\",\"id\":\"d1\",\"mime\":\"application/json\",\"data\":\"{{\\\"a\\\":1}}\"}}"
        );
        assert_eq!(
            decode(&line),
            Some(Event::Display {
                id: "d1".into(),
                mime: "application/json".into(),
                data: serde_json::json!({"a": 1}),
            })
        );
        assert_eq!(decode("plain output"), None);
        assert_eq!(decode(&format!("{MARKER}not json")), None);
    }

    #[test]
    fn display_mode_follows_fmt_and_types() {
        let mut mode = DisplayMode::default();
        assert!(mode
            .apply_commands(":fmt {:#?}\n:types\nlet x = 1;\n:types")
            .is_empty());
        assert_eq!(mode.value(), "pretty,types");
        assert_eq!(mode.apply_commands(":fmt {:x}"), vec!["{:x}".to_string()]);
        mode.apply_commands(":fmt {:?}");
        assert_eq!(mode.value(), "types");
    }

    #[test]
    fn prompts_and_answers_round_trip() {
        assert_eq!(
            decode_prompt(&format!("{INPUT_PREFIX}Name%3A %25 %0A")).as_deref(),
            Some("Name: % \n")
        );
        assert_eq!(decode_prompt("plain"), None);
        assert_eq!(encode_answer("a%b\nc"), "a%25b%0Ac");
        assert_eq!(
            unpercent(&encode_answer("100% sure\nyes")),
            "100% sure\nyes"
        );
        assert_eq!(unpercent("%"), "%");
        assert_eq!(unpercent("%4"), "%4");
        assert_eq!(unpercent("%zz"), "%zz");
    }
}
