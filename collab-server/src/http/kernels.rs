//! `POST /api/notebooks/{id}/kernel/execute` (`{"cells": [ids]}` or `{"all": true}`),
//! `.../kernel/interrupt`, `.../kernel/restart`: the notebook's shared kernel.
//! Editors only. Sources are taken as they are now; outputs arrive in the runtime
//! document.

use super::{ApiError, Caller};
use crate::app::App;
use crate::auth::Role;
use crate::kernels::{Command, KernelRefusal};
use crate::workspace::Workspace;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn action(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor, "running cells")?;
    if !matches!(action.as_str(), "execute" | "interrupt" | "restart") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no kernel action {action:?}; use execute, interrupt or restart"),
        ));
    }
    let wanted = match action.as_str() {
        "execute" => cells_wanted(&body)?,
        _ => None,
    };
    // In the cluster mode the kernel may be another replica's: hand it the request.
    if let Some(replica) = app.kernels.holder(&id).await.map_err(ApiError::internal)? {
        let (notebook, _) = app.workspace.open_handles(&id).await?;
        let queued = match action.as_str() {
            "execute" => Some(
                Workspace::code_cells(&notebook, wanted.as_deref())?
                    .into_iter()
                    .map(|(cell, _)| cell)
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        let request = json!({
            "to": replica,
            "notebook": id,
            "action": action,
            "cells": wanted,
            "by": caller.0.name,
            "starter": caller.0.token_id,
        });
        let database = app
            .storage()
            .database()
            .ok_or_else(|| ApiError::internal("a kernel lease without a database"))?;
        database
            .forward_kernel(&request)
            .await
            .map_err(|error| ApiError::bad_request(format!("{error:#}")))?;
        let answer = match queued {
            Some(queued) => json!({ "queued": queued }),
            None => json!({ "ok": true }),
        };
        return Ok((StatusCode::ACCEPTED, Json(answer)).into_response());
    }
    let answer = run_here(
        &app,
        &id,
        &action,
        wanted,
        &caller.0.name,
        &caller.0.token_id,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// Hands a kernel action to this replica's queue for notebook `id` (`wanted`:
/// the cells to execute, `None` for all); answers what the API answers.
pub(crate) async fn run_here(
    app: &App,
    id: &str,
    action: &str,
    wanted: Option<Vec<String>>,
    by: &str,
    starter: &str,
) -> Result<Value, ApiError> {
    let (notebook, runtime) = app.workspace.open_handles(id).await?;
    let (command, answer) = match action {
        "execute" => {
            let cells = Workspace::code_cells(&notebook, wanted.as_deref())?;
            let queued: Vec<String> = cells.iter().map(|(id, _)| id.clone()).collect();
            let by = by.to_string();
            (Command::Execute { cells, by }, json!({ "queued": queued }))
        }
        "interrupt" => (Command::Interrupt, json!({ "ok": true })),
        "restart" => (Command::Restart, json!({ "ok": true })),
        other => return Err(ApiError::bad_request(format!("no kernel action {other:?}"))),
    };
    app.kernels
        .send(id, &runtime, command, starter)
        .map_err(refused)?;
    Ok(answer)
}

fn refused(refusal: KernelRefusal) -> ApiError {
    let status = match refusal {
        KernelRefusal::BadId(_) => StatusCode::BAD_REQUEST,
        KernelRefusal::ServerFull(_) | KernelRefusal::TokenFull(_) => StatusCode::TOO_MANY_REQUESTS,
    };
    ApiError::new(status, "kernel_refused", refusal.to_string())
}

/// The cells an execute request names: `Some(ids)`, or `None` for `{"all": true}`.
fn cells_wanted(body: &[u8]) -> Result<Option<Vec<String>>, ApiError> {
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not JSON ({e}); send {{\"cells\": [ids]}} or {{\"all\": true}}"
            ))
        })?
    };
    let all = request.get("all").and_then(Value::as_bool).unwrap_or(false);
    let not_a_list = || ApiError::bad_request("`cells` must be a list of cell ids");
    let wanted = match request.get("cells") {
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(not_a_list)?,
        Some(_) => return Err(not_a_list()),
        None if all => Vec::new(),
        None => {
            return Err(ApiError::bad_request(
                "send {\"cells\": [ids]} or {\"all\": true}",
            ))
        }
    };
    // With both, `all` wins (the list must still be well formed).
    Ok((!all).then_some(wanted))
}

#[cfg(test)]
mod tests {
    use super::cells_wanted;

    #[test]
    fn an_execute_request_names_cells_or_all() {
        assert_eq!(
            cells_wanted(br#"{"cells": ["a", "b"]}"#).unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(cells_wanted(br#"{"all": true}"#).unwrap(), None);
        for bad in [
            &b""[..],
            b"{}",
            br#"{"cells": "a"}"#,
            br#"{"cells": [1]}"#,
            b"[",
            br#"{"all": false}"#,
        ] {
            assert!(
                cells_wanted(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
