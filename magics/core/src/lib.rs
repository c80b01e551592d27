//! The ferrolab magic framework.
//!
//! A magic is a value that takes a parsed [`Invocation`] and writes its results to an
//! [`Output`]: streams, rich MIME bundles, live-updating displays, or an error. This
//! crate knows nothing about ZeroMQ or Jupyter messages; the kernel implements
//! [`Output`] and [`Host`] and routes cells here.
//!
//! ```
//! use ferrolab_magics::{parse, Registry, RecordingOutput, NoHost};
//!
//! let registry = Registry::with_builtins();
//! let invocation = parse("%%markdown\n# Hello").unwrap().unwrap();
//! let mut out = RecordingOutput::default();
//! registry.run(&invocation, &mut out, &mut NoHost).unwrap();
//! assert_eq!(out.displays[0].bundle.get("text/markdown").unwrap(), "# Hello");
//! ```
//!
//! Families of magics (data, prompt tests, training, serving, …) live in crates of
//! their own and add themselves to a [`Registry`].

mod builtins;
mod output;
mod parse;
mod registry;
pub mod svg;

pub use output::{
    data_mime, new_display_id, Display, MimeBundle, Output, RecordedDisplay, RecordingOutput,
    Stream,
};
pub use parse::{parse, split_args, Invocation, MagicKind, ParseError};
pub use registry::{
    help_bundle, panic_message, CallContext, CellCall, Host, Magic, MagicContext, MagicError,
    NoHost, Registry,
};

/// Locks `mutex`, taking its data even if a thread panicked while holding it. A
/// panicking magic ends its cell with an error and the kernel goes on, so what the
/// lock guards (tables, servers, caches, queues) must stay usable; every writer
/// behind these locks leaves the data consistent between statements.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parses a magic's arguments (after its name) with a clap parser declared with
/// `no_binary_name = true`: clap's message followed by `usage` is the `UsageError` a
/// user sees.
#[cfg(feature = "clap")]
pub fn parse_args<T: clap::Parser>(args: &[String], usage: &str) -> Result<T, MagicError> {
    T::try_parse_from(args)
        .map_err(|e| MagicError::usage(format!("{}\n\n{usage}", e.to_string().trim())))
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
