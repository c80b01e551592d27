//! The HTTP side: the `/sync` WebSocket (automerge-repo protocol through samod)
//! and the REST API, both behind tokens.

use crate::auth::{Identity, Role, TokenStore};
use crate::storage::DurableStorage;
use crate::{ipynb, schema, wire};
use anyhow::Context;
use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ChangeHash, ObjType, ReadDoc, ROOT};
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use samod::{DocHandle, DocumentId, PeerId, Repo, ShareConfig};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a new connection may take to send its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Sync messages for one document go to a peer at most this often; more are folded.
const SYNC_WINDOW: Duration = Duration::from_millis(40);
/// How often the index's `updated` times follow edits made over sync.
const UPDATED_STAMP: Duration = Duration::from_secs(2);
/// How often live connections are checked against revoked tokens.
const REVOCATION_CHECK: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data: PathBuf,
    pub bind: SocketAddr,
    /// The largest WebSocket message a peer may send.
    pub max_message_bytes: usize,
    /// A folder whose `.ipynb` files are kept in step with their documents.
    pub watch: Option<PathBuf>,
    /// The built browser workspace, served at `/` (see `web::locate`).
    pub web: Option<PathBuf>,
}

/// The peers bound to authenticated connections: what each may do.
#[derive(Default)]
struct Peers {
    by_id: HashMap<String, PeerEntry>,
    next_connection: u64,
    live: HashMap<u64, LiveConnection>,
}

struct PeerEntry {
    token_id: String,
    role: Role,
    connections: usize,
}

