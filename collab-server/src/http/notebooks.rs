//! The workspace's REST API: list, create (empty, titled, or from an `.ipynb`),
//! read, rename, delete, and export notebooks. Reading needs any token, creating and
//! renaming an editor's, deleting an owner's.

use super::{ApiError, Caller};
use crate::app::App;
use crate::auth::Role;
use crate::ipynb;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// `GET /api/notebooks`: every notebook's index entry, oldest first.
pub async fn list(State(app): State<Arc<App>>, _: Caller) -> Json<Value> {
    Json(json!({ "notebooks": app.workspace.entries() }))
}

/// What the browser workspace needs to start: the index document and who you are.
pub async fn get_workspace(State(app): State<Arc<App>>, Caller(who): Caller) -> Json<Value> {
    Json(json!({
        "index": app.workspace.index_url(),
        "user": { "name": who.name, "role": who.role.as_str(), "token_id": who.token_id },
    }))
}

/// `GET /api/notebooks/{id}`: its index entry.
pub async fn get(
    State(app): State<Arc<App>>,
    _: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = app
        .workspace
        .index_entry(&id)
        .ok_or(crate::workspace::WorkspaceError::NotFound(id))?;
    Ok(Json(entry))
}

/// `POST /api/notebooks` with an `.ipynb` file, `{"title": ...}` or nothing
/// (`?title=` also names it).
pub async fn create(
    State(app): State<Arc<App>>,
    caller: Caller,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor, "creating a notebook")?;
    let request = parse_create(&body, &uri)?;
    let entry = app
        .workspace
        .create(request.title, request.notebook.as_ref())
        .await?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

/// `PATCH /api/notebooks/{id}` with `{"title": ...}`: renames a notebook.
pub async fn rename(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Editor, "renaming a notebook")?;
    let request: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not JSON ({e}); send {{\"title\": \"...\"}}"
        ))
    })?;
    let title = request
        .get("title")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("send {\"title\": \"...\"} with a title that is not empty")
        })?;
    if title.chars().count() > 200 {
        return Err(ApiError::bad_request("a title has at most 200 characters"));
    }
    Ok(Json(app.workspace.rename(&id, title).await?))
}

/// `DELETE /api/notebooks/{id}`: owners only.
pub async fn delete(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Owner, "deleting a notebook")?;
    app.workspace.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/notebooks/{id}/ipynb`: the notebook as an `.ipynb` download.
pub async fn export_ipynb(
    State(app): State<Arc<App>>,
    _: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (json, title) = app.workspace.snapshot(&id).await?;
    let text = ipynb::to_file_text(&json);
    Ok(download(
        &title,
        "ipynb",
        "application/x-ipynb+json",
        text.into_bytes(),
    ))
}

/// `GET /api/notebooks/{id}/export?format=html|markdown|ipynb&no_input=1&toc=1&title=T&interactive=1`:
/// the report `ferrolab export` writes, made from the notebook as it is now.
/// Markdown comes as one file, its images inline; `interactive` takes the chart
/// script from the served web build.
pub async fn export_report(
    State(app): State<Arc<App>>,
    _: Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let format: ferrolab_export::Format = query
        .get("format")
        .map(String::as_str)
        .unwrap_or("html")
        .parse()
        .map_err(|e: ferrolab_export::ExportError| ApiError::bad_request(e.0))?;
    let flag = |key: &str| {
        query
            .get(key)
            .is_some_and(|v| matches!(v.as_str(), "" | "1" | "true" | "yes"))
    };
    let cannot_export =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_export", message);
    let chart_script = if flag("interactive") {
        if format != ferrolab_export::Format::Html {
            return Err(ApiError::bad_request(
                "interactive is for HTML reports; leave it out for other formats",
            ));
        }
        let Some(web) = app.web.as_deref() else {
            return Err(cannot_export(
                "interactive charts need the web build (make web), and this server serves none"
                    .into(),
            ));
        };
        let web = web.to_path_buf();
        let script = tokio::task::spawn_blocking(move || ferrolab_export::chart_script(Some(&web)))
            .await
            .map_err(ApiError::internal)?;
        Some(script.map_err(|e| cannot_export(e.0))?)
    } else {
        None
    };
    let (json, title) = app.workspace.snapshot(&id).await?;
    let options = ferrolab_export::Options {
        format,
        no_input: flag("no_input"),
        toc: flag("toc"),
        title: query.get("title").filter(|t| !t.trim().is_empty()).cloned(),
        fallback_title: title.clone(),
        files_dir: None,
        chart_script,
    };
    let exported = tokio::task::spawn_blocking(move || ferrolab_export::export(&json, &options))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| cannot_export(e.0))?;
    Ok(download(
        &title,
        format.extension(),
        format.content_type(),
        exported.document,
    ))
}

/// A download of `body` named after the notebook's title.
fn download(title: &str, extension: &str, content_type: &str, body: Vec<u8>) -> Response {
    let file_name: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.{extension}\"", file_name.trim()),
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Default)]
struct CreateRequest {
    title: Option<String>,
    notebook: Option<ipynb::Notebook>,
}

fn parse_create(body: &[u8], uri: &Uri) -> Result<CreateRequest, ApiError> {
    let mut request = CreateRequest::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_json", format!("the body is not valid JSON ({e}); send an .ipynb file, {{\"title\": ...}}, or nothing"))
        })?;
        if value.get("cells").is_some() || value.get("nbformat").is_some() {
            let notebook = ipynb::Notebook::from_json(value).map_err(|e| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_notebook", e.0)
            })?;
            request.title = notebook.title();
            request.notebook = Some(notebook);
        } else if let Some(title) = value.get("title") {
            request.title = Some(
                title
                    .as_str()
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_title",
                            "\"title\" must be a string",
                        )
                    })?
                    .to_string(),
            );
        } else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "expected an .ipynb notebook (with \"cells\" and \"nbformat\") or {\"title\": ...}",
            ));
        }
    }
    if let Some(title) = uri
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("title=")))
    {
        request.title = Some(percent_decode(title));
    }
    Ok(request)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_request_is_read_from_body_and_query() {
        let uri: Uri = "/api/notebooks?title=Q3%20report".parse().unwrap();
        let request = parse_create(b"", &uri).unwrap();
        assert_eq!(request.title.as_deref(), Some("Q3 report"));
        assert!(request.notebook.is_none());

        let uri: Uri = "/api/notebooks".parse().unwrap();
        let request = parse_create(br#"{"title": "plain"}"#, &uri).unwrap();
        assert_eq!(request.title.as_deref(), Some("plain"));

        for (body, code) in [
            (&b"{not json"[..], "bad_json"),
            (br#"{"title": 3}"#, "bad_title"),
            (br#"{"other": 1}"#, "bad_body"),
            (br#"{"cells": 5, "nbformat": 4}"#, "bad_notebook"),
        ] {
            let error = parse_create(body, &uri).err().expect("an error");
            assert_eq!(error.code, code, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn percent_decoding_keeps_what_it_cannot_decode() {
        assert_eq!(percent_decode("a+b%21"), "a b!");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
