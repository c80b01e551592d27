//! The OpenAI-compatible HTTP API.
//!
//! Bodies are read as bytes and parsed here, so malformed JSON and wrong types get
//! OpenAI's error JSON with serde's account of what is wrong, never axum's plain
//! text. Every generation and embedding request is logged, also when it fails or
//! its client goes away (a guard logs status 499 when the handler is dropped).

use crate::metrics::Metrics;
use crate::scheduler::{EmbedJob, Event, GenerateJob, Job, Scheduler, Summary};
use crate::store::{now, Feedback, RequestRecord, Store, UnknownRequest};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use ferrolab_llm::generate::{FinishReason, Sampling};
use ferrolab_llm::tokenizer::{Message, TextTokenizer};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// What the handlers know about one served model (the base or an adapter).
pub struct ServedModel {
    /// The name requests use in `model`.
    pub name: String,
    pub tokenizer: Arc<TextTokenizer>,
    pub context: usize,
    /// Unix seconds when the server loaded it.
    pub created: i64,
    /// For an adapter: the base model's name.
    pub parent: Option<String>,
}

pub struct AppState {
    pub models: Vec<ServedModel>,
    pub scheduler: Scheduler,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub api_key: Option<String>,
    /// The largest `max_tokens` a request may ask for.
    pub max_tokens: usize,
    pub openapi: Value,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*model}", get(get_model))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/feedback", post(feedback))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .with_state(state)
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    fn not_found(message: impl Into<String>, code: &'static str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some(code),
        }
    }

    fn server(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    fn queue_full() -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "the server's queue is full; retry after a short wait".into(),
            kind: "rate_limit_exceeded",
            param: None,
            code: Some("queue_full"),
        }
    }

    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn check_key(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(key) = &state.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let error = |message: &str| ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("invalid_api_key"),
    };
    match given {
        None => Err(error(
            "no API key given; send it as 'Authorization: Bearer KEY' (the key this server was started with)",
        )),
        Some(given) if !constant_time_eq(given.trim().as_bytes(), key.as_bytes()) => {
            Err(error("incorrect API key"))
        }
        Some(_) => Ok(()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad("the request has no body; send a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "the body is not valid JSON"
        } else {
            "the request does not match the API"
        };
        ApiError::bad(format!("{what}: {e}"))
    })
}

fn find_model<'a>(state: &'a AppState, name: &str) -> ApiResult<(usize, &'a ServedModel)> {
    state
        .models
        .iter()
        .enumerate()
        .find(|(_, m)| m.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = state.models.iter().map(|m| m.name.as_str()).collect();
            ApiError::not_found(
                format!(
                    "the model '{name}' does not exist on this server; it serves {}",
                    names.join(", ")
                ),
                "model_not_found",
            )
            .param("model")
        })
}

fn model_json(m: &ServedModel) -> Value {
    json!({
        "id": m.name,
        "object": "model",
        "created": m.created,
        "owned_by": "ferrolab",
        "parent": m.parent,
        "context_length": m.context,
    })
}

async fn list_models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let result = check_key(&state, &headers).map(|_| {
        Json(json!({
            "object": "list",
            "data": state.models.iter().map(model_json).collect::<Vec<_>>(),
        }))
    });
    finish(&state, "/v1/models", result)
}

async fn get_model(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let result = check_key(&state, &headers)
        .and_then(|_| find_model(&state, &name))
        .map(|(_, m)| Json(model_json(m)));
    finish(&state, "/v1/models/{model}", result)
}

/// Counts the request and turns an error into its response.
fn finish<T: IntoResponse>(state: &AppState, route: &str, result: ApiResult<T>) -> Response {
    let response = match result {
        Ok(ok) => ok.into_response(),
        Err(e) => e.into_response(),
    };
    state
        .metrics
        .count_request(route, response.status().as_u16());
    response
}

