//! The HTTP side: the router, who is calling ([`Caller`], an extractor: no handler
//! checks a token by hand), the API's errors, and one module per area —
//! `notebooks` (the workspace's REST API), `kernels` (shared kernels), `tracking`
//! (MLflow's REST API and artifacts) — plus the `/sync` WebSocket upgrade and a
//! browser's sign-in (`/api/session`: a token in, an HttpOnly cookie out).

pub(crate) mod kernels;
mod notebooks;
mod tracking;

use crate::app::App;
use crate::auth::{Identity, Role, SESSION_COOKIE, SESSION_DAYS};
use crate::workspace::WorkspaceError;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

/// Every route the server answers.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/sync", get(sync_upgrade))
        .route(
            "/api/session",
            axum::routing::post(sign_in).delete(sign_out),
        )
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
            "/api/2.0/ferrolab/model-versions/evaluate",
            axum::routing::post(tracking::evaluate),
        )
        .route(
            "/api/2.0/mlflow-artifacts/artifacts",
            get(tracking::list_artifacts),
        )
        .route(
            "/api/2.0/mlflow-artifacts/artifacts/{*path}",
            // Streamed to disk; the upload itself stops at MAX_ARTIFACT_BYTES.
            axum::routing::any(tracking::artifact),
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
        authenticate(app, parts).await.map(Caller)
    }
}

/// Who is calling: the token presented (`Authorization: Bearer`, or `?token=` for
/// clients that cannot set headers), else a signed-in browser's session cookie.
async fn authenticate(app: &App, parts: &Parts) -> Result<Identity, ApiError> {
    let unauthorized = |message: &str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            message.to_string(),
        )
    };
    if let Some(token) = presented_token(&parts.headers, &parts.uri) {
        return app.tokens.verify_now(&token).await.ok_or_else(|| {
            unauthorized("this token is unknown or revoked; ask the workspace owner for a new one")
        });
    }
    if let Some(cookie) = session_cookie(&parts.headers) {
        let who = app
            .sessions
            .verify(&cookie)
            .and_then(|token_id| app.tokens.identity(&token_id))
            .ok_or_else(|| {
                unauthorized("your session has ended (signed out, expired, or its token was revoked); sign in again")
            })?;
        same_origin(parts)?;
        return Ok(who);
    }
    Err(unauthorized(
        "a token is required: send `Authorization: Bearer TOKEN`, or sign in in the browser; `ferrolab collab token create` makes one",
    ))
}

/// A cookie is sent whoever made the page that asks; a request that changes
/// something (or opens `/sync`) on a session must come from our own page.
/// (`SameSite=Strict` already keeps other sites' requests from carrying it.)
fn same_origin(parts: &Parts) -> Result<(), ApiError> {
    let reads = matches!(parts.method, Method::GET | Method::HEAD)
        && !parts.headers.contains_key(header::UPGRADE);
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    match (reads, origin, host) {
        (true, _, _) | (false, None, _) => Ok(()),
        (false, Some(origin), Some(host))
            if origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest == host) =>
        {
            Ok(())
        }
        (false, Some(origin), _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "a request from {origin} cannot use this server's session; send a token instead"
            ),
        )),
    }
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

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then(|| value.to_string())
        })
}

// ---------------------------------------------------------------- sessions

/// `POST /api/session` with `Authorization: Bearer TOKEN`: signs a browser in,
/// answering who it is and setting the HttpOnly session cookie; the page drops
/// the token right after.
async fn sign_in(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let token = presented_token(&headers, &uri).ok_or_else(|| {
        ApiError::bad_request("send the token as `Authorization: Bearer TOKEN` to sign in")
    })?;
    let who = app.tokens.verify_now(&token).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this token is unknown or revoked; ask the workspace owner for a new one",
        )
    })?;
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        app.sessions.issue(&who.token_id),
        SESSION_DAYS * 86_400
    );
    let mut response = Json(json!({
        "user": {"name": who.name, "role": who.role.as_str(), "token_id": who.token_id}
    }))
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// `DELETE /api/session`: signs the browser out (the cookie is cleared).
async fn sign_out() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("ferrolab_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    response
}
