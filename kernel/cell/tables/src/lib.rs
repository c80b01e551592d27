//! The notebook's tables in Rust cells: `table("name")` is the polars `DataFrame`
//! that `%load`, `%%sql --out` or another cell made, and `save_table("name", &df)`
//! makes one for `%%sql`, `%plot`, `%describe` and `%head`. Tables travel between
//! the kernel and the cell as uncompressed Arrow IPC files that the reader
//! memory-maps.
//!
//! The kernel brings this crate into scope (`use ferrolab_cell_tables::*`) in the
//! cells that name `table`, `save_table`, `DataFrame` or polars, so that cells which
//! use no table do not load polars. Those cells also show a `DataFrame` value as
//! `%head`'s HTML table.
//!
//! ```no_run
//! use ferrolab_cell_tables::*;
//! use polars::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // `%%sql --out per_model` made this table; the kernel hands it over memory-mapped.
//! let per_model = table("per_model")?;
//! let best = per_model.sort(["score"], SortMultipleOptions::default().with_order_descending(true))?;
//! save_table("best", &best)?; // `%%sql SELECT * FROM best` now sees it
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use ferrolab_cell::{__call as call, __print_content, CellError, __DIR_VAR as DIR_VAR};
use polars::prelude::*;
use serde_json::{json, Value};
use std::any::TypeId;
use std::path::PathBuf;

fn polars_error(error: PolarsError) -> CellError {
    CellError::new("PolarsError", error.to_string())
}

fn io_error(error: std::io::Error) -> CellError {
    CellError::new("IoError", error.to_string())
}

/// The polars `DataFrame` of a table the notebook holds: one `%load` read, one
/// `%%sql --out NAME` made, or one a cell saved with [`save_table`].
///
/// The kernel writes the table once as an uncompressed Arrow IPC file and this
/// process maps it into memory, so a large table is not copied again.
///
/// ```no_run
/// # use ferrolab_cell_tables::*;
/// # fn main() -> Result<(), ferrolab_cell::CellError> {
/// let per_model = table("per_model")?;
/// println!("{} rows", per_model.height());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// `UnknownTable` (with the names of the tables there are) when no table has that
/// name; the query's own error when the table is a query that fails.
pub fn table(name: &str) -> Result<DataFrame, CellError> {
    let answer = call("table", json!({ "name": name }))?;
    let path = path_in(&answer, "table")?;
    let file = std::fs::File::open(&path).map_err(io_error)?;
    // Safety: the kernel writes each table file once, under a name it never reuses,
    // and never changes it while this kernel runs; nothing else writes that folder.
    let reader = unsafe { IpcReader::new(file).memory_mapped(Some(path)) };
    reader.finish().map_err(polars_error)
}

/// Makes `df` the notebook's table `name`, for `%%sql`, `%plot`, `%describe`,
/// `%profile`, `%head` and later cells. A table of that name is replaced.
///
/// ```no_run
/// # use ferrolab_cell_tables::*;
/// # use polars::prelude::*;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let scores = df!("model" => ["a", "b"], "score" => [0.7, 0.9])?;
/// save_table("scores", &scores)?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// `UsageError` when `name` is not a table name SQL can use (letters, digits and
/// `_`, starting with a letter).
pub fn save_table(name: &str, df: &DataFrame) -> Result<(), CellError> {
    let path = write_ipc(df, name)?;
    call("save_table", json!({ "name": name, "path": path }))?;
    Ok(())
}

/// Writes `df` as an uncompressed IPC file in the folder the kernel reads from.
fn write_ipc(df: &DataFrame, stem: &str) -> Result<PathBuf, CellError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return Err(CellError::new(
            "NoKernel",
            format!("tables need the ferrolab kernel ({DIR_VAR} is not set)"),
        ));
    };
    let stem: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    let path = PathBuf::from(dir).join(format!(
        "cell-{}-{}-{stem}.arrow",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::File::create(&path).map_err(io_error)?;
    IpcWriter::new(&mut file)
        .finish(&mut df.clone())
        .map_err(polars_error)?;
    Ok(path)
}

fn path_in(answer: &Value, call: &str) -> Result<PathBuf, CellError> {
    answer
        .get("path")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| CellError::new("KernelAnswer", format!("`{call}` answered without a path")))
}

/// Shows a `DataFrame` value as the kernel's `%head` does. Called by evcxr's
/// generated code at the start of every cell that uses this crate (so that a
/// `DataFrame` the cell ends with is shown as a table); costs one check after the
/// first.
#[doc(hidden)]
pub fn __ferrolab_tables() {
    ferrolab_cell::__register_frames(
        vec![
            TypeId::of::<DataFrame>(),
            TypeId::of::<&DataFrame>(),
            TypeId::of::<&mut DataFrame>(),
        ],
        show_frame,
    );
}

/// # Safety
/// `value` points at a `DataFrame` when `kind` is 0, at a reference to one otherwise
/// (the order [`__ferrolab_tables`] registers them in).
unsafe fn show_frame(value: *const (), kind: usize) -> bool {
    let df: &DataFrame = if kind == 0 {
        unsafe { &*value.cast::<DataFrame>() }
    } else {
        unsafe { *value.cast::<&DataFrame>() }
    };
    show(df).is_ok()
}

/// Shows `df` as a cell's value: the kernel renders it as `%head` does.
fn show(df: &DataFrame) -> Result<(), CellError> {
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
    __print_content(&parts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_kernel_calls_say_so() {
        let error = table("t").unwrap_err();
        assert_eq!(error.ename, "NoKernel", "{error}");
        let df = df!("a" => [1, 2]).unwrap();
        let error = save_table("t", &df).unwrap_err();
        assert_eq!(error.ename, "NoKernel", "{error}");
    }

    #[test]
    fn frames_are_recognised_by_type_once_registered() {
        __ferrolab_tables();
        assert_eq!(ferrolab_cell::__frame_kind::<DataFrame>(), Some(0));
        assert_eq!(ferrolab_cell::__frame_kind::<&DataFrame>(), Some(1));
        assert_eq!(ferrolab_cell::__frame_kind::<&mut DataFrame>(), Some(2));
        assert_eq!(ferrolab_cell::__frame_kind::<i32>(), None);
        assert_eq!(ferrolab_cell::__frame_kind::<str>(), None);
        assert_eq!(ferrolab_cell::__frame_kind::<&str>(), None);
    }
}