struct LiveConnection {
    token_id: String,
    close: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The running server's shared state.
pub struct App {
    repo: Repo,
    storage: DurableStorage,
    tokens: TokenStore,
    index: DocHandle,
    peers: Arc<Mutex<Peers>>,
    acceptor: samod::AcceptorHandle,
    max_message_bytes: usize,
    /// Documents writers changed since the index's `updated` times were stamped.
    touched: Mutex<HashSet<String>>,
    /// Experiments, runs, params and metric series (MLflow's REST API).
    tracking: Arc<crate::tracking::Store>,
    /// Runs whose live documents must follow the store.
    live_runs: crate::live_runs::LiveRuns,
    /// The built browser workspace, if there is one.
    web: Option<PathBuf>,
    /// The owner token created at this start (first start only), for the sign-in URL.
    first_token: Option<String>,
    /// One shared kernel and execution queue per notebook that someone runs.
    kernels: crate::kernels::Kernels,
}

/// Opens the data folder; prints the owner token on first start.
pub async fn start(options: &ServeOptions) -> anyhow::Result<Arc<App>> {
    std::fs::create_dir_all(&options.data)
        .with_context(|| format!("cannot create the data folder {}", options.data.display()))?;
    let tokens = TokenStore::new(&options.data);
    let mut first_token = None;
    if !tokens.exists() {
        let token = tokens.create("owner", Role::Owner)?;
        println!("Owner token (shown once; keep it, or create more with `ferrolab collab token create`):");
        println!("  {token}");
        first_token = Some(token);
    }
    let storage = DurableStorage::open(options.data.join("docs")).with_context(|| {
        format!(
            "cannot open the document store in {}",
            options.data.display()
        )
    })?;
    let peers = Arc::new(Mutex::new(Peers::default()));
    let policy_peers = peers.clone();
    let policy = move |_doc: DocumentId, peer: PeerId| {
        let role = policy_peers
            .lock()
            .ok()
            .and_then(|peers| peers.by_id.get(peer.as_str()).map(|entry| entry.role));
        let config = match role {
            Some(role) if role.can_write() => ShareConfig::read_write().with_announce(false),
            Some(_) => ShareConfig::read_only().with_announce(false),
            None => ShareConfig::none(),
        };
        futures::stream::iter([config])
    };
    let repo = Repo::build_tokio()
        .with_storage(storage.clone())
        .with_share_policy(policy)
        .load()
        .await;
    let index = open_index(&repo, &storage, &options.data).await?;
    let tracking_path = options.data.join("tracking.sqlite");
    let tracking = Arc::new(
        crate::tracking::Store::open(&tracking_path).with_context(|| {
            format!("cannot open the tracking store {}", tracking_path.display())
        })?,
    );
    let url = samod::Url::parse(&format!("ws://{}/sync", options.bind)).context("bind address")?;
    let acceptor = repo
        .make_acceptor(url)
        .map_err(|_| anyhow::anyhow!("the repository stopped"))?;
    Ok(Arc::new(App {
        repo,
        storage,
        tokens,
        index,
        peers,
        acceptor,
        max_message_bytes: options.max_message_bytes,
        touched: Mutex::new(HashSet::new()),
        tracking,
        live_runs: Default::default(),
        web: options.web.clone(),
        first_token,
        kernels: crate::kernels::Kernels::new(kernel_program()?, options.data.join("kernels")),
    }))
}

impl App {
    /// The server's own repository (for tests and tools in this process).
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// The document store.
    pub fn storage(&self) -> &DurableStorage {
        &self.storage
    }
}

async fn open_index(
    repo: &Repo,
    storage: &DurableStorage,
    data: &FsPath,
) -> anyhow::Result<DocHandle> {
    let pointer = data.join("workspace.json");
    match std::fs::read(&pointer) {
        Ok(bytes) => {
            let value: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is damaged", pointer.display()))?;
            let id = value
                .get("index")
                .and_then(Value::as_str)
                .and_then(|id| DocumentId::from_str(id).ok())
                .with_context(|| format!("{} names no index document", pointer.display()))?;
            let handle = repo
                .find(id.clone())
                .await
                .map_err(|_| anyhow::anyhow!("the repository stopped"))?
                .with_context(|| {
                    format!(
                        "the workspace index {id} is missing from {}; the data folder is incomplete",
                        storage.root().display()
                    )
                })?;
            let heads = handle.with_document(|doc| {
                schema::ensure_schema(doc, schema::workspace_skeleton).map(|_| doc.get_heads())
            })?;
            storage.wait_durable(&id.to_string(), &heads).await;
            Ok(handle)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let handle = repo
                .create(schema::workspace_skeleton())
                .await
                .map_err(|_| anyhow::anyhow!("the repository stopped"))?;
            let body =
                serde_json::to_vec_pretty(&json!({ "index": handle.document_id().to_string() }))?;
            crate::storage::write_atomically(&pointer, &body)?;
            Ok(handle)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", pointer.display())),
    }
}

/// The `ferrolab` binary the shared kernels run (`FERROLAB_KERNEL_PROGRAM`, else
/// this very program, which is `ferrolab`).
fn kernel_program() -> anyhow::Result<PathBuf> {
    match std::env::var_os("FERROLAB_KERNEL_PROGRAM") {
        Some(program) => Ok(PathBuf::from(program)),
        None => std::env::current_exe().context("cannot find the ferrolab program to run kernels"),
    }
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let app = start(&options).await?;
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another server running?)",
                options.bind
            )
        })?;
    let address = listener.local_addr()?;
    println!("ferrolab collab server");
    match (&app.web, &app.first_token) {
        (Some(_), Some(token)) => println!("  sign in: http://{address}/?token={token}"),
        (Some(_), None) => {
            println!(
                "  web:  http://{address}/ (sign in with a token: http://{address}/?token=TOKEN)"
            )
        }
        (None, _) => println!("  web:  not built (make up builds collab-server/web)"),
    }
    println!("  sync: ws://{address}/sync");
    println!("  api:  http://{address}/api/notebooks");
    println!("  data: {}", options.data.display());
    if let Some(folder) = &options.watch {
        let watcher = crate::watch::Watcher::new(app.clone(), folder.clone(), &options.data)
            .with_context(|| format!("cannot watch {}", folder.display()))?;
        println!("  watching: {}", folder.display());
        tokio::spawn(watcher.run());
    }
    run(app, listener, shutdown_signal()).await
}

