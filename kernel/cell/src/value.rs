//! How a cell's final value is shown.

use crate::channel::{call, CellError};
use crate::output::print_content;
use crate::tables::{as_frame, write_ipc};
use polars::prelude::DataFrame;
use serde_json::{json, Value};

/// How evcxr shows a cell's final value: evcxr calls `value.evcxr_display()`, and
/// this blanket implementation answers for every `Debug` type (evcxr would
/// otherwise compile each cell twice, once to try `evcxr_display` and once with
/// `Debug`). A polars `DataFrame` (or a reference to one) shows as the same HTML
/// table as `%head`. `:fmt {:#?}` and `:types` reach it through
/// `FERROLAB_DISPLAY`.
#[doc(hidden)]
pub trait ShowValue {
    /// Prints the value as evcxr's MIME blocks.
    fn evcxr_display(&self);
}

impl<T: std::fmt::Debug + ?Sized> ShowValue for T {
    fn evcxr_display(&self) {
        if let Some(df) = as_frame(self) {
            if show(df).is_ok() {
                return;
            }
        }
        let mode = std::env::var("FERROLAB_DISPLAY").unwrap_or_default();
        let mut text = if mode.contains("pretty") {
            format!("{self:#?}")
        } else {
            format!("{self:?}")
        };
        if mode.contains("types") {
            text = format!(": {} = {}", std::any::type_name::<T>(), text);
        }
        print_content(&[("text/plain", text)]);
    }
}

/// Shows `df` as a cell's value: the kernel renders it as `%head` does.
pub(crate) fn show(df: &DataFrame) -> Result<(), CellError> {
    let path = write_ipc(df, "value")?;
    let answer = call("show_table", json!({ "path": path }));
    let _ = std::fs::remove_file(&path);
    let answer = answer?;
    let mut parts = Vec::new();
    for mime in ["text/html", "text/plain"] {
        if let Some(text) = answer.get(mime).and_then(Value::as_str) {
            parts.push((mime, text.to_string()));
        }
    }
    print_content(&parts);
    Ok(())
}
