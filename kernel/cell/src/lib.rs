//! The API of Rust cells in a ferrolab notebook.
//!
//! Every Rust cell starts with `use ferrolab_cell::*;` in scope, so a cell calls a
//! model the kernel has loaded, logs to the current run, and shows rich output
//! while it runs. The notebook's tables are `ferrolab_cell_tables` (`table`,
//! `save_table`), which the kernel brings into scope in the cells that name them or
//! polars: this crate, which every cell links, holds no polars.
//!
//! ```no_run
//! use ferrolab_cell::*;
//!
//! # fn main() -> Result<(), CellError> {
//! let answer = generate("smollm2", "The capital of France is", &Generate::default().max_tokens(8))?;
//! log_metric("answer_chars", answer.len() as f64)?;
//! display_markdown(&format!("**{answer}**"));
//! # Ok(())
//! # }
//! ```
//!
//! The crate is built once per toolchain into `$FERROLAB_HOME` together with the
//! crates cells use most (polars, serde, serde_json, chrono, rand, itertools,
//! ureq) and shared by every kernel; see the kernel's documentation
//! (`docs/kernel.md`, "Crates ready for cells").
//!
//! # How it reaches the kernel
//!
//! A cell runs in evcxr's evaluation process, a child of the kernel. Output that
//! needs no answer (displays, panics) goes to the kernel as one line on stdout that
//! starts with a control character; calls that need an answer (tables, models,
//! tracking) are one JSON line each way over the Unix socket named by
//! `FERROLAB_CELL_SOCKET`. Tables travel as uncompressed Arrow IPC files in the
//! folder named by `FERROLAB_CELL_DIR`, which the reader memory-maps.

#![warn(missing_docs)]

mod channel;
mod model;
mod output;
mod track;
mod value;

#[doc(hidden)]
#[path = "runtime.rs"]
pub mod __evcxr_runtime;

pub use channel::CellError;
#[doc(hidden)]
pub use channel::{call as __call, DIR_VAR as __DIR_VAR};
pub use model::{chat, embed, generate, Generate, Message};
#[doc(hidden)]
pub use output::{__ferrolab_emit, __ferrolab_start, print_content as __print_content};
pub use output::{clear_output, display, display_html, display_markdown, input, Display};
pub use track::{log_metric, log_metric_at, log_param};
#[doc(hidden)]
pub use value::{__frame_kind, __register_frames, ShowValue};
