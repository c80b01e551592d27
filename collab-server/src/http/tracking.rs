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
        TrackingError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
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
            .await
            .map(TrackingCaller)
            .map_err(|e| error_response(TrackingError::Unauthenticated(e.to_string())))
    }
}

/// A request body read as a JSON object, in MLflow's errors when it is not one.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, TrackingError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(TrackingError::invalid(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(TrackingError::MalformedRequest(format!(
            "the request body is not valid JSON: {e}"
        ))),
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
        match json_object(&body) {
            Ok(map) => request.extend(map),
            Err(e) => return error_response(e),
        }
    }
    let request = Value::Object(request);
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
        return match blocking(move || search_runs_raw(store.as_ref(), &request)).await {
            Ok(body) => (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(e) => error_response(e),
        };
    }
    match blocking(move || dispatch(store.as_ref(), &who, endpoint, &request)).await {
        Ok(answer) => {
            if let Some(run_id) = answer.changed_run {
                app.live_runs.mark(&run_id);
            }
            Json(answer.reply).into_response()
        }
        Err(e) => error_response(e),
    }
}

/// `POST /api/2.0/ferrolab/model-versions/evaluate` with `name`, `version` and
/// `suite` (a prompt-test suite, YAML): the server runs the suite on the version's
/// own adapter and keeps the result as the policy's evidence (see `evaluations`).
pub async fn evaluate(
    State(app): State<Arc<App>>,
    TrackingCaller(who): TrackingCaller,
    body: Bytes,
) -> Response {
    let request = match json_object(&body) {
        Ok(map) => map,
        Err(e) => return error_response(e),
    };
    let field = |key: &str| -> Result<String, TrackingError> {
        match request.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) if key == "version" => Ok(n.to_string()),
            _ => Err(TrackingError::invalid(format!(
                "Missing value for required parameter '{key}'"
            ))),
        }
    };
    let (name, version, suite) = match (field("name"), field("version"), field("suite")) {
        (Ok(n), Ok(v), Ok(s)) => (n, v, s),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return error_response(e),
    };
    match app
        .evaluations
        .evaluate(app.tracking.clone(), &who, &name, &version, &suite)
        .await
    {
        Ok(outcome) => {
            if let Some(run_id) = outcome["run_id"].as_str() {
                app.live_runs.mark(run_id);
            }
            Json(outcome).into_response()
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
/// DELETE forgets it (and everything under it). Bytes are streamed both ways: an
/// upload goes to disk as it arrives (a bounded queue to a blocking writer), a
/// download is read from its file in chunks, so no artifact is held in memory.
pub async fn artifact(
    State(app): State<Arc<App>>,
    TrackingCaller(who): TrackingCaller,
    method: Method,
    Path(path): Path<String>,
    body: axum::body::Body,
) -> Response {
    let writes = method == Method::PUT || method == Method::POST || method == Method::DELETE;
    if writes {
        if let Err(e) = require(&who, Role::Editor) {
            return error_response(e);
        }
    }
    let store = app.tracking.clone();
    match method {
        Method::GET => download(store, path).await.unwrap_or_else(error_response),
        Method::PUT | Method::POST => upload(store, path, body)
            .await
            .map(|stored| Json(stored).into_response())
            .unwrap_or_else(error_response),
        Method::DELETE => blocking(move || store.delete_artifact(&path))
            .await
            .map(|()| Json(json!({})).into_response())
            .unwrap_or_else(error_response),
        other => error_response(TrackingError::invalid(format!(
            "{other} is not an artifact operation: PUT stores, GET reads, DELETE removes"
        ))),
    }
}

/// How many received chunks may wait for the disk.
const UPLOAD_QUEUE: usize = 8;

async fn upload(
    store: Arc<dyn ferrolab_tracking::Store>,
    path: String,
    body: axum::body::Body,
) -> Result<ferrolab_tracking::model::StoredArtifact, TrackingError> {
    use futures::StreamExt;
    // `Some(bytes)` is data, `None` the end of the body: a queue closed without it
    // is an upload cut off, which stores nothing.
    let (pieces, mut arriving) = tokio::sync::mpsc::channel::<Option<Bytes>>(UPLOAD_QUEUE);
    let writer = tokio::task::spawn_blocking(move || {
        let mut upload = store.start_upload(&path)?;
        loop {
            match arriving.blocking_recv() {
                Some(Some(chunk)) => upload.write(&chunk)?,
                Some(None) => return store.finish_upload(upload),
                None => {
                    return Err(TrackingError::invalid(
                        "the upload was cut off before its end; nothing was stored",
                    ))
                }
            }
        }
    });
    let mut stream = body.into_data_stream();
    loop {
        let piece = match stream.next().await {
            Some(Ok(chunk)) => Some(chunk),
            Some(Err(_)) => break,
            None => None,
        };
        let end = piece.is_none();
        // A closed queue means the writer stopped (a refused path, too many bytes):
        // its error says why.
        if pieces.send(piece).await.is_err() || end {
            break;
        }
    }
    drop(pieces);
    writer
        .await
        .unwrap_or_else(|e| Err(TrackingError::Internal(format!("the upload failed: {e}"))))
}

async fn download(
    store: Arc<dyn ferrolab_tracking::Store>,
    path: String,
) -> Result<Response, TrackingError> {
    let (file, size) = blocking(move || store.artifact_file(&path)).await?;
    let opened = tokio::fs::File::open(&file).await.map_err(|e| {
        TrackingError::Internal(format!("the artifact's bytes cannot be read: {e}"))
    })?;
    let chunks = futures::stream::unfold(opened, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buffer)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
            (axum::http::header::CONTENT_LENGTH, size.to_string()),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}