/// Serves `app` on `listener` until `shutdown` completes, then stops the repository
/// (which finishes its pending writes).
pub async fn run(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let revocations = tokio::spawn(watch_revocations(app.clone()));
    let stamps = tokio::spawn(stamp_updates(app.clone()));
    let live = tokio::spawn(crate::live_runs::follow(app.clone()));
    let router = router(app.clone());
    // Sync messages are small writes that follow one another; without TCP_NODELAY
    // the kernel may hold one back until the peer acknowledges the last (Node's `ws`,
    // under the JS sync server, sets it on every socket too).
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(error) = stream.set_nodelay(true) {
            log::debug!("cannot set TCP_NODELAY: {error}");
        }
    });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    revocations.abort();
    stamps.abort();
    live.abort();
    app.kernels.stop_all();
    // The last changes reach the run documents before the repository stops.
    crate::live_runs::flush(&app).await;
    app.repo.stop().await;
    served.context("the HTTP server failed")
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/sync", get(sync_upgrade))
        .route("/api/workspace", get(get_workspace))
        .route("/api/notebooks", get(list_notebooks).post(create_notebook))
        .route(
            "/api/notebooks/{id}",
            get(get_notebook)
                .delete(delete_notebook)
                .patch(rename_notebook),
        )
        .route("/api/notebooks/{id}/ipynb", get(export_notebook))
        .route("/api/notebooks/{id}/export", get(export_report))
        .route(
            "/api/notebooks/{id}/kernel/{action}",
            axum::routing::post(kernel_action),
        )
        .route(
            "/api/2.0/mlflow/{*endpoint}",
            axum::routing::any(crate::mlflow::handle),
        )
        .route(
            "/api/2.0/ferrolab/{*endpoint}",
            axum::routing::any(crate::mlflow::handle_ferrolab),
        )
        .route(
            "/api/2.0/mlflow-artifacts/artifacts",
            get(crate::mlflow::list_artifacts),
        )
        .route(
            "/api/2.0/mlflow-artifacts/artifacts/{*path}",
            axum::routing::any(crate::mlflow::artifact).layer(
                axum::extract::DefaultBodyLimit::max(crate::artifacts::MAX_ARTIFACT_BYTES),
            ),
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

// ---------------------------------------------------------------- errors

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

    fn internal(error: impl std::fmt::Display) -> Self {
        log::error!("internal error: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the server failed: {error}"),
        )
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

// ---------------------------------------------------------------- auth

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

impl App {
    /// Runs whose live documents must follow the store.
    pub(crate) fn live_runs(&self) -> &crate::live_runs::LiveRuns {
        &self.live_runs
    }

    /// The tracking store, shared with blocking tasks.
    pub(crate) fn tracking(&self) -> Arc<crate::tracking::Store> {
        self.tracking.clone()
    }

    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Identity, ApiError> {
        let Some(token) = presented_token(headers, uri) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a token is required: send `Authorization: Bearer TOKEN` (or `?token=TOKEN` from a browser); `ferrolab collab token create` makes one",
            ));
        };
        self.tokens.verify(&token).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this token is unknown or revoked; ask the workspace owner for a new one",
            )
        })
    }

    fn require(&self, who: &Identity, role: Role, action: &str) -> Result<(), ApiError> {
        if who.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{action} needs a token with the {} role; yours is {}",
                    role.as_str(),
                    who.role.as_str()
                ),
            ))
        }
    }
}

// ---------------------------------------------------------------- sync

async fn sync_upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let who = match app.authenticate(&headers, &uri) {
        Ok(who) => who,
        Err(error) => return error.into_response(),
    };
    let limit = app.max_message_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve_peer(app, socket, who))
}

