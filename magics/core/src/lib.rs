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

pub use output::{
    new_display_id, Display, MimeBundle, Output, RecordedDisplay, RecordingOutput, Stream,
};
pub use parse::{parse, split_args, Invocation, MagicKind, ParseError};
pub use registry::{
    help_bundle, panic_message, Host, Magic, MagicContext, MagicError, NoHost, Registry,
};
