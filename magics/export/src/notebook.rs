//! A notebook as the exporters read it — typed cells with their kind, source, tags,
//! outputs and attachments — and the valid nbformat 4.5 file `--to ipynb` writes.
//! Both come from [`crate::ipynb::Notebook`], the one reader (and id-repair rule)
//! the collaboration server uses too.

use crate::ipynb;
use serde_json::{json, Map, Value as Json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Code,
    Markdown,
    Raw,
}

#[derive(Debug)]
pub struct Cell {
    pub id: String,
    pub kind: Kind,
    pub source: String,
    pub tags: Vec<String>,
    pub outputs: Vec<Json>,
    pub execution_count: Option<i64>,
    pub attachments: Map<String, Json>,
}

impl Cell {
    pub fn tagged(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

#[derive(Debug)]
pub struct Notebook {
    pub title: Option<String>,
    pub authors: Vec<String>,
    pub date: Option<String>,
    pub language: String,
    pub cells: Vec<Cell>,
}

/// A string, or a list of strings joined (nbformat allows both).
pub fn text(value: Option<&Json>) -> String {
    match value {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Array(parts)) => parts.iter().filter_map(Json::as_str).collect(),
        _ => String::new(),
    }
}

impl Notebook {
    /// The report view of a read file.
    pub fn of(file: &ipynb::Notebook) -> Self {
        let meta = &file.metadata;
        let title = meta.get("title").and_then(Json::as_str).map(str::to_string);
        let authors = match meta.get("authors") {
            Some(Json::Array(list)) => list
                .iter()
                .filter_map(|a| match a {
                    Json::String(s) => Some(s.clone()),
                    Json::Object(o) => o.get("name").and_then(Json::as_str).map(str::to_string),
                    _ => None,
                })
                .collect(),
            Some(Json::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let date = meta.get("date").and_then(Json::as_str).map(str::to_string);
        let language = meta
            .get("language_info")
            .and_then(|info| info.get("name"))
            .or_else(|| meta.get("kernelspec").and_then(|spec| spec.get("language")))
            .and_then(Json::as_str)
            .unwrap_or("rust")
            .to_ascii_lowercase();
        let mut cells = Vec::with_capacity(file.cells.len());
        for cell in &file.cells {
            // The reader has checked every cell's type.
            let kind = match cell.get("cell_type").and_then(Json::as_str) {
                Some("code") => Kind::Code,
                Some("markdown") => Kind::Markdown,
                _ => Kind::Raw,
            };
            let tags = match cell.get("metadata").and_then(|m| m.get("tags")) {
                Some(Json::Array(tags)) => tags
                    .iter()
                    .filter_map(Json::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            };
            cells.push(Cell {
                id: cell
                    .get("id")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_string(),
                kind,
                source: text(cell.get("source")),
                tags,
                outputs: match cell.get("outputs") {
                    Some(Json::Array(outputs)) if kind == Kind::Code => outputs.clone(),
                    _ => Vec::new(),
                },
                execution_count: cell.get("execution_count").and_then(Json::as_i64),
                attachments: match cell.get("attachments") {
                    Some(Json::Object(a)) => a.clone(),
                    _ => Map::new(),
                },
            });
        }
        Notebook {
            title,
            authors,
            date,
            language,
            cells,
        }
    }
}

fn object(value: Option<&Json>) -> Json {
    match value {
        Some(Json::Object(o)) => Json::Object(o.clone()),
        _ => json!({}),
    }
}

fn output(out: &Json) -> Option<Json> {
    let kind = out.get("output_type").and_then(Json::as_str)?;
    Some(match kind {
        "stream" => json!({
            "output_type": "stream",
            "name": match out.get("name").and_then(Json::as_str) { Some("stderr") => "stderr", _ => "stdout" },
            "text": text(out.get("text")),
        }),
        "display_data" => json!({
            "output_type": "display_data",
            "data": object(out.get("data")),
            "metadata": object(out.get("metadata")),
        }),
        "execute_result" => json!({
            "output_type": "execute_result",
            "data": object(out.get("data")),
            "metadata": object(out.get("metadata")),
            "execution_count": out.get("execution_count").and_then(Json::as_i64),
        }),
        "error" => json!({
            "output_type": "error",
            "ename": text(out.get("ename")),
            "evalue": text(out.get("evalue")),
            "traceback": match out.get("traceback") {
                Some(Json::Array(lines)) => Json::Array(lines.iter().map(|l| Json::String(text(Some(l)))).collect()),
                _ => json!([]),
            },
        }),
        _ => return None,
    })
}

/// A valid nbformat 4.5 notebook: cell ids (kept when valid and unique, else
/// made), only the keys the schema allows, sources and texts as strings.
pub fn normalize_ipynb(file: &ipynb::Notebook) -> Json {
    let mut cells = Vec::with_capacity(file.cells.len());
    for cell in &file.cells {
        let kind = cell
            .get("cell_type")
            .and_then(Json::as_str)
            .unwrap_or("raw");
        let id = cell.get("id").and_then(Json::as_str).unwrap_or_default();
        let mut out = Map::new();
        out.insert("id".into(), Json::String(id.to_string()));
        out.insert("cell_type".into(), Json::String(kind.into()));
        out.insert("metadata".into(), object(cell.get("metadata")));
        out.insert("source".into(), Json::String(text(cell.get("source"))));
        if kind == "code" {
            let outputs = match cell.get("outputs") {
                Some(Json::Array(list)) => list.iter().filter_map(output).collect(),
                _ => Vec::new(),
            };
            out.insert("outputs".into(), Json::Array(outputs));
            out.insert(
                "execution_count".into(),
                cell.get("execution_count")
                    .and_then(Json::as_i64)
                    .map(Json::from)
                    .unwrap_or(Json::Null),
            );
        } else if let Some(Json::Object(a)) = cell.get("attachments") {
            out.insert("attachments".into(), Json::Object(a.clone()));
        }
        cells.push(Json::Object(out));
    }
    json!({
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": Json::Object(file.metadata.clone()),
        "cells": cells,
    })
}
