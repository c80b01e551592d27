//! `.ipynb` import and export (nbformat 4), between files and documents.
//!
//! Files are read and written by `ferrolab_export::ipynb`, the one reader the
//! exporter uses too (any 4.x file upgraded to 4.5, one id-repair rule, multi-line
//! strings joined; written as Jupyter writes files). Here a read notebook fills a
//! notebook document (sources, metadata, attachments, positions) and a runtime
//! document (outputs and execution counts), and export puts the two back together,
//! so an import followed by an export reads back equal.

use crate::schema::{self, get_json, get_map, get_str};
use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ObjType, ReadDoc, ROOT};
use serde_json::{Map, Value as Json};

pub use ferrolab_export::ipynb::{parse, to_file_text, Notebook};

/// Writes `notebook` into a fresh notebook document and runtime document.
pub fn fill(
    notebook: &Notebook,
    nb_doc: &mut Automerge,
    rt_doc: &mut Automerge,
) -> Result<(), AutomergeError> {
    let positions = schema::spaced_positions(notebook.cells.len());
    nb_doc
        .transact::<_, _, AutomergeError>(|tx| {
            let metadata = get_map(tx, &ROOT, "metadata").ok_or(AutomergeError::Fail)?;
            for (key, value) in &notebook.metadata {
                schema::put_json(tx, &metadata, key, value)?;
            }
            let cells = get_map(tx, &ROOT, "cells").ok_or(AutomergeError::Fail)?;
            for (cell, position) in notebook.cells.iter().zip(&positions) {
                let id = cell.get("id").and_then(Json::as_str).unwrap_or_default();
                let obj = tx.put_object(&cells, id, ObjType::Map)?;
                tx.put(&obj, "id", id)?;
                tx.put(
                    &obj,
                    "cell_type",
                    cell.get("cell_type")
                        .and_then(Json::as_str)
                        .unwrap_or("code"),
                )?;
                tx.put(&obj, "position", position.as_str())?;
                let source = tx.put_object(&obj, "source", ObjType::Text)?;
                tx.splice_text(
                    &source,
                    0,
                    0,
                    cell.get("source").and_then(Json::as_str).unwrap_or(""),
                )?;
                let empty = Json::Object(Map::new());
                schema::put_json(tx, &obj, "metadata", cell.get("metadata").unwrap_or(&empty))?;
                if let Some(attachments) = cell.get("attachments") {
                    schema::put_json(tx, &obj, "attachments", attachments)?;
                }
            }
            Ok(())
        })
        .map_err(|failure| failure.error)?;
    rt_doc
        .transact::<_, _, AutomergeError>(|tx| {
            let cells = get_map(tx, &ROOT, "cells").ok_or(AutomergeError::Fail)?;
            for cell in &notebook.cells {
                if cell.get("cell_type").and_then(Json::as_str) != Some("code") {
                    continue;
                }
                let id = cell.get("id").and_then(Json::as_str).unwrap_or_default();
                let obj = tx.put_object(&cells, id, ObjType::Map)?;
                schema::put_json(
                    tx,
                    &obj,
                    "execution_count",
                    cell.get("execution_count").unwrap_or(&Json::Null),
                )?;
                schema::put_json(
                    tx,
                    &obj,
                    "outputs",
                    cell.get("outputs").unwrap_or(&Json::Array(Vec::new())),
                )?;
            }
            Ok(())
        })
        .map_err(|failure| failure.error)?;
    Ok(())
}

/// The cells of a notebook document in display order: by position, ties by id.
pub fn ordered_cells<R: ReadDoc>(doc: &R) -> Vec<(String, automerge::ObjId)> {
    let Some(cells) = get_map(doc, &ROOT, "cells") else {
        return Vec::new();
    };
    let mut ordered: Vec<(String, String, automerge::ObjId)> = doc
        .map_range(&cells, ..)
        .map(|item| {
            let id = item.id();
            let position = get_str(doc, &id, "position").unwrap_or_default();
            (position, item.key.to_string(), id)
        })
        .collect();
    ordered.sort();
    ordered.into_iter().map(|(_, key, id)| (key, id)).collect()
}