async fn close_with(mut socket: WebSocket, reason: &str) {
    log::warn!("closing a sync connection: {reason}");
    let frame = CloseFrame {
        code: 1008,
        reason: reason.chars().take(120).collect::<String>().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// The next binary message, skipping pings; `None` when the peer is gone.
async fn next_binary(
    socket: &mut (impl futures::Stream<Item = Result<Message, axum::Error>> + Unpin),
) -> Option<Result<Vec<u8>, String>> {
    loop {
        match socket.next().await? {
            Ok(Message::Binary(bytes)) => return Some(Ok(bytes.to_vec())),
            Ok(Message::Text(_)) => {
                return Some(Err(
                    "text frames are not part of the protocol; send binary CBOR".into(),
                ))
            }
            Ok(Message::Close(_)) => return None,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Err(error) => return Some(Err(format!("receive failed: {error}"))),
        }
    }
}

async fn serve_peer(app: Arc<App>, mut socket: WebSocket, who: Identity) {
    let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, next_binary(&mut socket)).await {
        Ok(Some(Ok(bytes))) => bytes,
        Ok(Some(Err(reason))) => return close_with(socket, &reason).await,
        Ok(None) => return,
        Err(_) => return close_with(socket, "no handshake within 15 s").await,
    };
    let peer = match wire::decode(&first) {
        Ok(envelope) if envelope.kind == "join" => match envelope.sender_id {
            Some(peer) if !peer.is_empty() => peer,
            _ => return close_with(socket, "the join message has no senderId").await,
        },
        Ok(envelope) => {
            return close_with(
                socket,
                &format!("expected a join message first, got {:?}", envelope.kind),
            )
            .await
        }
        Err(error) => return close_with(socket, &error.to_string()).await,
    };
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let registered = register_peer(&app, &peer, &who, close_tx);
    let Some(connection) = registered else {
        return close_with(
            socket,
            "this peer id is in use by another token's connection",
        )
        .await;
    };
    log::info!(
        "peer {peer} connected as {} ({})",
        who.name,
        who.role.as_str()
    );

    let (mut ws_tx, ws_rx) = socket.split();
    let peer_for_log = peer.clone();
    let app_for_stream = app.clone();
    let role = who.role;
    let inbound = futures::stream::unfold(
        (ws_rx, Some(first), false),
        move |(mut rx, pending, done)| {
            let peer = peer_for_log.clone();
            let app_for_stream = app_for_stream.clone();
            async move {
                if done {
                    return None;
                }
                let bytes = match pending {
                    Some(bytes) => bytes,
                    None => match next_binary(&mut rx).await? {
                        Ok(bytes) => bytes,
                        Err(reason) => {
                            log::warn!("peer {peer}: {reason}; closing its connection");
                            return None;
                        }
                    },
                };
                match check_inbound(&bytes) {
                    Ok(changed) => {
                        if let (Some(doc), true) = (changed, role.can_write()) {
                            if let Ok(mut touched) = app_for_stream.touched.lock() {
                                touched.insert(doc);
                            }
                        }
                        Some((Ok::<_, std::io::Error>(bytes), (rx, None, false)))
                    }
                    Err(reason) => {
                        log::warn!("peer {peer}: {reason}; closing its connection");
                        None
                    }
                }
            }
        },
    )
    .take_until(close_rx);
    let (out_tx, mut out_rx) = futures::channel::mpsc::channel::<Vec<u8>>(1024);
    let transport = samod::Transport::new(Box::pin(inbound), out_tx)
        .with_expected_peer_id(PeerId::from_string(peer.clone()));
    if app.acceptor.accept(transport).is_err() {
        log::warn!("the repository is stopping; refusing peer {peer}");
    } else {
        write_to_peer(&app, &mut ws_tx, &mut out_rx).await;
    }
    let _ = ws_tx.close().await;
    if let Ok(mut peers) = app.peers.lock() {
        peers.live.remove(&connection);
        if let Some(entry) = peers.by_id.get_mut(&peer) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                peers.by_id.remove(&peer);
            }
        }
    }
    log::info!("peer {peer} disconnected");
}

/// Sends samod's outgoing messages to one peer.
///
/// Two rules: a sync message never leaves before the heads it announces are on
/// disk (so an acknowledgement survives a crash), and sync messages for one
/// document are sent at most once per [`SYNC_WINDOW`]: one that comes sooner is
/// held and later ones are folded into it. A busy notebook then costs each client
/// one message per window instead of one per keystroke of every other person,
/// which is what the clients' CPU spends its time on.
async fn write_to_peer(
    app: &App,
    ws_tx: &mut (impl futures::Sink<Message, Error = axum::Error> + Unpin),
    out_rx: &mut futures::channel::mpsc::Receiver<Vec<u8>>,
) {
    let mut last_sent: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut held: HashMap<String, (wire::OutgoingSync, tokio::time::Instant)> = HashMap::new();
    loop {
        let next_due = held.values().map(|(_, due)| *due).min();
        let incoming = tokio::select! {
            message = out_rx.next() => Some(message),
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)), if next_due.is_some() => None,
        };
        let now = tokio::time::Instant::now();
        let mut ready: Vec<Outgoing> = Vec::new();
        match incoming {
            // The timer: send what is due.
            None => {
                let due: Vec<String> = held
                    .iter()
                    .filter(|(_, (_, at))| *at <= now)
                    .map(|(doc, _)| doc.clone())
                    .collect();
                for doc in due {
                    if let Some((sync, _)) = held.remove(&doc) {
                        last_sent.insert(doc, now);
                        ready.push(Outgoing::sync(sync));
                    }
                }
            }
            // samod is done with this peer: flush and stop.
            Some(None) => {
                for (_, (sync, _)) in held.drain() {
                    let _ = send_durably(app, ws_tx, Outgoing::sync(sync)).await;
                }
                return;
            }
            Some(Some(bytes)) => match wire::OutgoingSync::parse(&bytes) {
                None => ready.push(Outgoing::other(bytes)),
                Some(sync) => {
                    let doc = sync.document_id.clone();
                    if let Some((pending, due)) = held.remove(&doc) {
                        let mut pending = pending;
                        match pending.absorb(sync) {
                            None => {
                                held.insert(doc, (pending, due));
                            }
                            Some(sync) => {
                                // Cannot fold: keep the order, send both now.
                                ready.push(Outgoing::sync(pending));
                                ready.push(Outgoing::sync(sync));
                                last_sent.insert(doc, now);
                            }
                        }
                    } else if let Some(due) = last_sent
                        .get(&doc)
                        .map(|at| *at + SYNC_WINDOW)
                        .filter(|due| *due > now)
                    {
                        held.insert(doc, (sync, due));
                    } else {
                        // Sent as samod wrote it; only the heads are taken from the parse.
                        let announces = Some((doc.clone(), sync.heads().to_vec()));
                        last_sent.insert(doc, now);
                        ready.push(Outgoing { bytes, announces });
                    }
                }
            },
        }
        for message in ready {
            if send_durably(app, ws_tx, message).await.is_err() {
                return;
            }
        }
    }
}

