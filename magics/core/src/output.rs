//! What a magic produces: streams, MIME bundles and live displays.

use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One rich output: a map from MIME type to data, with optional per-type metadata.
///
/// Every bundle a ferrolab magic emits carries `text/plain`, so that consoles,
/// exporters and tests always have something to show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MimeBundle {
    pub data: Map<String, Value>,
    pub metadata: Map<String, Value>,
}

impl MimeBundle {
    /// A bundle holding only `text/plain`.
    pub fn text(text: impl Into<String>) -> Self {
        Self::default().with("text/plain", text.into())
    }

    /// Adds (or replaces) the data for one MIME type.
    pub fn with(mut self, mime: &str, data: impl Into<Value>) -> Self {
        self.data.insert(mime.to_string(), data.into());
        self
    }

    /// Adds a magic's machine-readable result under ferrolab's vendor type for
    /// `kind` ([`data_mime`]), never under `application/json`: JupyterLab ranks
    /// `application/json` above `text/html` and would show a JSON tree where the
    /// table belongs.
    pub fn with_data(self, kind: &str, data: impl Into<Value>) -> Self {
        self.with(&data_mime(kind), data)
    }

    pub fn get(&self, mime: &str) -> Option<&str> {
        self.data.get(mime).and_then(Value::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The MIME type of a magic's machine-readable result:
/// `application/vnd.ferrolab.KIND+json` (`finetune`, `prompt-test`, `serve`, ...).
/// Front ends that do not know it show the bundle's HTML or text instead.
pub fn data_mime(kind: &str) -> String {
    format!("application/vnd.ferrolab.{kind}+json")
}

/// Which standard stream a piece of text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where a magic sends what it produces, as it produces it.
///
/// The kernel turns each call into a Jupyter message at once, so a long-running magic
/// shows progress while it runs.
pub trait Output {
    fn stream(&mut self, stream: Stream, text: &str);
    /// Shows a bundle. With a `display_id`, later [`Output::update_display`] calls
    /// replace it in place.
    fn display(&mut self, bundle: MimeBundle, display_id: Option<&str>);
    fn update_display(&mut self, bundle: MimeBundle, display_id: &str);
    /// Clears the cell's outputs; with `wait`, only when the next output arrives.
    fn clear(&mut self, wait: bool);
    /// Shows help text in the client's pager (JupyterLab shows it below the cell).
    /// Outputs without a pager show it as a display.
    fn page(&mut self, bundle: MimeBundle) {
        self.display(bundle, None);
    }
}

/// A display created with an id, so that it can be updated in place.
pub struct Display {
    id: String,
}

impl Display {
    /// Shows `bundle` under a fresh display id.
    pub fn show(out: &mut dyn Output, bundle: MimeBundle) -> Display {
        let id = new_display_id();
        out.display(bundle, Some(&id));
        Display { id }
    }

    pub fn update(&self, out: &mut dyn Output, bundle: MimeBundle) {
        out.update_display(bundle, &self.id);
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A display id unique within this process and, in practice, across processes.
pub fn new_display_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("ferrolab-{:x}-{:x}-{n}", std::process::id(), nanos)
}

/// An [`Output`] that keeps everything in memory: for tests and for nesting.
#[derive(Debug, Default)]
pub struct RecordingOutput {
    pub stdout: String,
    pub stderr: String,
    pub displays: Vec<RecordedDisplay>,
    pub updates: Vec<RecordedDisplay>,
    pub clears: usize,
    pub pages: Vec<MimeBundle>,
}

#[derive(Debug, Clone)]
pub struct RecordedDisplay {
    pub bundle: MimeBundle,
    pub display_id: Option<String>,
}

impl Output for RecordingOutput {
    fn stream(&mut self, stream: Stream, text: &str) {
        match stream {
            Stream::Stdout => self.stdout.push_str(text),
            Stream::Stderr => self.stderr.push_str(text),
        }
    }

    fn display(&mut self, bundle: MimeBundle, display_id: Option<&str>) {
        self.displays.push(RecordedDisplay {
            bundle,
            display_id: display_id.map(str::to_string),
        });
    }

    fn update_display(&mut self, bundle: MimeBundle, display_id: &str) {
        self.updates.push(RecordedDisplay {
            bundle,
            display_id: Some(display_id.to_string()),
        });
    }

    fn clear(&mut self, _wait: bool) {
        self.clears += 1;
    }

    fn page(&mut self, bundle: MimeBundle) {
        self.pages.push(bundle);
    }
}
