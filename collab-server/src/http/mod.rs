//! The HTTP side: the router, who is calling ([`Caller`], an extractor: no handler
//! checks a token by hand), the API's errors, and one module per area —
//! `notebooks` (the workspace's REST API), `kernels` (shared kernels), `tracking`
//! (MLflow's REST API and artifacts) — plus the `/sync` WebSocket upgrade.

mod kernels;
mod notebooks;
mod tracking;

use crate::app::App;
use crate::auth::{Identity, Role};
use crate::workspace::WorkspaceError;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

/// Every route the server answers.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/sync", get(sync_upgrade))
        .route("/api/workspace", get(notebooks::get_workspace))
        .route(
            "/api/notebooks",
            get(notebooks::list).post(notebooks::create),
        )
        .route(
            "/api/notebooks/{id}",
            get(notebooks::get)
                .delete(notebooks::delete)
                .patch(notebooks::rename),
        )
        .route("/api/notebooks/{id}/ipynb", get(notebooks::export_ipynb))
        .route("/api/notebooks/{id}/export", get(notebooks::export_report))
        .route(
            "/api/notebooks/{id}/kernel/{action}",
            axum::routing::post(kernels::action),
        )
        .route(
            "/api/2.0/mlflow/{*endpoint}",
            axum::routing::any(tracking::handle),
        )
        .route(
            "/api/2.0/ferrolab/{*endpoint}",
            axum::routing::any(tracking::handle_ferrolab),
        )
        .route(
            "/api/2.0/mlflow-artifacts/artifacts",
            get(tracking::list_artifacts),
        )
        .route(
            "/api/2.0/mlflow-artifacts/artifacts/{*path}",
            axum::routing::any(tracking::artifact).layer(axum::extract::DefaultBodyLimit::max(
                ferrolab_tracking::artifacts::MAX_ARTIFACT_BYTES,
            )),
        )
        .fallback(fallback)
        .with_state(app)
}

/// GETs outside the API are the browser workspace's; anything else is unknown.
async fn fallback(State(app): State<Arc<App>>, method: axum::http::Method, uri: Uri) -> Response {
    let api = uri.path().starts_with("/api/") || uri.path() == "/sync";
    if !api && (method == axum::http::Method::GET || method == axum::http::Method::HEAD) {
        return crate::web::serve(app.web.as_deref(), &uri).await;
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; the API lives under /api/notebooks",
    )
    .into_response()
}

/// `/sync`: the WebSocket upgrade, for a caller with a valid token.
async fn sync_upgrade(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    ws: WebSocketUpgrade,
) -> Response {
    let limit = app.sync.max_message_bytes;
    let sync = app.sync.clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| sync.serve_peer(socket, who))
}

// ---------------------------------------------------------------- errors

/// An answer of the workspace API that is not a success: a status, a short code
/// and a message that says what to do, as `{"error": {"code", "message"}}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        log::error!("internal error: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the server failed: {error}"),
        )
    }
}

impl From<WorkspaceError> for ApiError {
    fn from(error: WorkspaceError) -> Self {
        match error {
            WorkspaceError::NotFound(_) | WorkspaceError::NoCell(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", error.to_string())
            }
            WorkspaceError::Internal(_) => ApiError::internal(error),
        }
    }
}

impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "code": self.code, "message": self.message } })),
        )
            .into_response()
    }
}

// ---------------------------------------------------------------- who is calling

/// The caller of a workspace request, from its token (`Authorization: Bearer`, or
/// `?token=` from a browser). A handler that takes it only runs for a valid token.
pub struct Caller(pub Identity);

impl Caller {
    /// Refuses the call unless the caller's role is at least `role`.
    fn require(&self, role: Role, action: &str) -> Result<(), ApiError> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{action} needs a token with the {} role; yours is {}",
                    role.as_str(),
                    self.0.role.as_str()
                ),
            ))
        }
    }
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        authenticate(app, &parts.headers, &parts.uri).map(Caller)
    }
}

/// Who presents the request's token.
fn authenticate(app: &App, headers: &HeaderMap, uri: &Uri) -> Result<Identity, ApiError> {
    let Some(token) = presented_token(headers, uri) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a token is required: send `Authorization: Bearer TOKEN` (or `?token=TOKEN` from a browser); `ferrolab collab token create` makes one",
        ));
    };
    app.tokens.verify(&token).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this token is unknown or revoked; ask the workspace owner for a new one",
        )
    })
}

fn presented_token(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return Some(token.trim().to_string());
        }
    }
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(str::to_owned)
}