/// One message for a peer, with the heads it announces (read once).
struct Outgoing {
    bytes: Vec<u8>,
    announces: Option<(String, Vec<ChangeHash>)>,
}

impl Outgoing {
    fn sync(sync: wire::OutgoingSync) -> Self {
        let announces = Some((sync.document_id.clone(), sync.heads().to_vec()));
        Self {
            bytes: sync.encode(),
            announces,
        }
    }

    fn other(bytes: Vec<u8>) -> Self {
        let announces = wire::announced_heads(&bytes);
        Self { bytes, announces }
    }
}

/// Sends one message once the heads it announces are on disk.
async fn send_durably(
    app: &App,
    ws_tx: &mut (impl futures::Sink<Message, Error = axum::Error> + Unpin),
    message: Outgoing,
) -> Result<(), axum::Error> {
    if let Some((doc, heads)) = &message.announces {
        // Never announce heads that a crash could still lose.
        app.storage.wait_durable(doc, heads).await;
    }
    ws_tx.send(Message::Binary(message.bytes.into())).await
}

/// Binds `peer` to the token that authenticated its connection; `None` when
/// another token's live connection already uses that peer id.
fn register_peer(
    app: &App,
    peer: &str,
    who: &Identity,
    close: tokio::sync::oneshot::Sender<()>,
) -> Option<u64> {
    let mut peers = app.peers.lock().ok()?;
    if let Some(entry) = peers.by_id.get(peer) {
        if entry.token_id != who.token_id {
            return None;
        }
    }
    peers
        .by_id
        .entry(peer.to_string())
        .or_insert(PeerEntry {
            token_id: who.token_id.clone(),
            role: who.role,
            connections: 0,
        })
        .connections += 1;
    peers.next_connection += 1;
    let id = peers.next_connection;
    peers.live.insert(
        id,
        LiveConnection {
            token_id: who.token_id.clone(),
            close: Some(close),
        },
    );
    Some(id)
}

/// Validates an inbound message before samod sees it; returns the document it
/// brings changes to, if any.
fn check_inbound(bytes: &[u8]) -> Result<Option<String>, String> {
    let envelope = wire::decode(bytes).map_err(|e| e.to_string())?;
    if envelope.is_sync() {
        let data = envelope
            .data
            .as_deref()
            .ok_or("a sync message without data")?;
        if wire::check_sync_payload(data)? {
            return Ok(envelope.document_id);
        }
    }
    Ok(None)
}

/// Moves the `updated` time of notebooks whose documents peers changed.
async fn stamp_updates(app: Arc<App>) {
    let mut tick = tokio::time::interval(UPDATED_STAMP);
    loop {
        tick.tick().await;
        let touched: HashSet<String> = match app.touched.lock() {
            Ok(mut touched) => std::mem::take(&mut *touched),
            Err(_) => return,
        };
        if touched.is_empty() {
            continue;
        }
        let stamp = now();
        let result = app.index.with_document(|doc| {
            let Some(notebooks) = schema::get_map(doc, &ROOT, "notebooks") else {
                return Ok(());
            };
            let hits: Vec<automerge::ObjId> = doc
                .map_range(&notebooks, ..)
                .filter_map(|item| {
                    let entry = item.id();
                    let ids = ["notebook", "runtime"].map(|key| {
                        schema::get_str(doc, &entry, key)
                            .map(|url| url.trim_start_matches("automerge:").to_string())
                    });
                    ids.iter()
                        .flatten()
                        .any(|id| touched.contains(id))
                        .then_some(entry)
                })
                .collect();
            if hits.is_empty() {
                return Ok(());
            }
            doc.transact::<_, _, AutomergeError>(|tx| {
                for entry in &hits {
                    tx.put(entry, "updated", stamp.as_str())?;
                }
                Ok(())
            })
            .map(|_| ())
            .map_err(|f| f.error)
        });
        if let Err(error) = result {
            log::warn!("could not stamp notebook update times: {error}");
        }
    }
}

