//! The prelude every Rust cell can use without `use` or `:dep`, and the line
//! protocol it speaks to the kernel.
//!
//! The prelude runs in evcxr's evaluation process, so it can only talk to the kernel
//! through stdout. Each call prints one line that starts with [`MARKER`] followed by
//! a JSON object; the kernel's output relay turns those lines into `display_data`,
//! `update_display_data` or panic reports instead of `stream` text.

use serde_json::Value;

/// Starts every prelude line on stdout; a control character no user text begins with.
pub const MARKER: &str = "\u{1}ferrolab:";

/// Prefix of an `input()` prompt encoded by the prelude (see [`decode`]).
pub const INPUT_PREFIX: &str = "\u{1}ferrolab-input~";

/// What the input callback answers when the client does not allow stdin.
pub const NO_STDIN: &str = "\u{1}no-stdin";

/// The Rust source of the prelude, compiled once when the evaluation context starts.
pub const SOURCE: &str = r#####"
#[allow(dead_code)]
fn __ferrolab_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[allow(dead_code)]
fn __ferrolab_emit(kind: &str, id: &str, mime: &str, data: &str) {
    use std::io::Write;
    let line = format!(
        "\u{1}ferrolab:{{\"kind\":{},\"id\":{},\"mime\":{},\"data\":{}}}\n",
        __ferrolab_json(kind), __ferrolab_json(id), __ferrolab_json(mime), __ferrolab_json(data)
    );
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(line.as_bytes());
    let _ = lock.flush();
}

/// A rich output shown while the cell runs; `update` replaces it in place.
#[allow(dead_code)]
pub struct Display {
    id: String,
}

#[allow(dead_code)]
impl Display {
    /// Replaces this display's content (sends `update_display_data`).
    pub fn update(&self, mime: &str, data: &str) {
        __ferrolab_emit("update", &self.id, mime, data);
    }

    /// The Jupyter `display_id` of this display.
    pub fn id(&self) -> &str {
        &self.id
    }

    // Shown as nothing when a cell ends with a Display value.
    pub fn evcxr_display(&self) {}
}

/// Shows `data` as MIME type `mime` now, while the cell runs.
#[allow(dead_code)]
pub fn display(mime: &str, data: &str) -> Display {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = format!(
        "ferrolab-{:x}-{:x}-{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    __ferrolab_emit("display", &id, mime, data);
    Display { id }
}

/// Shows HTML now, while the cell runs.
#[allow(dead_code)]
pub fn display_html(html: &str) -> Display {
    display("text/html", html)
}

/// Shows Markdown now, while the cell runs.
#[allow(dead_code)]
pub fn display_markdown(markdown: &str) -> Display {
    display("text/markdown", markdown)
}

/// Shows a cell's final value. evcxr first tries `value.evcxr_display()` and, when
/// that does not compile, compiles again with Debug formatting; this blanket impl
/// makes the first try succeed for every Debug type, saving a compile per cell.
/// Inherent `evcxr_display` methods still win. `FERROLAB_DISPLAY` follows `:fmt`
/// and `:types`.
#[allow(non_camel_case_types, dead_code)]
pub trait __ferrolab_show {
    fn evcxr_display(&self);
}

impl<T: std::fmt::Debug + ?Sized> __ferrolab_show for T {
    fn evcxr_display(&self) {
        use std::io::Write;
        let mode = std::env::var("FERROLAB_DISPLAY").unwrap_or_default();
        let mut text = if mode.contains("pretty") {
            format!("{:#?}", self)
        } else {
            format!("{:?}", self)
        };
        if mode.contains("types") {
            text = format!(": {} = {}", std::any::type_name::<T>(), text);
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let _ = write!(out, "EVCXR_BEGIN_CONTENT text/plain\n{}\nEVCXR_END_CONTENT\n", text);
        let _ = out.flush();
    }
}

/// Clears this cell's outputs; with `wait`, only when the next output arrives
/// (so an animation does not flicker).
#[allow(dead_code)]
pub fn clear_output(wait: bool) {
    __ferrolab_emit("clear", "", "", if wait { "wait" } else { "" });
}

#[allow(dead_code)]
fn __ferrolab_percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | ':' => out.push_str(&format!("%{:02X}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[allow(dead_code)]
fn __ferrolab_unpercent(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
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

/// Asks the user for a line of text (an `input_request` to the client) and returns
/// it. Panics with a clear message when the client does not allow input.
#[allow(dead_code)]
pub fn input(prompt: &str) -> String {
    use std::io::Write;
    println!("EVCXR_INPUT_REQUEST:\u{1}ferrolab-input~{}", __ferrolab_percent(prompt));
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let answer = line.trim_end_matches(['\n', '\r']);
    if answer == "\u{1}no-stdin" {
        panic!("input() is not available: this client does not accept input requests (allow_stdin is false)");
    }
    __ferrolab_unpercent(answer)
}

#[allow(dead_code)]
fn __ferrolab_install_panic_hook() {
    // Replaces the default hook: the kernel shows the panic as the cell's error, so
    // printing it to stderr as well would show it twice.
    std::panic::set_hook(Box::new(|info| {
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            String::from("Box<dyn Any>")
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        // Captured only when RUST_BACKTRACE asks for it.
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => backtrace.to_string(),
            _ => String::new(),
        };
        __ferrolab_emit("panic", &location, &backtrace, &message);
    }));
}
"#####;

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

/// The statement that (re)installs the panic reporter in a fresh evaluation process.
pub const INSTALL_PANIC_HOOK: &str = "__ferrolab_install_panic_hook();";

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
