//! `.ipynb` import and export (nbformat 4).
//!
//! Import reads any 4.x file, upgrades it to 4.5 (cell ids added, broken or
//! duplicated ids replaced, as `nbformat.validate` repairs them), joins
//! multi-line strings the way nbformat's reader does, and fills a notebook
//! document (sources, metadata, attachments, positions) and a runtime document
//! (outputs and execution counts). Export puts the two back together and writes
//! the file the way nbformat does (sorted keys, one-space indent, sources split
//! into lines), so an import followed by an export reads back equal.

use crate::schema::{self, get_json, get_map, get_str};
use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ObjType, ReadDoc, ROOT};
use serde_json::{Map, Value as Json};
use std::collections::HashSet;

#[derive(Debug)]
pub struct IpynbError(pub String);

impl std::fmt::Display for IpynbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IpynbError {}

fn bad(message: impl Into<String>) -> IpynbError {
    IpynbError(message.into())
}

/// A parsed, upgraded and normalised notebook.
#[derive(Debug, Clone)]
pub struct Notebook {
    pub metadata: Map<String, Json>,
    pub cells: Vec<Map<String, Json>>,
}

impl Notebook {
    pub fn title(&self) -> Option<String> {
        self.metadata
            .get("title")
            .and_then(Json::as_str)
            .map(str::to_owned)
    }
}

/// Parses an `.ipynb` body.
pub fn parse(bytes: &[u8]) -> Result<Notebook, IpynbError> {
    let json: Json = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "the body is not valid JSON ({e}); send the .ipynb file as it is on disk"
        ))
    })?;
    from_json(json)
}

pub fn from_json(json: Json) -> Result<Notebook, IpynbError> {
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
        None => return Err(bad("the notebook has no \"nbformat\" number; is this an .ipynb file?")),
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
    let mut seen = HashSet::new();
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
        let id_ok = cell
            .get("id")
            .and_then(Json::as_str)
            .is_some_and(|id| valid_cell_id(id) && !seen.contains(id));
        if !id_ok {
            cell.insert("id".into(), Json::String(new_cell_id(&seen)));
        }
        if let Some(id) = cell.get("id").and_then(Json::as_str) {
            seen.insert(id.to_string());
        }
        rejoin(&mut cell);
        cells.push(cell);
    }
    Ok(Notebook { metadata, cells })
}

fn valid_cell_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn new_cell_id(taken: &HashSet<String>) -> String {
    loop {
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        if !taken.contains(&id) {
            return id;
        }
    }
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
                    if let Some(text) = output.get_mut("text") {
                        join_lines(text);
                    }
                }
                None => {}
            }
        }
    }
}

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

    fn round_trip(input: Json) -> Json {
        let notebook = from_json(input).expect("parse");
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
        assert!(valid_cell_id(cell["id"].as_str().expect("id")));
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

    #[test]
    fn unsupported_files_say_what_to_do() {
        let error = from_json(json!({"nbformat": 3, "worksheets": []})).expect_err("v3");
        assert!(error.0.contains("JupyterLab"), "{error}");
        let error = parse(b"{not json").expect_err("garbage");
        assert!(error.0.contains("not valid JSON"), "{error}");
    }
}