async fn watch_revocations(app: Arc<App>) {
    let mut tick = tokio::time::interval(REVOCATION_CHECK);
    loop {
        tick.tick().await;
        let Ok(mut peers) = app.peers.lock() else {
            return;
        };
        let mut revoked_tokens = HashMap::new();
        for connection in peers.live.values_mut() {
            let active = *revoked_tokens
                .entry(connection.token_id.clone())
                .or_insert_with(|| app.tokens.is_active(&connection.token_id));
            if !active {
                if let Some(close) = connection.close.take() {
                    log::info!(
                        "token {} was revoked; closing its connection",
                        connection.token_id
                    );
                    let _ = close.send(());
                }
            }
        }
    }
}

// ---------------------------------------------------------------- REST

fn entry_json(doc: &Automerge, id: &str) -> Option<Value> {
    let notebooks = schema::get_map(doc, &ROOT, "notebooks")?;
    let entry = schema::get_json(doc, &notebooks, id)?;
    entry.is_object().then_some(entry)
}

async fn list_notebooks(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    app.authenticate(&headers, &uri)?;
    let mut entries: Vec<Value> =
        app.index
            .with_document(|doc| match schema::get_json(doc, &ROOT, "notebooks") {
                Some(Value::Object(map)) => map.into_values().collect(),
                _ => Vec::new(),
            });
    entries.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["created"].as_str().unwrap_or("").to_string(),
                v["id"].as_str().unwrap_or("").to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(Json(json!({ "notebooks": entries })).into_response())
}

/// What the browser workspace needs to start: the index document and who you are.
async fn get_workspace(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let who = app.authenticate(&headers, &uri)?;
    Ok(Json(json!({
        "index": format!("automerge:{}", app.index.document_id()),
        "user": { "name": who.name, "role": who.role.as_str(), "token_id": who.token_id },
    }))
    .into_response())
}

/// `POST /api/notebooks/{id}/kernel/execute` (`{"cells": [ids]}` or `{"all": true}`),
/// `.../kernel/interrupt`, `.../kernel/restart`: the notebook's shared kernel.
/// Editors only. Sources are taken as they are now; outputs arrive in the runtime
/// document.
async fn kernel_action(
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    use crate::kernels::Command;
    let who = app.authenticate(&headers, &uri)?;
    app.require(&who, Role::Editor, "running cells")?;
    let (notebook, runtime) = app.open_handles(&id).await?;
    let command = match action.as_str() {
        "execute" => {
            let bad =
                |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message);
            let request: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body).map_err(|e| {
                    bad(format!("the body is not JSON ({e}); send {{\"cells\": [ids]}} or {{\"all\": true}}"))
                })?
            };
            let all = request.get("all").and_then(Value::as_bool).unwrap_or(false);
            let wanted: Vec<String> = match request.get("cells") {
                Some(Value::Array(ids)) => ids
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("`cells` must be a list of cell ids".into()))?,
                Some(_) => return Err(bad("`cells` must be a list of cell ids".into())),
                None if all => Vec::new(),
                None => return Err(bad("send {\"cells\": [ids]} or {\"all\": true}".into())),
            };
            let cells = notebook.with_document(|doc| {
                let order = crate::notebook::cell_ids(doc);
                let ids: Vec<String> = if all { order.clone() } else { wanted.clone() };
                let mut out = Vec::new();
                for cell in ids {
                    if !order.contains(&cell) {
                        return Err(cell);
                    }
                    if crate::notebook::cell_type(doc, &cell).as_deref() == Some("code") {
                        let source = crate::notebook::source(doc, &cell).unwrap_or_default();
                        out.push((cell, source));
                    }
                }
                Ok(out)
            });
            let cells = cells.map_err(|cell| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("the notebook has no cell {cell:?}; it may have been deleted"),
                )
            })?;
            let queued: Vec<String> = cells.iter().map(|(id, _)| id.clone()).collect();
            app.kernels.send(&id, &runtime, Command::Execute(cells));
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
    app.kernels.send(&id, &runtime, command);
    Ok((StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response())
}

