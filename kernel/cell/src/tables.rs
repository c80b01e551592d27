//! Tables both ways between Rust cells and the data magics, as Arrow IPC files the
//! reader memory-maps.

use crate::channel::{call, CellError, DIR_VAR};
use polars::prelude::*;
use serde_json::{json, Value};
use std::any::TypeId;
use std::path::PathBuf;

/// The polars `DataFrame` of a table the notebook holds: one `%load` read, one
/// `%%sql --out NAME` made, or one a cell saved with [`save_table`].
///
/// The kernel writes the table once as an uncompressed Arrow IPC file and this
/// process maps it into memory, so a large table is not copied again.
///
/// ```no_run
/// # use ferrolab_cell::*;
/// # fn main() -> Result<(), CellError> {
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
    let file = std::fs::File::open(&path)?;
    // Safety: the kernel writes each table file once, under a name it never reuses,
    // and never changes it while this kernel runs; nothing else writes that folder.
    let reader = unsafe { IpcReader::new(file).memory_mapped(Some(path)) };
    Ok(reader.finish()?)
}

/// Makes `df` the notebook's table `name`, for `%%sql`, `%plot`, `%describe`,
/// `%profile`, `%head` and later cells. A table of that name is replaced.
///
/// ```no_run
/// # use ferrolab_cell::*;
/// # use polars::prelude::*;
/// # fn main() -> Result<(), CellError> {
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
pub(crate) fn write_ipc(df: &DataFrame, stem: &str) -> Result<PathBuf, CellError> {
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
    let mut file = std::fs::File::create(&path)?;
    IpcWriter::new(&mut file).finish(&mut df.clone())?;
    Ok(path)
}

fn path_in(answer: &Value, call: &str) -> Result<PathBuf, CellError> {
    answer
        .get("path")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| CellError::new("KernelAnswer", format!("`{call}` answered without a path")))
}

/// The `TypeId` of any type, borrowed or not (`TypeId::of` wants `'static`). The
/// lifetime is erased only to compare with `'static` types, which lifetimes cannot
/// tell apart anyway.
fn type_id_of<T: ?Sized>() -> TypeId {
    trait NonStaticAny {
        fn type_id(&self) -> TypeId
        where
            Self: 'static;
    }
    impl<T: ?Sized> NonStaticAny for std::marker::PhantomData<T> {
        fn type_id(&self) -> TypeId
        where
            Self: 'static,
        {
            TypeId::of::<T>()
        }
    }
    let phantom = std::marker::PhantomData::<T>;
    let erased: &dyn NonStaticAny = &phantom;
    // Safety: only the trait object's lifetime bound changes; `type_id` reads no
    // data, so nothing can outlive what it borrows.
    let erased: &(dyn NonStaticAny + 'static) = unsafe { std::mem::transmute(erased) };
    erased.type_id()
}

/// The value as a `DataFrame` when it is one (or a reference to one).
pub(crate) fn as_frame<T: ?Sized>(value: &T) -> Option<&DataFrame> {
    let id = type_id_of::<T>();
    if id == TypeId::of::<DataFrame>() {
        // Safety: `T` is `DataFrame`, as their type ids say.
        Some(unsafe { &*(value as *const T).cast::<DataFrame>() })
    } else if id == TypeId::of::<&DataFrame>() || id == TypeId::of::<&mut DataFrame>() {
        // Safety: `T` is a reference to a `DataFrame`.
        Some(unsafe { *(value as *const T).cast::<&DataFrame>() })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_recognised_by_type() {
        let df = df!("a" => [1, 2]).unwrap();
        assert!(as_frame(&df).is_some());
        assert_eq!(as_frame(&&df).map(DataFrame::height), Some(2));
        assert!(as_frame(&5_i32).is_none());
        assert!(as_frame("text").is_none());
        let borrowed = String::from("x");
        assert!(as_frame(&borrowed.as_str()).is_none());
    }
}