async fn not_found(State(state): State<Arc<AppState>>, uri: axum::http::Uri) -> Response {
    finish::<()>(
        &state,
        "other",
        Err(ApiError::not_found(
            format!("no route {}; see /openapi.json for the API", uri.path()),
            "unknown_url",
        )),
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    finish(
        &state,
        "/health",
        Ok(Json(json!({
            "status": "ok",
            "models": state.models.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
        }))),
    )
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.count_request("/metrics", 200);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    finish(&state, "/openapi.json", Ok(Json(state.openapi.clone())))
}

// ---------------------------------------------------------------------------------
// Generation requests

/// `prompt` / `input`: a string, strings, token ids, or lists of token ids.
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl Prompt {
    /// Read by hand so that a wrong shape gets a sentence naming the field.
    fn from_value(v: &Value, param: &'static str) -> ApiResult<Prompt> {
        let wrong = || {
            ApiError::bad(format!(
                "{param} must be a string, a list of strings, a list of token ids or a list of lists of token ids"
            ))
            .param(param)
        };
        let token = |t: &Value| {
            t.as_u64()
                .filter(|&t| t <= u32::MAX as u64)
                .map(|t| t as u32)
        };
        match v {
            Value::String(s) => Ok(Prompt::Text(s.clone())),
            Value::Array(items) if items.is_empty() => {
                Err(ApiError::bad(format!("{param} is an empty list")).param(param))
            }
            Value::Array(items) => match &items[0] {
                Value::String(_) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string).ok_or_else(wrong))
                    .collect::<ApiResult<_>>()
                    .map(Prompt::Texts),
                Value::Number(_) => items
                    .iter()
                    .map(|i| token(i).ok_or_else(wrong))
                    .collect::<ApiResult<_>>()
                    .map(Prompt::Tokens),
                Value::Array(_) => items
                    .iter()
                    .map(|list| {
                        list.as_array()
                            .ok_or_else(wrong)?
                            .iter()
                            .map(|i| token(i).ok_or_else(wrong))
                            .collect::<ApiResult<Vec<u32>>>()
                    })
                    .collect::<ApiResult<_>>()
                    .map(Prompt::TokenLists),
                _ => Err(wrong()),
            },
            _ => Err(wrong()),
        }
    }
}

fn stop_list(v: &Option<Value>) -> ApiResult<Vec<String>> {
    let wrong =
        || ApiError::bad("stop must be a string or a list of up to 4 strings").param("stop");
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(wrong))
            .collect(),
        Some(_) => Err(wrong()),
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The sampling fields completions and chat share. Numbers are read wide and
/// checked here, so a negative or huge value gets a sentence, not a type error.
#[derive(Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<i64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    logprobs: Option<Value>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    /// Accepted (OpenAI clients send it) and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Value,
    #[serde(flatten)]
    common: Common,
    #[serde(default)]
    echo: Option<bool>,
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

/// A checked generation request, ready for the scheduler.
struct Plan {
    model: usize,
    model_name: String,
    prompts: Vec<(String, Vec<u32>)>,
    sampling: Sampling,
    stream: bool,
    include_usage: bool,
}