/// `PATCH /api/notebooks/{id}` with `{"title": ...}`: renames a notebook.
async fn rename_notebook(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = app.authenticate(&headers, &uri)?;
    app.require(&who, Role::Editor, "renaming a notebook")?;
    let bad = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message);
    let request: Value = serde_json::from_slice(&body).map_err(|e| {
        bad(&format!(
            "the body is not JSON ({e}); send {{\"title\": \"...\"}}"
        ))
    })?;
    let title = request
        .get("title")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("send {\"title\": \"...\"} with a title that is not empty"))?
        .to_string();
    if title.chars().count() > 200 {
        return Err(bad("a title has at most 200 characters"));
    }
    let renamed = app
        .change_durably(&app.index, |doc| {
            let Some(notebooks) = schema::get_map(doc, &ROOT, "notebooks") else {
                return Ok(false);
            };
            let Some(entry) = schema::get_map(doc, &notebooks, id.as_str()) else {
                return Ok(false);
            };
            let now = now();
            doc.transact::<_, _, AutomergeError>(|tx| {
                tx.put(&entry, "title", title.as_str())?;
                tx.put(&entry, "updated", now.as_str())
            })
            .map(|_| true)
            .map_err(|f| f.error)
        })
        .await?;
    if !renamed {
        return Err(not_found(&id));
    }
    let entry = app.index_entry(&id).ok_or_else(|| not_found(&id))?;
    Ok(Json(entry).into_response())
}

async fn get_notebook(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    app.authenticate(&headers, &uri)?;
    let entry = app.index_entry(&id).ok_or_else(|| not_found(&id))?;
    Ok(Json(entry).into_response())
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no notebook has the id {id:?}; GET /api/notebooks lists them"),
    )
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
            let notebook = ipynb::from_json(value).map_err(|e| {
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

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl App {
    async fn change_durably<R>(
        &self,
        handle: &DocHandle,
        f: impl FnOnce(&mut Automerge) -> Result<R, AutomergeError>,
    ) -> Result<R, ApiError> {
        let (result, heads): (R, Vec<ChangeHash>) = handle
            .with_document(|doc| f(doc).map(|r| (r, doc.get_heads())))
            .map_err(ApiError::internal)?;
        self.storage
            .wait_durable(&handle.document_id().to_string(), &heads)
            .await;
        Ok(result)
    }

    /// Creates a notebook (empty, or from an imported file) and lists it.
    pub async fn create(
        &self,
        title: Option<String>,
        notebook: Option<&ipynb::Notebook>,
    ) -> Result<Value, ApiError> {
        self.create_with_path(title, notebook, None).await
    }

    /// The workspace index entry of notebook `id`.
    pub fn index_entry(&self, id: &str) -> Option<Value> {
        self.index.with_document(|doc| entry_json(doc, id))
    }

    /// [`App::create`] for a notebook that mirrors a file of a watched folder.
    pub async fn create_with_path(
        &self,
        title: Option<String>,
        notebook: Option<&ipynb::Notebook>,
        path: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut nb_doc = schema::notebook_skeleton();
        let mut rt_doc = schema::runtime_skeleton();
        if let Some(notebook) = notebook {
            ipynb::fill(notebook, &mut nb_doc, &mut rt_doc).map_err(ApiError::internal)?;
        }
        let stopped = |_| ApiError::internal("the repository stopped");
        let nb = self.repo.create(nb_doc).await.map_err(stopped)?;
        rt_doc
            .transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, "notebook", nb.url().to_string()))
            .map_err(|f| ApiError::internal(f.error))?;
        let rt = self.repo.create(rt_doc).await.map_err(stopped)?;
        let runtime_url = rt.url().to_string();
        self.change_durably(&nb, |doc| {
            doc.transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, "runtime", runtime_url.as_str()))
                .map(|_| ())
                .map_err(|f| f.error)
        })
        .await?;
        let id = nb.document_id().to_string();
        let stamp = now();
        let mut entry = json!({
            "id": id,
            "title": title.unwrap_or_else(|| "Untitled".into()),
            "created": stamp,
            "updated": stamp,
            "notebook": nb.url().to_string(),
            "runtime": runtime_url,
        });
        if let Some(path) = path {
            entry["path"] = Value::String(path.to_string());
        }
        self.change_durably(&self.index, |doc| {
            doc.transact::<_, _, AutomergeError>(|tx| {
                let notebooks = match schema::get_map(tx, &ROOT, "notebooks") {
                    Some(map) => map,
                    None => tx.put_object(ROOT, "notebooks", ObjType::Map)?,
                };
                schema::put_json(tx, &notebooks, &id, &entry)
            })
            .map(|_| ())
            .map_err(|f| f.error)
        })
        .await?;
        Ok(entry)
    }

    /// The live notebook and runtime documents of notebook `id`.
    pub async fn open_handles(&self, id: &str) -> Result<(DocHandle, DocHandle), ApiError> {
        let entry = self.index_entry(id).ok_or_else(|| not_found(id))?;
        let mut handles = Vec::new();
        for key in ["notebook", "runtime"] {
            let doc_id = entry[key]
                .as_str()
                .map(|url| url.trim_start_matches("automerge:"))
                .and_then(|id| DocumentId::from_str(id).ok())
                .ok_or_else(|| {
                    ApiError::internal(format!("the index entry of {id} has no {key} document"))
                })?;
            let handle = self
                .repo
                .find(doc_id)
                .await
                .map_err(|_| ApiError::internal("the repository stopped"))?
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "the {key} document of {id} is missing from storage"
                    ))
                })?;
            handles.push(handle);
        }
        let runtime = handles
            .pop()
            .ok_or_else(|| ApiError::internal("no runtime handle"))?;
        let notebook = handles
            .pop()
            .ok_or_else(|| ApiError::internal("no notebook handle"))?;
        Ok((notebook, runtime))
    }
}

