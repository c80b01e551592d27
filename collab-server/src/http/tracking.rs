//! The part of MLflow's REST API (`/api/2.0/mlflow/...`) that the `mlflow` client
//! uses for tracking: experiments, runs, params, metrics, tags, search and metric
//! history; the model registry (registered models, versions, aliases, tags); and,
//! under `/api/2.0/ferrolab/`, what MLflow has no API for: reviews, evaluation
//! links, the promotion policy and the audit log. Requests carry the collaboration server's tokens (`MLFLOW_TRACKING_TOKEN`
//! makes the client send `Authorization: Bearer TOKEN`); reading needs any token,
//! writing an editor's. Errors are MLflow's: `{"error_code", "message"}`.

use crate::app::App;
use crate::auth::Identity;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferrolab_tracking::api::{dispatch, require, search_runs_raw, Endpoint};
use ferrolab_tracking::Role;
use ferrolab_tracking::TrackingError;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The HTTP status of each kind of tracking error: the one place where tracking
/// errors meet HTTP.
fn status_of(error: &TrackingError) -> StatusCode {
    match error {
        TrackingError::NotFound(_) | TrackingError::EndpointNotFound(_) => StatusCode::NOT_FOUND,
        TrackingError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        TrackingError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        TrackingError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        TrackingError::InvalidParameter(_)
        | TrackingError::AlreadyExists(_)
        | TrackingError::MalformedRequest(_) => StatusCode::BAD_REQUEST,
    }
}

fn error_response(e: TrackingError) -> Response {
    (
        status_of(&e),
        Json(json!({"error_code": e.code(), "message": e.message()})),
    )
        .into_response()
}

/// The caller of a tracking request. Like [`super::Caller`], but refused in
/// MLflow's error format (`UNAUTHENTICATED`), which the `mlflow` client reads.
pub struct TrackingCaller(Identity);

impl FromRequestParts<Arc<App>> for TrackingCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        super::authenticate(app, parts)
            .map(TrackingCaller)
            .map_err(|e| error_response(TrackingError::Unauthenticated(e.to_string())))
    }
}

/// Runs a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TrackingError> + Send + 'static,
) -> Result<T, TrackingError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(TrackingError::Internal(format!("the request failed: {e}"))))
}

/// Every `/api/2.0/mlflow/{endpoint}` call: the query string and the JSON body are
/// read alike (the client sends GET parameters in the query).
pub async fn handle(
    State(app): State<Arc<App>>,
    TrackingCaller(who): TrackingCaller,
    method: Method,
    Path(endpoint): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let endpoint = match (endpoint.as_str(), &method) {
        ("registered-models/alias", &Method::GET) => "registered-models/alias/get".to_string(),
        ("registered-models/alias", &Method::DELETE) => {
            "registered-models/alias/delete".to_string()
        }
        _ => endpoint,
    };
    serve(app, who, endpoint, query, body).await
}

/// Every `/api/2.0/ferrolab/{endpoint}` call: governance, which MLflow has no API for.
pub async fn handle_ferrolab(
    State(app): State<Arc<App>>,
    TrackingCaller(who): TrackingCaller,
    Path(endpoint): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    serve(app, who, format!("ferrolab/{endpoint}"), query, body).await
}

async fn serve(
    app: Arc<App>,
    who: Identity,
    path: String,
    query: Vec<(String, String)>,
    body: Bytes,
) -> Response {
    let mut request = Map::new();
    for (k, v) in query {
        request.insert(k, Value::String(v));
    }
    if !body.is_empty() {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => request.extend(map),
            Ok(_) => {
                return error_response(TrackingError::invalid(
                    "the request body must be a JSON object",
                ))
            }
            Err(e) => {
                return error_response(TrackingError::MalformedRequest(format!(
                    "the request body is not valid JSON: {e}"
                )))
            }
        }
    }
    let endpoint = match Endpoint::parse(&path) {
        Ok(endpoint) => endpoint,
        Err(e) => return error_response(e),
    };
    let store = app.tracking.clone();
    if endpoint == Endpoint::RunsSearch {
        // The answer is written straight from the cached runs' JSON, bypassing
        // `dispatch`, so the role check `dispatch` makes is made here.
        if let Err(e) = require(&who, endpoint.required_role()) {
            return error_response(e);
        }
        return match blocking(move || search_runs_raw(&store, &request)).await {
            Ok(body) => (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(e) => error_response(e),
        };
    }
    let outcome = blocking(move || {
        let reply = dispatch(&store, &who, endpoint, &request)?;
        let changed = endpoint.changed_run(&request, &reply);
        Ok((reply, changed))
    })
    .await;
    match outcome {
        Ok((value, changed)) => {
            if let Some(run_id) = changed {
                app.live_runs.mark(&run_id);
            }
            Json(value).into_response()
        }
        Err(e) => error_response(e),
    }
}

/// `GET /api/2.0/mlflow-artifacts/artifacts?path=DIR`: the files and folders in DIR.
pub async fn list_artifacts(
    State(app): State<Arc<App>>,
    _: TrackingCaller,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let dir = query
        .into_iter()
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let store = app.tracking.clone();
    match blocking(move || store.list_artifacts(&dir)).await {
        Ok(files) => Json(json!({ "files": files })).into_response(),
        Err(e) => error_response(e),
    }
}

/// `/api/2.0/mlflow-artifacts/artifacts/PATH`: PUT stores a file, GET returns it,
/// DELETE forgets it (and everything under it).
pub async fn artifact(
    State(app): State<Arc<App>>,
    TrackingCaller(who): TrackingCaller,
    method: Method,
    Path(path): Path<String>,
    body: Bytes,
) -> Response {
    let writes = method == Method::PUT || method == Method::POST || method == Method::DELETE;
    if writes {
        if let Err(e) = require(&who, Role::Editor) {
            return error_response(e);
        }
    }
    let store = app.tracking.clone();
    let outcome = blocking(move || -> Result<Response, TrackingError> {
        match method {
            Method::GET => {
                let bytes = store.get_artifact(&path)?;
                Ok((
                    [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
                    bytes,
                )
                    .into_response())
            }
            Method::PUT | Method::POST => {
                store.put_artifact(&path, &body)?;
                Ok(Json(json!({})).into_response())
            }
            Method::DELETE => {
                store.delete_artifact(&path)?;
                Ok(Json(json!({})).into_response())
            }
            other => Err(TrackingError::invalid(format!(
                "{other} is not an artifact operation: PUT stores, GET reads, DELETE removes"
            ))),
        }
    })
    .await;
    outcome.unwrap_or_else(error_response)
}