fn plan(
    state: &AppState,
    (index, model): (usize, &ServedModel),
    common: &Common,
    default_max_tokens: Option<usize>,
    prompts: Vec<(String, Vec<u32>)>,
) -> ApiResult<Plan> {
    if common
        .logprobs
        .as_ref()
        .is_some_and(|v| !v.is_null() && v != &json!(false))
    {
        return Err(ApiError::bad(
            "logprobs are not supported by this server; leave 'logprobs' out",
        )
        .param("logprobs"));
    }
    for (name, value) in [
        ("presence_penalty", common.presence_penalty),
        ("frequency_penalty", common.frequency_penalty),
    ] {
        if value.is_some_and(|v| v != 0.0) {
            return Err(ApiError::bad(format!(
                "{name} is not supported by this server; leave it out or set it to 0"
            )));
        }
    }
    let n = common.n.unwrap_or(1);
    if !(1..=8).contains(&n) {
        return Err(ApiError::bad(format!("n must be between 1 and 8, got {n}")).param("n"));
    }
    let temperature = common.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::bad(format!(
            "temperature must be between 0 and 2, got {temperature}"
        ))
        .param("temperature"));
    }
    let top_p = common.top_p.unwrap_or(1.0);
    if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(format!("top_p must be in (0, 1], got {top_p}")).param("top_p"));
    }
    let top_k = common.top_k.unwrap_or(0);
    if top_k < 0 {
        return Err(ApiError::bad(format!(
            "top_k must be 0 (no limit) or positive, got {top_k}"
        ))
        .param("top_k"));
    }
    let stop = stop_list(&common.stop)?;
    if stop.len() > 4 {
        return Err(ApiError::bad("stop takes at most 4 strings").param("stop"));
    }
    let longest = prompts.iter().map(|(_, ids)| ids.len()).max().unwrap_or(0);
    if prompts.iter().any(|(_, ids)| ids.is_empty()) {
        return Err(ApiError::bad("the prompt is empty").param("prompt"));
    }
    if longest >= model.context {
        return Err(ApiError::bad(format!(
            "this model's maximum context length is {} tokens, and the prompt has {longest}; shorten it",
            model.context
        ))
        .param("messages"));
    }
    let asked = common.max_completion_tokens.or(common.max_tokens);
    let max_tokens = match asked {
        Some(m) if m < 1 => {
            return Err(
                ApiError::bad(format!("max_tokens must be at least 1, got {m}"))
                    .param("max_tokens"),
            )
        }
        Some(m) if m as u64 > state.max_tokens as u64 => {
            return Err(ApiError::bad(format!(
                "max_tokens is {m}, more than this server allows ({})",
                state.max_tokens
            ))
            .param("max_tokens"))
        }
        Some(m) => m as usize,
        None => default_max_tokens
            .unwrap_or(model.context - longest)
            .min(state.max_tokens),
    };
    if asked.is_some() && longest + max_tokens > model.context {
        return Err(ApiError::bad(format!(
            "this model's maximum context length is {} tokens; the prompt has {longest} and max_tokens asks for {max_tokens} more; lower max_tokens or shorten the prompt",
            model.context
        ))
        .param("max_tokens"));
    }
    let seed = match common.seed {
        Some(s) => s as u64,
        None => rand::random(),
    };
    let mut all = Vec::new();
    for (text, ids) in prompts {
        for _ in 0..n {
            all.push((text.clone(), ids.clone()));
        }
    }
    Ok(Plan {
        model: index,
        model_name: model.name.clone(),
        prompts: all,
        sampling: Sampling {
            max_tokens,
            temperature,
            top_k: top_k as usize,
            top_p,
            seed,
            stop,
        },
        stream: common.stream.unwrap_or(false),
        include_usage: common
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
    })
}

fn tokenize(tokenizer: &TextTokenizer, text: &str) -> ApiResult<Vec<u32>> {
    tokenizer
        .encode(text)
        .map_err(|e| ApiError::bad(format!("the prompt cannot be tokenized: {e:#}")))
}

fn prompts_of(tokenizer: &TextTokenizer, prompt: Prompt) -> ApiResult<Vec<(String, Vec<u32>)>> {
    let vocab = tokenizer.vocab_size();
    let check = |ids: Vec<u32>| -> ApiResult<(String, Vec<u32>)> {
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(ApiError::bad(format!(
                "token id {bad} is outside the vocabulary of {vocab} tokens"
            )));
        }
        let text = tokenizer
            .decode(&ids, false)
            .map_err(|e| ApiError::bad(format!("{e:#}")))?;
        Ok((text, ids))
    };
    let prompts = match prompt {
        Prompt::Text(t) => vec![(t.clone(), tokenize(tokenizer, &t)?)],
        Prompt::Texts(texts) => texts
            .into_iter()
            .map(|t| Ok((t.clone(), tokenize(tokenizer, &t)?)))
            .collect::<ApiResult<_>>()?,
        Prompt::Tokens(ids) => vec![check(ids)?],
        Prompt::TokenLists(lists) => lists.into_iter().map(check).collect::<ApiResult<_>>()?,
    };
    if prompts.is_empty() {
        return Err(ApiError::bad("prompt is an empty list").param("prompt"));
    }
    if prompts.len() > 16 {
        return Err(ApiError::bad("at most 16 prompts per request").param("prompt"));
    }
    Ok(prompts)
}