async fn create_notebook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = app.authenticate(&headers, &uri)?;
    app.require(&who, Role::Editor, "creating a notebook")?;
    let request = parse_create(&body, &uri)?;
    let entry = app.create(request.title, request.notebook.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

/// The notebook as both documents show it now, and its title.
async fn notebook_json(app: &App, id: &str) -> Result<(Value, String), ApiError> {
    let (notebook, runtime) = app.open_handles(id).await?;
    let (notebook, runtime) = (
        notebook.with_document(|doc| doc.clone()),
        runtime.with_document(|doc| doc.clone()),
    );
    let title = app
        .index
        .with_document(|doc| entry_json(doc, id))
        .and_then(|e| e["title"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "notebook".into());
    Ok((ipynb::export(&notebook, &runtime), title))
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

async fn export_notebook(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    app.authenticate(&headers, &uri)?;
    let (json, title) = notebook_json(&app, &id).await?;
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
async fn export_report(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    app.authenticate(&headers, &uri)?;
    let format: ferrolab_export::Format = query
        .get("format")
        .map(String::as_str)
        .unwrap_or("html")
        .parse()
        .map_err(|e: ferrolab_export::ExportError| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.0)
        })?;
    let flag = |key: &str| {
        query
            .get(key)
            .is_some_and(|v| matches!(v.as_str(), "" | "1" | "true" | "yes"))
    };
    let chart_script = if flag("interactive") {
        if format != ferrolab_export::Format::Html {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "interactive is for HTML reports; leave it out for other formats",
            ));
        }
        let Some(web) = app.web.as_deref() else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cannot_export",
                "interactive charts need the web build (make web), and this server serves none",
            ));
        };
        let web = web.to_path_buf();
        let script = tokio::task::spawn_blocking(move || ferrolab_export::chart_script(Some(&web)))
            .await
            .map_err(ApiError::internal)?;
        Some(
            script.map_err(|e| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_export", e.0)
            })?,
        )
    } else {
        None
    };
    let (json, title) = notebook_json(&app, &id).await?;
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
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "cannot_export", e.0))?;
    Ok(download(
        &title,
        format.extension(),
        format.content_type(),
        exported.document,
    ))
}

async fn delete_notebook(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let who = app.authenticate(&headers, &uri)?;
    app.require(&who, Role::Owner, "deleting a notebook")?;
    let existed = app
        .change_durably(&app.index, |doc| {
            let Some(notebooks) = schema::get_map(doc, &ROOT, "notebooks") else {
                return Ok(false);
            };
            if doc.get(&notebooks, id.as_str())?.is_none() {
                return Ok(false);
            }
            doc.transact::<_, _, AutomergeError>(|tx| tx.delete(&notebooks, id.as_str()))
                .map(|_| true)
                .map_err(|f| f.error)
        })
        .await?;
    if !existed {
        return Err(not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
