//! The `.ipynb` file: read once, the same way, by the exporter and by the
//! collaboration server's import, and written the way Jupyter writes it.
//!
//! Reading takes any nbformat 4.x file, upgrades it to 4.5 and repairs it with one
//! rule: a cell whose id is missing, not valid (1–64 of `A-Za-z0-9-_`) or already
//! taken gets `cell-N`, N its position (the next free number when that is taken
//! too). The rule is deterministic, so reading the same file twice gives the same
//! ids (folder sync merges disk edits by cell id). Multi-line strings are joined
//! the way nbformat's reader does. Writing splits them again, sorts keys and
//! indents by one space, as Jupyter does, so an exported file diffs cleanly
//! against a saved one.
//!
//! ```
//! use ferrolab_export::ipynb::Notebook;
//! use serde_json::json;
//!
//! let file = json!({"nbformat": 4, "nbformat_minor": 2, "metadata": {},
//!     "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# a\n", "b"]}]});
//! let notebook = Notebook::from_json(file).unwrap();
//! assert_eq!(notebook.cells[0]["id"], "cell-0");
//! assert_eq!(notebook.cells[0]["source"], "# a\nb");
//! ```

use crate::ExportError;
use serde_json::{Map, Value as Json};
use std::collections::HashSet;

/// A parsed, upgraded and repaired notebook: its metadata, and its cells as
/// nbformat objects, each with a valid, unique `id` and a known `cell_type`.
#[derive(Debug, Clone)]
pub struct Notebook {
    pub metadata: Map<String, Json>,
    pub cells: Vec<Map<String, Json>>,
}

fn bad(message: impl Into<String>) -> ExportError {
    ExportError(message.into())
}

/// Parses an `.ipynb` file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Notebook, ExportError> {
    let json: Json = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "the body is not valid JSON ({e}); send the .ipynb file as it is on disk"
        ))
    })?;
    Notebook::from_json(json)
}

impl Notebook {
    /// Reads a notebook from its JSON.
    pub fn from_json(json: Json) -> Result<Notebook, ExportError> {
        let Json::Object(mut root) = json else {
            return Err(bad(
                "a notebook is a JSON object with \"cells\" and \"metadata\"",
            ));
        };
        match root.get("nbformat").and_then(Json::as_i64) {
            Some(4) => {}
            Some(other) => {
                return Err(bad(format!(
                    "nbformat {other} notebooks are not supported; open and save the file in JupyterLab to convert it to nbformat 4"
                )))
            }
            None => {
                return Err(bad(
                    "the notebook has no \"nbformat\" number; is this an .ipynb file?",
                ))
            }
        }
        let metadata = match root.remove("metadata") {
            Some(Json::Object(map)) => map,
            None => Map::new(),
            Some(_) => return Err(bad("the notebook's \"metadata\" must be an object")),
        };
        let raw_cells = match root.remove("cells") {
            Some(Json::Array(cells)) => cells,
            None => Vec::new(),
            Some(_) => return Err(bad("the notebook's \"cells\" must be a list")),
        };
        let mut taken = HashSet::new();
        let mut cells = Vec::with_capacity(raw_cells.len());
        for (index, cell) in raw_cells.into_iter().enumerate() {
            let Json::Object(mut cell) = cell else {
                return Err(bad(format!("cell {index} is not a JSON object")));
            };
            let kind = cell.get("cell_type").and_then(Json::as_str).unwrap_or("");
            if !matches!(kind, "code" | "markdown" | "raw") {
                return Err(bad(format!(
                    "cell {index} has cell_type {kind:?}; nbformat 4 knows code, markdown and raw"
                )));
            }
            let id = repaired_id(cell.get("id").and_then(Json::as_str), index, &taken);
            taken.insert(id.clone());
            cell.insert("id".into(), Json::String(id));
            rejoin(&mut cell);
            cells.push(cell);
        }
        Ok(Notebook { metadata, cells })
    }