/// Logs the request when dropped, with whatever it knows by then: a handler or a
/// stream dropped early (the client went away) is logged as 499.
struct LogGuard {
    store: Store,
    record: RequestRecord,
    started: Instant,
    logged: bool,
}

impl LogGuard {
    fn new(state: &AppState, id: &str, endpoint: &str) -> Self {
        LogGuard {
            store: state.store.clone(),
            record: RequestRecord {
                id: id.to_string(),
                created: now(),
                model: String::new(),
                endpoint: endpoint.into(),
                prompt: String::new(),
                messages: None,
                completion: String::new(),
                prompt_tokens: 0,
                completion_tokens: 0,
                latency_s: 0.0,
                ttft_s: None,
                status: 499,
                finish_reason: None,
                error: Some(
                    "the client closed the connection before the answer was complete".into(),
                ),
            },
            started: Instant::now(),
            logged: false,
        }
    }

    fn fail(&mut self, error: &ApiError) {
        self.record.status = error.status.as_u16();
        self.record.error = Some(error.message.clone());
        self.write();
    }

    fn succeed(&mut self) {
        self.record.status = 200;
        self.record.error = None;
        self.write();
    }

    fn write(&mut self) {
        if self.logged {
            return;
        }
        self.logged = true;
        self.record.latency_s = self.started.elapsed().as_secs_f64();
        let store = self.store.clone();
        let record = self.record.clone();
        let write = move || {
            if let Err(e) = store.log(&record) {
                log::error!("cannot log request {}: {e:#}", record.id);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(write);
            }
            Err(_) => write(),
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.write();
    }
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Completion => "completions",
            Kind::Chat => "chat.completions",
        }
    }

    fn route(self) -> &'static str {
        match self {
            Kind::Completion => "/v1/completions",
            Kind::Chat => "/v1/chat/completions",
        }
    }
}

async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let mut guard = LogGuard::new(&state, &id, Kind::Completion.endpoint());
    let planned = (|| {
        check_key(&state, &headers)?;
        let request: CompletionRequest = parse(&body)?;
        guard.record.model = request.common.model.clone();
        let found = find_model(&state, &request.common.model)?;
        let model = found.1;
        if request.echo == Some(true) {
            return Err(
                ApiError::bad("echo is not supported by this server; leave it out").param("echo"),
            );
        }
        let prompts = prompts_of(
            &model.tokenizer,
            Prompt::from_value(&request.prompt, "prompt")?,
        )?;
        plan(&state, found, &request.common, Some(16), prompts)
    })();
    generate(state, guard, id, Kind::Completion, planned).await
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let mut guard = LogGuard::new(&state, &id, Kind::Chat.endpoint());
    let mut messages_json = None;
    let planned = (|| {
        check_key(&state, &headers)?;
        let request: ChatRequest = parse(&body)?;
        guard.record.model = request.common.model.clone();
        let found = find_model(&state, &request.common.model)?;
        let model = found.1;
        if request.messages.is_empty() {
            return Err(
                ApiError::bad("messages is empty; send at least one message").param("messages"),
            );
        }
        let mut messages = Vec::new();
        for (i, m) in request.messages.iter().enumerate() {
            if !["system", "user", "assistant", "developer", "tool"].contains(&m.role.as_str()) {
                return Err(ApiError::bad(format!(
                    "messages[{i}].role is '{}'; use system, user or assistant",
                    m.role
                ))
                .param("messages"));
            }
            let content = match &m.content {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                            (Some("text"), Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::bad(format!(
                                    "messages[{i}] has a part of type {}; this server takes text parts only",
                                    kind.unwrap_or("(none)")
                                ))
                                .param("messages"))
                            }
                        }
                    }
                    text
                }
                Some(_) => {
                    return Err(ApiError::bad(format!(
                        "messages[{i}].content must be a string or a list of text parts"
                    ))
                    .param("messages"))
                }
            };
            let role = if m.role == "developer" {
                "system"
            } else {
                m.role.as_str()
            };
            messages.push(Message::new(role, &content));
        }
        messages_json = serde_json::to_string(&messages).ok();
        let prompt = model
            .tokenizer
            .apply_chat_template(&messages, true)
            .map_err(|e| {
                ApiError::bad(format!("the chat template failed on these messages: {e:#}"))
            })?;
        let ids = tokenize(&model.tokenizer, &prompt)?;
        plan(&state, found, &request.common, None, vec![(prompt, ids)])
    })();
    guard.record.messages = messages_json;
    generate(state, guard, id, Kind::Chat, planned).await
}

