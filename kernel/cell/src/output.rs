//! Rich output while a cell runs, `input()`, the panic reporter, and how a cell's
//! final value is shown. These speak the kernel's stdout line protocol: one line
//! that starts with `\u{1}ferrolab:` and a JSON object.

use std::io::Write;

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Sends one line of the kernel's output protocol (used by the items below).
#[doc(hidden)]
pub fn __ferrolab_emit(kind: &str, id: &str, mime: &str, data: &str) {
    let line = format!(
        "\u{1}ferrolab:{{\"kind\":{},\"id\":{},\"mime\":{},\"data\":{}}}\n",
        json_string(kind),
        json_string(id),
        json_string(mime),
        json_string(data)
    );
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(line.as_bytes());
    let _ = lock.flush();
}

/// A rich output shown while the cell runs; [`Display::update`] replaces it in place.
pub struct Display {
    id: String,
}

impl Display {
    /// Replaces this display's content (Jupyter's `update_display_data`).
    pub fn update(&self, mime: &str, data: &str) {
        __ferrolab_emit("update", &self.id, mime, data);
    }

    /// The Jupyter `display_id` of this display.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Shown as nothing when a cell ends with a `Display` value.
    pub fn evcxr_display(&self) {}
}

/// Shows `data` as MIME type `mime` now, while the cell runs (JSON MIME types are
/// sent as JSON).
///
/// ```no_run
/// # use ferrolab_cell::*;
/// let progress = display_markdown("0 of 3");
/// for step in 1..=3 {
///     progress.update("text/markdown", &format!("{step} of 3"));
/// }
/// ```
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
pub fn display_html(html: &str) -> Display {
    display("text/html", html)
}

/// Shows Markdown now, while the cell runs.
pub fn display_markdown(markdown: &str) -> Display {
    display("text/markdown", markdown)
}

/// Clears this cell's outputs; with `wait`, only when the next output arrives (so
/// an animation does not flicker).
pub fn clear_output(wait: bool) {
    __ferrolab_emit("clear", "", "", if wait { "wait" } else { "" });
}

/// Percent-encodes what would break evcxr's one-line input request.
fn percent(s: &str) -> String {
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

fn unpercent(s: &str) -> String {
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

/// Asks the person running the cell for a line of text (Jupyter's `input_request`)
/// and returns it.
///
/// # Panics
/// When the client does not allow input (`allow_stdin` is false), with a message
/// saying so.
pub fn input(prompt: &str) -> String {
    println!(
        "EVCXR_INPUT_REQUEST:\u{1}ferrolab-input~{}",
        percent(prompt)
    );
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let answer = line.trim_end_matches(['\n', '\r']);
    if answer == "\u{1}no-stdin" {
        panic!("input() is not available: this client does not accept input requests (allow_stdin is false)");
    }
    unpercent(answer)
}

/// Starts the cell API in the evaluation process: panics are reported to the
/// kernel, which turns them into one `Panic` error with the message, the location
/// and the user's frames. The kernel calls it once per evaluation process.
#[doc(hidden)]
pub fn __ferrolab_start() {
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
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => backtrace.to_string(),
            _ => String::new(),
        };
        __ferrolab_emit("panic", &location, &backtrace, &message);
    }));
}

/// Prints MIME blocks the way evcxr reads a cell's value.
pub fn print_content(parts: &[(&str, String)]) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (mime, data) in parts {
        let _ = write!(
            out,
            "EVCXR_BEGIN_CONTENT {mime}\n{data}\nEVCXR_END_CONTENT\n"
        );
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_prompts_survive_percent_encoding() {
        for text in [
            "plain",
            "50% off: now",
            "tab\there",
            "line\nbreak",
            "ünïcode ✓",
        ] {
            let encoded = percent(text);
            assert!(
                !encoded.contains(':') && !encoded.contains('\n'),
                "{encoded}"
            );
            assert_eq!(unpercent(&encoded), text);
        }
    }
}
