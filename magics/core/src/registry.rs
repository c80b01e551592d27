//! The [`Magic`] trait and the [`Registry`] that later families add to.

use crate::output::{MimeBundle, Output};
use crate::parse::{Invocation, MagicKind};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A failed magic, as the user will see it: the error's name, its message and the
/// lines of its traceback (what happened, to what, and what to do next).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MagicError {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

impl MagicError {
    pub fn new(ename: impl Into<String>, evalue: impl Into<String>) -> Self {
        let ename = ename.into();
        let evalue = evalue.into();
        let traceback = vec![format!("{ename}: {evalue}")];
        Self {
            ename,
            evalue,
            traceback,
        }
    }

    /// A mistake in how the magic was called.
    pub fn usage(evalue: impl Into<String>) -> Self {
        Self::new("UsageError", evalue)
    }
}

impl fmt::Display for MagicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.ename, self.evalue)
    }
}

impl std::error::Error for MagicError {}

/// What the kernel lends a magic that needs to run other code (`%time`) or to know
/// whether the user asked to stop.
pub trait Host {
    /// Runs `source` (Rust code or another magic) as part of the current cell and
    /// returns its result value, if any.
    fn run_source(
        &mut self,
        source: &str,
        out: &mut dyn Output,
    ) -> Result<Option<MimeBundle>, MagicError>;

    /// True once the user has interrupted the running cell; long magics poll it.
    fn interrupted(&self) -> bool;

    /// The cell being run, as its front end names it (JupyterLab's cell id, else
    /// `In [N]`), so that what a magic records (a tracked run) can say which cell
    /// made it. `None` outside a kernel.
    fn current_cell(&self) -> Option<&str> {
        None
    }
}

/// A [`Host`] that cannot run code: for magics used outside a kernel.
pub struct NoHost;

impl Host for NoHost {
    fn run_source(
        &mut self,
        _source: &str,
        _out: &mut dyn Output,
    ) -> Result<Option<MimeBundle>, MagicError> {
        Err(MagicError::new(
            "NoKernel",
            "running code needs a kernel; this magic was called outside one",
        ))
    }

    fn interrupted(&self) -> bool {
        false
    }
}

/// Everything a running magic can reach.
pub struct MagicContext<'a> {
    pub out: &'a mut dyn Output,
    pub host: &'a mut dyn Host,
    pub registry: &'a Registry,
}

/// One magic: takes a parsed invocation, writes outputs, and may return a result
/// value (shown as the cell's `execute_result`).
pub trait Magic: Send + Sync {
    fn name(&self) -> &str;
    /// One line for `%lsmagic`.
    fn summary(&self) -> &str;
    /// The full help shown by `%help NAME` and `%NAME?`.
    fn usage(&self) -> &str;
    /// Whether the magic can be called as `%name`, as `%%name`, or both.
    fn kinds(&self) -> &[MagicKind];
    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError>;
}

/// What a cell call can reach besides its arguments.
pub struct CallContext<'a> {
    /// The folder where tables travel between the kernel and the evaluation process
    /// as Arrow IPC files (private to this kernel; emptied when it stops).
    pub dir: &'a std::path::Path,
}

/// One call a Rust cell makes through the cell API (`ferrolab_cell_tables::table`,
/// `generate`, `log_metric`, …): JSON arguments in, a JSON answer out. A family
/// registers the calls it answers next to its magics, so the kernel routes them
/// without knowing what they do.
pub trait CellCall: Send + Sync {
    fn call(
        &self,
        args: &serde_json::Value,
        cx: &CallContext<'_>,
    ) -> Result<serde_json::Value, MagicError>;
}

/// The set of magics a kernel knows, by name, and the cell calls it answers.
#[derive(Clone, Default)]
pub struct Registry {
    magics: BTreeMap<String, Arc<dyn Magic>>,
    calls: BTreeMap<String, Arc<dyn CellCall>>,
}