async fn generate(
    state: Arc<AppState>,
    mut guard: LogGuard,
    id: String,
    kind: Kind,
    planned: ApiResult<Plan>,
) -> Response {
    let plan = match planned {
        Ok(plan) => plan,
        Err(e) => {
            guard.fail(&e);
            return finish::<()>(&state, kind.route(), Err(e));
        }
    };
    guard.record.prompt = plan
        .prompts
        .first()
        .map(|(t, _)| t.clone())
        .unwrap_or_default();
    guard.record.prompt_tokens = plan.prompts.iter().map(|(_, ids)| ids.len()).sum();
    let mut receivers = Vec::new();
    for (i, (_, ids)) in plan.prompts.iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut sampling = plan.sampling.clone();
        sampling.seed = sampling.seed.wrapping_add(i as u64);
        let job = Job::Generate(GenerateJob {
            model: plan.model,
            prompt_ids: ids.clone(),
            sampling,
            events: tx,
            arrived: Instant::now(),
        });
        if state.scheduler.submit(job).is_err() {
            let e = ApiError::queue_full();
            guard.fail(&e);
            return finish::<()>(&state, kind.route(), Err(e));
        }
        receivers.push(rx);
    }
    let created = now() as i64;
    if plan.stream {
        state.metrics.count_request(kind.route(), 200);
        let stream = sse_stream(state.clone(), guard, id, kind, plan, receivers, created);
        return Sse::new(stream).into_response();
    }
    // Not streaming: wait for every choice.
    let mut choices = Vec::new();
    let mut completion_tokens = 0;
    let mut first_ttft = None;
    for (index, mut rx) in receivers.into_iter().enumerate() {
        let summary = loop {
            match rx.recv().await {
                Some(Event::Text(_)) => {}
                Some(Event::Done(summary)) => break Ok(summary),
                Some(Event::Failed(e)) => break Err(e),
                None => break Err("the engine stopped".to_string()),
            }
        };
        let summary: Summary = match summary {
            Ok(s) => s,
            Err(e) => {
                let e = ApiError::server(format!("generation failed: {e}"));
                guard.fail(&e);
                return finish::<()>(&state, kind.route(), Err(e));
            }
        };
        completion_tokens += summary.completion_tokens;
        first_ttft = first_ttft.or(summary.ttft);
        if index == 0 {
            guard.record.completion = summary.text.clone();
            guard.record.finish_reason = Some(finish_reason(summary.finish_reason).into());
        }
        choices.push(match kind {
            Kind::Completion => json!({
                "index": index,
                "text": summary.text,
                "logprobs": null,
                "finish_reason": finish_reason(summary.finish_reason),
            }),
            Kind::Chat => json!({
                "index": index,
                "message": {"role": "assistant", "content": summary.text},
                "logprobs": null,
                "finish_reason": finish_reason(summary.finish_reason),
            }),
        });
    }
    let prompt_tokens = guard.record.prompt_tokens;
    guard.record.completion_tokens = completion_tokens;
    guard.record.ttft_s = first_ttft.map(|d| d.as_secs_f64());
    guard.succeed();
    state
        .metrics
        .request_latency
        .observe(guard.started.elapsed().as_secs_f64());
    let object = match kind {
        Kind::Completion => "text_completion",
        Kind::Chat => "chat.completion",
    };
    finish(
        &state,
        kind.route(),
        Ok(Json(json!({
            "id": id,
            "object": object,
            "created": created,
            "model": plan.model_name,
            "system_fingerprint": null,
            "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens),
        }))),
    )
}

