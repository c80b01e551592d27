//! The data family's answers to Rust cells (`ferrolab_cell_tables::table`, `save_table`,
//! and a `DataFrame` shown as a cell's value). Tables travel as uncompressed Arrow
//! IPC files in the kernel's private cell folder: the kernel writes a table once and
//! the cell maps it; what a cell hands over is read into the kernel's own memory,
//! since the cell's process could still change its file.

use crate::{frame_bundle, polars_error, run, valid_name, Catalog, Table};
use ferrolab_magics::{CallContext, CellCall, MagicError, Registry};
use polars::prelude::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Registers `table`, `save_table` and `show_table`.
pub fn register(registry: &mut Registry, catalog: Arc<Catalog>) {
    registry.register_call("table", Arc::new(TableCall(catalog.clone())));
    registry.register_call("save_table", Arc::new(SaveTable(catalog)));
    registry.register_call("show_table", Arc::new(ShowTable));
}

fn text_arg<'a>(args: &'a Value, name: &str, call: &str) -> Result<&'a str, MagicError> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| MagicError::usage(format!("`{call}` needs a text argument `{name}`")))
}

/// A file the cell wrote into the cell folder (and nowhere else).
fn cell_file(args: &Value, call: &str, cx: &CallContext<'_>) -> Result<PathBuf, MagicError> {
    let path = PathBuf::from(text_arg(args, "path", call)?);
    let inside = path.parent().is_some_and(|parent| parent == cx.dir)
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("cell-") && n.ends_with(".arrow"));
    if !inside {
        return Err(MagicError::usage(format!(
            "`{call}` reads only the cell folder's own files, not `{}`",
            path.display()
        )));
    }
    Ok(path)
}

/// Reads an IPC file into memory (not mapped: its writer may change it later).
fn read_copy(path: &Path, what: &str) -> Result<DataFrame, MagicError> {
    let file = std::fs::File::open(path).map_err(|e| {
        MagicError::new(
            "IoError",
            format!("could not open {what} ({}): {e}", path.display()),
        )
    })?;
    IpcReader::new(file)
        .finish()
        .map_err(|e| polars_error(&format!("reading {what}"), e))
}

struct TableCall(Arc<Catalog>);

impl CellCall for TableCall {
    fn call(&self, args: &Value, cx: &CallContext<'_>) -> Result<Value, MagicError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = text_arg(args, "name", "table")?;
        let table = self.0.get(name)?;
        let mut df = run(table.frame).map_err(|e| polars_error(&format!("reading `{name}`"), e))?;
        // A fresh name each time: a cell may still map an earlier version.
        let path = cx.dir.join(format!(
            "table-{}-{name}.arrow",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut write = || -> PolarsResult<()> {
            let mut file = std::fs::File::create(&path)?;
            IpcWriter::new(&mut file).finish(&mut df)
        };
        write().map_err(|e| polars_error(&format!("handing `{name}` to the cell"), e))?;
        Ok(json!({ "path": path }))
    }
}

struct SaveTable(Arc<Catalog>);

impl CellCall for SaveTable {
    fn call(&self, args: &Value, cx: &CallContext<'_>) -> Result<Value, MagicError> {
        let name = text_arg(args, "name", "save_table")?;
        valid_name(name)?;
        let path = cell_file(args, "save_table", cx)?;
        let df = read_copy(&path, &format!("the table `{name}` from the cell"));
        let _ = std::fs::remove_file(&path);
        let df = df?;
        let shape = [df.height(), df.width()];
        self.0.insert(
            name,
            Table {
                frame: df.lazy(),
                source: "a Rust cell (save_table)".to_string(),
                cheap_count: true,
                cache: None,
            },
        )?;
        Ok(json!({ "shape": shape }))
    }
}

struct ShowTable;

impl CellCall for ShowTable {
    fn call(&self, args: &Value, cx: &CallContext<'_>) -> Result<Value, MagicError> {
        let path = cell_file(args, "show_table", cx)?;
        let df = read_copy(&path, "the cell's value")?;
        let bundle = frame_bundle(&df);
        let mut answer = serde_json::Map::new();
        for mime in ["text/html", "text/plain"] {
            if let Some(Value::String(text)) = bundle.data.get(mime) {
                answer.insert(mime.to_string(), Value::String(text.clone()));
            }
        }
        Ok(Value::Object(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipc(dir: &Path, name: &str, df: &mut DataFrame) -> PathBuf {
        let path = dir.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        IpcWriter::new(&mut file).finish(df).unwrap();
        path
    }

    #[test]
    fn tables_go_to_cells_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let cx = CallContext { dir: dir.path() };
        let mut registry = Registry::empty();
        let catalog = Arc::new(Catalog::default());
        register(&mut registry, catalog.clone());

        let mut scores = df!("model" => ["a", "b"], "score" => [0.5, 0.9]).unwrap();
        let path = ipc(dir.path(), "cell-1-scores.arrow", &mut scores);
        let saved = registry
            .call("save_table", &json!({"name": "scores", "path": path}), &cx)
            .unwrap();
        assert_eq!(saved, json!({"shape": [2, 2]}));
        assert!(!path.exists(), "the handed-over file is removed once read");

        let answer = registry
            .call("table", &json!({"name": "scores"}), &cx)
            .unwrap();
        let back = read_copy(Path::new(answer["path"].as_str().unwrap()), "back").unwrap();
        assert!(back.equals(&scores));
        let sql = catalog
            .query("SELECT model FROM scores WHERE score > 0.6")
            .unwrap();
        assert_eq!(run(sql).unwrap().height(), 1);
    }

    #[test]
    fn bad_calls_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let cx = CallContext { dir: dir.path() };
        let mut registry = Registry::empty();
        register(&mut registry, Arc::new(Catalog::default()));

        let missing = registry
            .call("table", &json!({"name": "nope"}), &cx)
            .unwrap_err();
        assert_eq!(missing.ename, "UnknownTable");
        let outside = registry
            .call(
                "save_table",
                &json!({"name": "t", "path": "/etc/passwd"}),
                &cx,
            )
            .unwrap_err();
        assert!(outside.evalue.contains("cell folder"), "{}", outside.evalue);
        let bad_name = registry
            .call(
                "save_table",
                &json!({"name": "no spaces", "path": "x"}),
                &cx,
            )
            .unwrap_err();
        assert!(
            bad_name.evalue.contains("not a table name"),
            "{}",
            bad_name.evalue
        );
        let no_args = registry.call("table", &json!({}), &cx).unwrap_err();
        assert!(no_args.evalue.contains("`name`"), "{}", no_args.evalue);
        let broken = dir.path().join("cell-2-x.arrow");
        std::fs::write(&broken, b"not arrow").unwrap();
        let unreadable = registry
            .call("show_table", &json!({"path": broken}), &cx)
            .unwrap_err();
        assert!(
            unreadable.evalue.contains("the cell's value"),
            "{}",
            unreadable.evalue
        );
        assert_eq!(
            registry.call("nope", &json!({}), &cx).unwrap_err().ename,
            "UnknownCall"
        );
    }
}
