//! Notebooks as reports. One crate that the `ferrolab export` command and the
//! collaboration server (`GET /api/notebooks/{id}/export`) share:
//! - `html`: one self-contained file — CSS inline, images as `data:` URLs, charts
//!   as their static SVG, code highlighted, markdown rendered, a table of contents,
//!   print styles — where every piece of HTML or SVG from the notebook went
//!   through an allow-list sanitiser and a Content-Security-Policy forbids scripts
//!   and network loads; with `chart_script` (`--interactive`), the chart library
//!   is inlined and the charts become interactive where the reader allows
//!   scripts: the policy then lets that one script run, by its hash, and nothing
//!   else;
//! - `markdown`: the notebook as markdown, images as files beside it;
//! - `ipynb`: a valid nbformat 4.5 file, written as Jupyter writes it; the
//!   [`ipynb`] module is also the one `.ipynb` reader the collaboration server uses.

mod ansi;
pub mod cli;
mod highlight;
mod html;
pub mod ipynb;
mod markdown;
mod notebook;
pub mod sanitize;

use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Markdown,
    Ipynb,
}

impl std::str::FromStr for Format {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "html" => Ok(Format::Html),
            "markdown" | "md" => Ok(Format::Markdown),
            "ipynb" | "notebook" => Ok(Format::Ipynb),
            other => Err(ExportError(format!(
                "no export format {other:?}; use html, markdown or ipynb"
            ))),
        }
    }
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Markdown => "md",
            Format::Ipynb => "ipynb",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Markdown => "text/markdown; charset=utf-8",
            Format::Ipynb => "application/x-ipynb+json",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// Leave every cell's input out (outputs and markdown only).
    pub no_input: bool,
    /// A table of contents from the markdown headings (HTML).
    pub toc: bool,
    /// The report's title (else the notebook's `metadata.title`, else `fallback_title`).
    pub title: Option<String>,
    /// The title when neither the options nor the notebook give one (a file name).
    pub fallback_title: String,
    /// Markdown: the folder name images go to, relative to the document; `None`
    /// puts them inline as `data:` URLs (one file, as the server sends it).
    pub files_dir: Option<String>,
    /// HTML: the chart script (`report-charts.js`, see `chart_script`) to inline so
    /// that Vega-Lite charts are interactive where scripts may run; `None` keeps
    /// every chart a static SVG and the report script-free.
    pub chart_script: Option<Arc<str>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            format: Format::Html,
            no_input: false,
            toc: false,
            title: None,
            fallback_title: "Notebook".into(),
            files_dir: None,
            chart_script: None,
        }
    }
}

/// The exported document, and the files that go beside it (markdown images).
#[derive(Debug)]
pub struct Export {
    pub document: Vec<u8>,
    pub files: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportError(pub String);

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExportError {}

/// Exports a notebook given as nbformat 4 JSON.
pub fn export(notebook: &Json, options: &Options) -> Result<Export, ExportError> {
    let file = ipynb::Notebook::from_json(notebook.clone())?;
    let nb = notebook::Notebook::of(&file);
    match options.format {
        Format::Html => Ok(Export {
            document: html::report(&nb, options).into_bytes(),
            files: Vec::new(),
        }),
        Format::Markdown => {
            let (text, files) = markdown::export(&nb, options);
            Ok(Export {
                document: text.into_bytes(),
                files,
            })
        }
        Format::Ipynb => {
            let text = ipynb::to_file_text(&notebook::normalize_ipynb(&file));
            Ok(Export {
                document: text.into_bytes(),
                files: Vec::new(),
            })
        }
    }
}

/// The file the web build writes next to the workspace (`make web`).
pub const CHART_SCRIPT: &str = "report-charts.js";

/// Finds and reads the chart script for interactive reports: `explicit` (a file
/// or the web build's folder), else `$FERROLAB_WEB_DIR`, else
/// `collab-server/web/dist` in the working folder or any folder above it.
pub fn chart_script(explicit: Option<&Path>) -> Result<Arc<str>, ExportError> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = explicit {
        candidates.push(path.to_path_buf());
    } else {
        if let Some(dir) = std::env::var_os("FERROLAB_WEB_DIR") {
            candidates.push(PathBuf::from(dir));
        }
        if let Ok(cwd) = std::env::current_dir() {
            candidates.extend(cwd.ancestors().map(|d| d.join("collab-server/web/dist")));
        }
    }
    for candidate in candidates {
        let file = if candidate.is_dir() {
            candidate.join(CHART_SCRIPT)
        } else {
            candidate
        };
        match std::fs::read_to_string(&file) {
            Ok(script) if !script.trim().is_empty() => return Ok(script.into()),
            Ok(_) => tried.push(format!("{} (empty)", file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tried.push(file.display().to_string())
            }
            Err(e) => return Err(ExportError(format!("cannot read {}: {e}", file.display()))),
        }
    }
    Err(ExportError(format!(
        "interactive charts need the chart script {CHART_SCRIPT}, built by `make web` \
         (looked for {}); point --chart-script or FERROLAB_WEB_DIR at it, or leave \
         --interactive out for static charts",
        if tried.is_empty() {
            "nothing".into()
        } else {
            tried.join(", ")
        }
    )))
}