/// SSE chunks as OpenAI sends them, then `data: [DONE]`. The choices' events are
/// merged in arrival order.
fn sse_stream(
    state: Arc<AppState>,
    guard: LogGuard,
    id: String,
    kind: Kind,
    plan: Plan,
    receivers: Vec<mpsc::UnboundedReceiver<Event>>,
    created: i64,
) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    let object = match kind {
        Kind::Completion => "text_completion",
        Kind::Chat => "chat.completion.chunk",
    };
    let model = plan.model_name.clone();
    let chunk = move |choices: Value, usage: Option<Value>| -> SseEvent {
        let mut body = json!({
            "id": id,
            "object": object,
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if let Some(u) = usage {
            body["usage"] = u;
        }
        SseEvent::default().data(body.to_string())
    };
    let text_choice = move |index: usize, text: &str, finish: Option<&str>| -> Value {
        match kind {
            Kind::Completion => {
                json!({"index": index, "text": text, "logprobs": null, "finish_reason": finish})
            }
            Kind::Chat => {
                let delta = if finish.is_some() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        }
    };
    let include_usage = plan.include_usage;
    let prompt_tokens = guard.record.prompt_tokens;
    async_stream(move |tx| async move {
        let mut guard = guard;
        let mut merged =
            futures::stream::select_all(receivers.into_iter().enumerate().map(|(i, rx)| {
                futures::stream::unfold(rx, move |mut rx| async move {
                    rx.recv().await.map(|e| ((i, e), rx))
                })
                .boxed()
            }));
        if kind == Kind::Chat {
            for index in 0..plan.prompts.len() {
                let first = json!({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
                if tx.send(chunk(json!([first]), None)).await.is_err() {
                    return;
                }
            }
        }
        let mut completion_tokens = 0;
        let mut open = plan.prompts.len();
        use futures::StreamExt;
        while open > 0 {
            let Some((index, event)) = merged.next().await else {
                break;
            };
            let event = match event {
                Event::Text(text) => {
                    if index == 0 {
                        guard.record.completion.push_str(&text);
                    }
                    chunk(json!([text_choice(index, &text, None)]), None)
                }
                Event::Done(summary) => {
                    open -= 1;
                    completion_tokens += summary.completion_tokens;
                    if index == 0 {
                        guard.record.finish_reason =
                            Some(finish_reason(summary.finish_reason).into());
                        guard.record.ttft_s = summary.ttft.map(|d| d.as_secs_f64());
                    }
                    chunk(
                        json!([text_choice(
                            index,
                            "",
                            Some(finish_reason(summary.finish_reason))
                        )]),
                        None,
                    )
                }
                Event::Failed(e) => {
                    let error = ApiError::server(format!("generation failed: {e}"));
                    guard.fail(&error);
                    let _ = tx
                        .send(SseEvent::default().data(error.body().to_string()))
                        .await;
                    return;
                }
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if include_usage {
            let _ = tx
                .send(chunk(
                    json!([]),
                    Some(usage(prompt_tokens, completion_tokens)),
                ))
                .await;
        }
        guard.record.completion_tokens = completion_tokens;
        guard.succeed();
        state
            .metrics
            .request_latency
            .observe(guard.started.elapsed().as_secs_f64());
        let _ = tx.send(SseEvent::default().data("[DONE]")).await;
    })
}

/// A stream fed by an async block through a channel of one: the block runs as the
/// stream is polled, and stops (dropping its guard) when the stream is dropped.
fn async_stream<F, Fut>(body: F) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>>
where
    F: FnOnce(mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(body(tx));
    let abort = AbortOnDrop(task);
    futures::stream::unfold((rx, abort), |(mut rx, abort)| async move {
        rx.recv().await.map(|e| (Ok(e), (rx, abort)))
    })
}

/// Aborts the producing task when the response stream is dropped (the client went
/// away), which drops its receivers and frees the sequences' places in the batch.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------
// Embeddings and feedback

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<Value>,
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = format!("emb-{}", uuid::Uuid::new_v4().simple());
    let mut guard = LogGuard::new(&state, &id, "embeddings");
    let route = "/v1/embeddings";
    let planned = (|| {
        check_key(&state, &headers)?;
        let request: EmbeddingRequest = parse(&body)?;
        guard.record.model = request.model.clone();
        let (index, model) = find_model(&state, &request.model)?;
        if request.dimensions.as_ref().is_some_and(|d| !d.is_null()) {
            return Err(ApiError::bad(
                "dimensions is not supported: embeddings have the model's hidden size",
            )
            .param("dimensions"));
        }
        let base64 = match request.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "encoding_format '{other}' is unknown; use float or base64"
                ))
                .param("encoding_format"))
            }
        };
        let input = Prompt::from_value(&request.input, "input")?;
        let prompts = prompts_of(&model.tokenizer, input)?;
        if let Some((_, ids)) = prompts.iter().find(|(_, ids)| ids.len() > model.context) {
            return Err(ApiError::bad(format!(
                "an input has {} tokens; this model's maximum context length is {}",
                ids.len(),
                model.context
            ))
            .param("input"));
        }
        if prompts.iter().any(|(_, ids)| ids.is_empty()) {
            return Err(ApiError::bad("an input is empty").param("input"));
        }
        Ok((index, model.name.clone(), prompts, base64))
    })();
    let (index, model_name, prompts, base64) = match planned {
        Ok(p) => p,
        Err(e) => {
            guard.fail(&e);
            return finish::<()>(&state, route, Err(e));
        }
    };
    let tokens: usize = prompts.iter().map(|(_, ids)| ids.len()).sum();
    guard.record.prompt = prompts.first().map(|(t, _)| t.clone()).unwrap_or_default();
    guard.record.prompt_tokens = tokens;
    let (reply, rx) = oneshot::channel();
    let job = Job::Embed(EmbedJob {
        model: index,
        inputs: prompts.into_iter().map(|(_, ids)| ids).collect(),
        reply,
    });
    if state.scheduler.submit(job).is_err() {
        let e = ApiError::queue_full();
        guard.fail(&e);
        return finish::<()>(&state, route, Err(e));
    }
    let vectors = match rx.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            let e = ApiError::server(format!("embedding failed: {e}"));
            guard.fail(&e);
            return finish::<()>(&state, route, Err(e));
        }
        Err(_) => {
            let e = ApiError::server("the engine stopped");
            guard.fail(&e);
            return finish::<()>(&state, route, Err(e));
        }
    };
    state
        .metrics
        .prompt_tokens
        .fetch_add(tokens as u64, std::sync::atomic::Ordering::Relaxed);
    guard.succeed();
    state
        .metrics
        .request_latency
        .observe(guard.started.elapsed().as_secs_f64());
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    finish(
        &state,
        route,
        Ok(Json(json!({
            "object": "list",
            "data": data,
            "model": model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }))),
    )
}