/// Puts a notebook document and its runtime document back into nbformat 4.5 JSON.
pub fn export<N: ReadDoc, R: ReadDoc>(nb_doc: &N, rt_doc: &R) -> Json {
    let runtime_cells = get_map(rt_doc, &ROOT, "cells");
    let mut cells = Vec::new();
    for (id, obj) in ordered_cells(nb_doc) {
        let kind = get_str(nb_doc, &obj, "cell_type").unwrap_or_else(|| "code".into());
        let mut cell = Map::new();
        cell.insert("id".into(), Json::String(id.clone()));
        cell.insert("cell_type".into(), Json::String(kind.clone()));
        cell.insert(
            "source".into(),
            Json::String(get_str(nb_doc, &obj, "source").unwrap_or_default()),
        );
        cell.insert(
            "metadata".into(),
            get_json(nb_doc, &obj, "metadata").unwrap_or_else(|| Json::Object(Map::new())),
        );
        if kind == "code" {
            let run = runtime_cells
                .as_ref()
                .and_then(|cells| get_map(rt_doc, cells, &id));
            let field = |key: &str| run.as_ref().and_then(|run| get_json(rt_doc, run, key));
            cell.insert(
                "execution_count".into(),
                field("execution_count").unwrap_or(Json::Null),
            );
            cell.insert(
                "outputs".into(),
                field("outputs").unwrap_or_else(|| Json::Array(Vec::new())),
            );
        } else if let Some(attachments) = get_json(nb_doc, &obj, "attachments") {
            cell.insert("attachments".into(), attachments);
        }
        cells.push(Json::Object(cell));
    }
    let mut root = Map::new();
    root.insert("cells".into(), Json::Array(cells));
    root.insert(
        "metadata".into(),
        get_json(nb_doc, &ROOT, "metadata").unwrap_or_else(|| Json::Object(Map::new())),
    );
    root.insert("nbformat".into(), Json::from(4));
    root.insert("nbformat_minor".into(), Json::from(5));
    Json::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(input: Json) -> Json {
        let notebook = Notebook::from_json(input).expect("parse");
        let mut nb = schema::notebook_skeleton();
        let mut rt = schema::runtime_skeleton();
        fill(&notebook, &mut nb, &mut rt).expect("fill");
        let text = to_file_text(&export(&nb, &rt));
        serde_json::from_str(&text).expect("exported JSON")
    }

    #[test]
    fn old_minor_versions_get_cell_ids() {
        let out = round_trip(json!({
            "nbformat": 4, "nbformat_minor": 2, "metadata": {},
            "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# a\n", "b"]}]
        }));
        assert_eq!(out["nbformat_minor"], 5);
        let cell = &out["cells"][0];
        assert_eq!(cell["id"], "cell-0");
        assert_eq!(cell["source"], json!(["# a\n", "b"]));
    }

    #[test]
    fn outputs_and_counts_survive() {
        let input = json!({
            "nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "ferrolab"}},
            "cells": [
                {"id": "b", "cell_type": "code", "metadata": {"tags": ["x"]}, "source": "1+1",
                 "execution_count": 3, "outputs": [
                    {"output_type": "execute_result", "execution_count": 3, "metadata": {},
                     "data": {"text/plain": "2", "application/json": {"a": [1, 2.5, null]}}},
                    {"output_type": "stream", "name": "stdout", "text": "hi\n"}]},
                {"id": "a", "cell_type": "raw", "metadata": {}, "source": ""}
            ]
        });
        let out = round_trip(input);
        assert_eq!(
            out["cells"][0]["id"], "b",
            "order is kept, not sorted by id"
        );
        assert_eq!(out["cells"][0]["execution_count"], 3);
        assert_eq!(
            out["cells"][0]["outputs"][0]["data"]["application/json"],
            json!({"a": [1, 2.5, null]})
        );
        assert_eq!(out["cells"][0]["outputs"][1]["text"], json!(["hi\n"]));
        assert_eq!(out["metadata"]["kernelspec"]["name"], "ferrolab");
    }
}