impl Registry {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds a magic; a later registration of the same name replaces the earlier one.
    pub fn register(&mut self, magic: Arc<dyn Magic>) {
        self.magics.insert(magic.name().to_string(), magic);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Magic>> {
        self.magics.get(name)
    }

    /// Adds the cell call `name`; a later registration of the same name replaces it.
    pub fn register_call(&mut self, name: &str, call: Arc<dyn CellCall>) {
        self.calls.insert(name.to_string(), call);
    }

    /// Names of the cell calls this kernel answers, in order.
    pub fn call_names(&self) -> impl Iterator<Item = &str> {
        self.calls.keys().map(String::as_str)
    }

    /// Answers one cell call, or says which calls there are.
    pub fn call(
        &self,
        name: &str,
        args: &serde_json::Value,
        cx: &CallContext<'_>,
    ) -> Result<serde_json::Value, MagicError> {
        match self.calls.get(name) {
            Some(call) => call.call(args, cx),
            None => Err(MagicError::new(
                "UnknownCall",
                format!(
                    "this kernel does not answer `{name}` (it answers: {}); the cell API and \
                     the kernel come from different ferrolab versions — restart the kernel",
                    self.calls.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// All magics, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Magic>> {
        self.magics.values()
    }

    /// Names callable with the given prefix (`%` or `%%`), in order.
    pub fn names(&self, kind: MagicKind) -> Vec<String> {
        self.iter()
            .filter(|m| m.kinds().contains(&kind))
            .map(|m| format!("{}{}", kind.prefix(), m.name()))
            .collect()
    }

    /// Up to three known invocations closest to `name` under `kind`, best first.
    pub fn suggestions(&self, name: &str, kind: MagicKind) -> Vec<String> {
        let mut scored: Vec<(usize, String)> = self
            .iter()
            .filter_map(|m| {
                let distance = edit_distance(&name.to_lowercase(), m.name());
                let close = distance <= (m.name().len().max(name.len()) / 3).max(1)
                    || (name.len() >= 2 && m.name().starts_with(name))
                    || (m.name().len() >= 2 && name.starts_with(m.name()));
                close.then(|| {
                    // Prefer the prefix the user typed when the magic supports it.
                    let prefix = if m.kinds().contains(&kind) {
                        kind.prefix()
                    } else {
                        m.kinds().first().map_or("%", |k| k.prefix())
                    };
                    (distance, format!("{prefix}{}", m.name()))
                })
            })
            .collect();
        scored.sort();
        scored.into_iter().take(3).map(|(_, s)| s).collect()
    }

    /// Runs one invocation: help, the magic itself, or a clear error when the magic
    /// is unknown or called with the wrong prefix.
    pub fn run(
        &self,
        invocation: &Invocation,
        out: &mut dyn Output,
        host: &mut dyn Host,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let prefix = invocation.kind.prefix();
        let Some(magic) = self.get(&invocation.name) else {
            let suggestions = self.suggestions(&invocation.name, invocation.kind);
            let hint = if suggestions.is_empty() {
                String::new()
            } else {
                format!("; did you mean {}?", suggestions.join(", "))
            };
            return Err(MagicError::new(
                "UnknownMagic",
                format!(
                    "unknown magic `{prefix}{}`{hint} (run %lsmagic to list every magic)",
                    invocation.name
                ),
            ));
        };
        if invocation.help {
            out.page(help_bundle(magic.as_ref()));
            return Ok(None);
        }
        if !magic.kinds().contains(&invocation.kind) {
            let other = if invocation.kind == MagicKind::Line {
                "%%"
            } else {
                "%"
            };
            return Err(MagicError::usage(format!(
                "`{prefix}{name}` does not exist as a {kind} magic; use `{other}{name}` \
                 (see %help {name})",
                name = invocation.name,
                kind = if invocation.kind == MagicKind::Line {
                    "line"
                } else {
                    "cell"
                },
            )));
        }
        let mut cx = MagicContext {
            out,
            host,
            registry: self,
        };
        // A bug in a magic (or in a library under it) ends the cell with an
        // error; it never takes the kernel, and the user's session, down.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            magic.run(invocation, &mut cx)
        })) {
            Ok(result) => result,
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                Err(MagicError::new(
                    "InternalError",
                    format!(
                        "{prefix}{} crashed ({what}); the kernel and its state are still here. This is a bug: please report it with the cell",
                        invocation.name
                    ),
                ))
            }
        }
    }
}

/// The message a panic carried, for error messages.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
}

/// The help page of one magic, as a bundle.
pub fn help_bundle(magic: &dyn Magic) -> MimeBundle {
    let forms: Vec<String> = magic
        .kinds()
        .iter()
        .map(|k| format!("{}{}", k.prefix(), magic.name()))
        .collect();
    let text = format!(
        "{}\n\n{}\n\n{}",
        forms.join(", "),
        magic.summary(),
        magic.usage().trim_end()
    );
    let markdown = format!(
        "**{}** — {}\n\n```text\n{}\n```",
        forms.join("**, **"),
        magic.summary(),
        magic.usage().trim_end()
    );
    MimeBundle::text(text).with("text/markdown", markdown)
}

/// Damerau–Levenshtein (optimal string alignment) distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_table() {
        for (a, b, d) in [
            ("", "", 0),
            ("time", "time", 0),
            ("tiem", "time", 1),
            ("htlm", "html", 1),
            ("lsmagc", "lsmagic", 1),
            ("abc", "xyz", 3),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} vs {b}");
        }
    }

    struct Crashes;

    impl Magic for Crashes {
        fn name(&self) -> &str {
            "crash"
        }
        fn summary(&self) -> &str {
            "panics"
        }
        fn usage(&self) -> &str {
            "%crash"
        }
        fn kinds(&self) -> &[MagicKind] {
            &[MagicKind::Line]
        }
        fn run(
            &self,
            _invocation: &Invocation,
            _cx: &mut MagicContext<'_>,
        ) -> Result<Option<MimeBundle>, MagicError> {
            panic!("index out of bounds")
        }
    }

    #[test]
    fn a_panicking_magic_becomes_an_error() {
        let mut registry = Registry::empty();
        registry.register(std::sync::Arc::new(Crashes));
        let invocation = crate::parse("%crash").expect("parses").expect("magic");
        let mut out = crate::RecordingOutput::default();
        let error = registry
            .run(&invocation, &mut out, &mut NoHost)
            .expect_err("an error, not a panic");
        assert_eq!(error.ename, "InternalError");
        assert!(
            error.evalue.contains("index out of bounds"),
            "{}",
            error.evalue
        );
    }
}
