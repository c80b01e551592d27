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
    let (notebook, runtime) = app.workspace.open_handles(&id).await?;
    let command = match action.as_str() {
        "execute" => {
            let wanted = cells_wanted(&body)?;
            let cells = Workspace::code_cells(&notebook, wanted.as_deref())?;
            let queued: Vec<String> = cells.iter().map(|(id, _)| id.clone()).collect();
            app.kernels
                .send(
                    &id,
                    &runtime,
                    Command::Execute {
                        cells,
                        by: caller.0.name.clone(),
                    },
                    &caller.0.token_id,
                )
                .map_err(refused)?;
            return Ok((StatusCode::ACCEPTED, Json(json!({ "queued": queued }))).into_response());
        }
        "interrupt" => Command::Interrupt,
        "restart" => Command::Restart,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no kernel action {other:?}; use execute, interrupt or restart"),
            ))
        }
    };
    app.kernels
        .send(&id, &runtime, command, &caller.0.token_id)
        .map_err(refused)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response())
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