    /// The title in the notebook's metadata, if it has one.
    pub fn title(&self) -> Option<String> {
        self.metadata
            .get("title")
            .and_then(Json::as_str)
            .map(str::to_owned)
    }

    /// The notebook as nbformat 4.5 JSON.
    pub fn to_json(&self) -> Json {
        let mut root = Map::new();
        root.insert("metadata".into(), Json::Object(self.metadata.clone()));
        root.insert(
            "cells".into(),
            Json::Array(self.cells.iter().cloned().map(Json::Object).collect()),
        );
        root.insert("nbformat".into(), Json::from(4));
        root.insert("nbformat_minor".into(), Json::from(5));
        Json::Object(root)
    }
}

/// Whether `id` is a valid nbformat 4.5 cell id.
pub fn valid_cell_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The one id-repair rule: the cell's own id when it is valid and not taken, else
/// `cell-N` from its position `index` upward.
fn repaired_id(id: Option<&str>, index: usize, taken: &HashSet<String>) -> String {
    if let Some(id) = id.filter(|id| valid_cell_id(id) && !taken.contains(*id)) {
        return id.to_string();
    }
    (index..)
        .map(|n| format!("cell-{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_default()
}

fn join_lines(value: &mut Json) {
    if let Json::Array(items) = value {
        if items.iter().all(Json::is_string) {
            let joined: String = items.iter().filter_map(Json::as_str).collect();
            *value = Json::String(joined);
        }
    }
}

fn is_json_mime(mime: &str) -> bool {
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn rejoin_bundle(bundle: Option<&mut Json>) {
    if let Some(Json::Object(data)) = bundle {
        for (mime, value) in data.iter_mut() {
            if !is_json_mime(mime) {
                join_lines(value);
            }
        }
    }
}

/// nbformat's `rejoin_lines`, for one cell.
fn rejoin(cell: &mut Map<String, Json>) {
    if let Some(source) = cell.get_mut("source") {
        join_lines(source);
    }
    if let Some(Json::Object(attachments)) = cell.get_mut("attachments") {
        for bundle in attachments.values_mut() {
            rejoin_bundle(Some(bundle));
        }
    }
    if let Some(Json::Array(outputs)) = cell.get_mut("outputs") {
        for output in outputs.iter_mut().filter_map(Json::as_object_mut) {
            match output.get("output_type").and_then(Json::as_str) {
                Some("execute_result" | "display_data") => rejoin_bundle(output.get_mut("data")),
                Some(_) => {
                    for key in ["text", "ename", "evalue"] {
                        if let Some(text) = output.get_mut(key) {
                            join_lines(text);
                        }
                    }
                }
                None => {}
            }
        }
    }
}

fn split_lines(value: &mut Json) {
    if let Json::String(text) = value {
        let lines: Vec<Json> = text
            .split_inclusive('\n')
            .map(|l| Json::String(l.to_string()))
            .collect();
        *value = Json::Array(lines);
    }
}

fn split_bundle(bundle: Option<&mut Json>) {
    if let Some(Json::Object(data)) = bundle {
        for (mime, value) in data.iter_mut() {
            if mime.starts_with("text/")
                || mime == "application/javascript"
                || mime == "image/svg+xml"
            {
                split_lines(value);
            }
        }
    }
}

/// nbformat's `split_lines`, then sorted keys and a one-space indent, as
/// Jupyter writes files (so exports diff cleanly against saved notebooks).
pub fn to_file_text(notebook: &Json) -> String {
    let mut notebook = notebook.clone();
    if let Some(Json::Array(cells)) = notebook.get_mut("cells") {
        for cell in cells.iter_mut().filter_map(Json::as_object_mut) {
            if let Some(source) = cell.get_mut("source") {
                split_lines(source);
            }
            if let Some(Json::Object(attachments)) = cell.get_mut("attachments") {
                for bundle in attachments.values_mut() {
                    split_bundle(Some(bundle));
                }
            }
            if let Some(Json::Array(outputs)) = cell.get_mut("outputs") {
                for output in outputs.iter_mut().filter_map(Json::as_object_mut) {
                    match output.get("output_type").and_then(Json::as_str) {
                        Some("execute_result" | "display_data") => {
                            split_bundle(output.get_mut("data"))
                        }
                        Some("stream") => {
                            if let Some(text) = output.get_mut("text") {
                                split_lines(text);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    let sorted = sort_keys(notebook);
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if serde::Serialize::serialize(&sorted, &mut serializer).is_err() {
        return String::new();
    }
    let mut text = String::from_utf8(out).unwrap_or_default();
    text.push('\n');
    text
}

fn sort_keys(value: Json) -> Json {
    match value {
        Json::Object(map) => {
            let mut entries: Vec<(String, Json)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Json::Array(items) => Json::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(cells: Json) -> Vec<String> {
        let notebook =
            Notebook::from_json(json!({"nbformat": 4, "nbformat_minor": 4, "cells": cells}))
                .expect("reads");
        notebook
            .cells
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_string())
            .collect()
    }

    #[test]
    fn one_id_rule_for_missing_invalid_and_duplicate_ids() {
        let cell = |id: Json| json!({"cell_type": "raw", "metadata": {}, "source": "", "id": id});
        assert_eq!(
            ids(json!([
                cell(json!("a")),
                cell(json!("a")),
                cell(json!("bad id!")),
                cell(Json::Null)
            ])),
            ["a", "cell-1", "cell-2", "cell-3"]
        );
        // A repaired id skips the ids earlier cells hold.
        assert_eq!(
            ids(json!([cell(json!("cell-1")), cell(json!("x y"))])),
            ["cell-1", "cell-2"]
        );
        // The same file reads to the same ids every time.
        let file = json!([cell(Json::Null), cell(Json::Null)]);
        assert_eq!(ids(file.clone()), ids(file));
    }

    #[test]
    fn lines_are_joined_on_read_and_split_on_write() {
        let notebook = Notebook::from_json(json!({
            "nbformat": 4, "nbformat_minor": 5, "metadata": {"title": "T"},
            "cells": [{"id": "c", "cell_type": "code", "metadata": {}, "source": ["a\n", "b"],
                "execution_count": 1, "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["x\n", "y"]},
                    {"output_type": "display_data", "metadata": {},
                     "data": {"text/plain": ["1\n", "2"], "application/json": ["kept", "as is"]}}]}]
        }))
        .expect("reads");
        assert_eq!(notebook.title().as_deref(), Some("T"));
        let cell = &notebook.cells[0];
        assert_eq!(cell["source"], "a\nb");
        assert_eq!(cell["outputs"][0]["text"], "x\ny");
        assert_eq!(cell["outputs"][1]["data"]["text/plain"], "1\n2");
        assert_eq!(
            cell["outputs"][1]["data"]["application/json"],
            json!(["kept", "as is"])
        );
        let text = to_file_text(&notebook.to_json());
        assert!(text.starts_with("{\n \"cells\": [\n"), "{text}");
        let back: Json = serde_json::from_str(&text).expect("JSON");
        assert_eq!(back["cells"][0]["source"], json!(["a\n", "b"]));
        assert_eq!(back["nbformat_minor"], 5);
    }

    #[test]
    fn unsupported_files_say_what_to_do() {
        let error = Notebook::from_json(json!({"nbformat": 3, "worksheets": []})).expect_err("v3");
        assert!(error.0.contains("JupyterLab"), "{error}");
        let error = parse(b"{not json").expect_err("garbage");
        assert!(error.0.contains("not valid JSON"), "{error}");
        let error = Notebook::from_json(json!({"nbformat": 4, "cells": [{"cell_type": "weird"}]}))
            .expect_err("cell type");
        assert!(error.0.contains("code, markdown and raw"), "{error}");
    }
}