async fn feedback(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let route = "/v1/feedback";
    let parsed = check_key(&state, &headers).and_then(|_| parse::<Feedback>(&body));
    let feedback = match parsed {
        Ok(f) => f,
        Err(e) => return finish::<()>(&state, route, Err(e)),
    };
    if !feedback.score.is_finite() {
        return finish::<()>(
            &state,
            route,
            Err(ApiError::bad("score must be a finite number").param("score")),
        );
    }
    let store = state.store.clone();
    let stored = {
        let feedback = feedback.clone();
        tokio::task::spawn_blocking(move || store.add_feedback(&feedback)).await
    };
    let result = match stored {
        Ok(Ok(seq)) => Ok(Json(json!({
            "object": "feedback",
            "id": feedback.id,
            "feedback_id": seq,
            "score": feedback.score,
            "stored": true,
        }))),
        Ok(Err(e)) if e.downcast_ref::<UnknownRequest>().is_some() => {
            Err(ApiError::not_found(e.to_string(), "request_not_found").param("id"))
        }
        Ok(Err(e)) => Err(ApiError::server(format!(
            "cannot store the feedback: {e:#}"
        ))),
        Err(e) => Err(ApiError::server(format!("cannot store the feedback: {e}"))),
    };
    finish(&state, route, result)
}
