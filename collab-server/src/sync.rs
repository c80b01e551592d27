//! Sync: peers speaking automerge-repo's protocol over WebSockets, through samod.
//!
//! Each connection is bound to the token that opened it and to the peer id of its
//! handshake; what the peer may do (read, or read and write) follows the token's
//! role, and a revoked token's connections are closed. Every inbound message is
//! checked before samod sees it, and no sync message leaves before the heads it
//! announces are on disk.

use crate::auth::{Identity, Role, TokenStore};
use crate::rights::DocRights;
use crate::storage::DurableStorage;
use crate::wire;
use crate::workspace::Workspace;
use automerge::ChangeHash;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use samod::{DocumentId, PeerId, ShareConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a new connection may take to send its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Sync messages for one document go to a peer at most this often; more are folded.
const SYNC_WINDOW: Duration = Duration::from_millis(40);
/// How often live connections are checked against revoked tokens.
const REVOCATION_CHECK: Duration = Duration::from_millis(500);
/// The largest ephemeral message (presence, cursors) a peer may send.
pub const MAX_EPHEMERAL_BYTES: usize = 16 * 1024;
/// Ephemeral messages a connection may send per second (a burst of twice that).
const EPHEMERAL_PER_SECOND: f64 = 50.0;
/// How long one message to a peer may take to send; a peer that stops reading is
/// disconnected instead of making the server hold everything for it.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Live sync connections one token may hold.
pub const MAX_CONNECTIONS_PER_TOKEN: usize = 32;

/// A token bucket for one connection's ephemeral messages.
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            tokens: 2.0 * EPHEMERAL_PER_SECOND,
            at: std::time::Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * EPHEMERAL_PER_SECOND;
        self.tokens = (self.tokens + refill).min(2.0 * EPHEMERAL_PER_SECOND);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The peers bound to authenticated connections: what each may do.
#[derive(Default)]
pub struct Peers {
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

/// samod's share policy for these peers: writers read and write the documents
/// peers may change, everyone else reads, unknown peers get nothing. Built before
/// the repository, which takes it.
pub fn share_policy(
    peers: Arc<Mutex<Peers>>,
    rights: Arc<DocRights>,
) -> impl Fn(DocumentId, PeerId) -> futures::stream::BoxStream<'static, ShareConfig>
       + Clone
       + Send
       + Sync
       + 'static {
    move |doc: DocumentId, peer: PeerId| {
        let peers = peers.clone();
        let rights = rights.clone();
        let changes = rights.subscribe();
        let decide = move || {
            let role = peers
                .lock()
                .ok()
                .and_then(|peers| peers.by_id.get(peer.as_str()).map(|entry| entry.role));
            match role {
                Some(role) if role.can_write() && rights.is_editable(&doc.to_string()) => {
                    ShareConfig::read_write().with_announce(false)
                }
                Some(_) => ShareConfig::read_only().with_announce(false),
                None => ShareConfig::none(),
            }
        };
        // The decision now, then again whenever the rights change (samod skips
        // repeats), for as long as samod listens.
        Box::pin(futures::stream::unfold(
            (changes, true),
            move |(mut changes, first)| {
                let decide = decide.clone();
                async move {
                    if !first {
                        changes.changed().await.ok()?;
                    }
                    Some((decide(), (changes, false)))
                }
            },
        ))
    }
}

/// Accepts authenticated sockets into the repository and serves them.
pub struct SyncService {
    peers: Arc<Mutex<Peers>>,
    acceptor: samod::AcceptorHandle,
    workspace: Arc<Workspace>,
    rights: Arc<DocRights>,
    /// The largest WebSocket message a peer may send.
    pub max_message_bytes: usize,
}

impl SyncService {
    pub fn new(
        peers: Arc<Mutex<Peers>>,
        acceptor: samod::AcceptorHandle,
        workspace: Arc<Workspace>,
        rights: Arc<DocRights>,
        max_message_bytes: usize,
    ) -> SyncService {
        SyncService {
            peers,
            acceptor,
            workspace,
            rights,
            max_message_bytes,
        }
    }

    fn storage(&self) -> &DurableStorage {
        self.workspace.storage()
    }

    /// Serves one upgraded socket for `who` until either side ends it.
    pub async fn serve_peer(self: Arc<Self>, mut socket: WebSocket, who: Identity) {
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
        let connection = match self.register_peer(&peer, &who, close_tx) {
            Ok(connection) => connection,
            Err(reason) => return close_with(socket, reason).await,
        };
        log::info!(
            "peer {peer} connected as {} ({})",
            who.name,
            who.role.as_str()
        );

        let (mut ws_tx, ws_rx) = socket.split();
        // Why the server ended the connection, for its close frame.
        let refusal: Arc<Mutex<Option<String>>> = Arc::default();
        let state = Inbound {
            rx: ws_rx,
            pending: Some(first),
            peer: peer.clone(),
            workspace: self.workspace.clone(),
            rights: self.rights.clone(),
            role: who.role,
            name: who.name.clone(),
            bucket: Bucket::new(),
            refusal: refusal.clone(),
            max_inflated: max_inflated(self.max_message_bytes),
        };
        let inbound = futures::stream::unfold(state, Inbound::next).take_until(close_rx);
        let (out_tx, mut out_rx) = futures::channel::mpsc::channel::<Vec<u8>>(1024);
        let transport = samod::Transport::new(Box::pin(inbound), out_tx)
            .with_expected_peer_id(PeerId::from_string(peer.clone()));
        if self.acceptor.accept(transport).is_err() {
            log::warn!("the repository is stopping; refusing peer {peer}");
        } else {
            self.write_to_peer(&mut ws_tx, &mut out_rx).await;
        }
        let reason = refusal.lock().ok().and_then(|mut r| r.take());
        if let Some(reason) = reason {
            let frame = CloseFrame {
                code: 1008,
                reason: truncate(&reason, 120).into(),
            };
            let _ =
                tokio::time::timeout(SEND_TIMEOUT, ws_tx.send(Message::Close(Some(frame)))).await;
        }
        let _ = ws_tx.close().await;
        if let Ok(mut peers) = self.peers.lock() {
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
        &self,
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
                        let _ = self.send_durably(ws_tx, Outgoing::sync(sync)).await;
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
                if self.send_durably(ws_tx, message).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Sends one message once the heads it announces are on disk.
    async fn send_durably(
        &self,
        ws_tx: &mut (impl futures::Sink<Message, Error = axum::Error> + Unpin),
        message: Outgoing,
    ) -> Result<(), axum::Error> {
        if let Some((doc, heads)) = &message.announces {
            // Never announce heads that a crash could still lose.
            self.storage().wait_durable(doc, heads).await;
        }
        match tokio::time::timeout(
            SEND_TIMEOUT,
            ws_tx.send(Message::Binary(message.bytes.into())),
        )
        .await
        {
            Ok(sent) => sent,
            Err(_) => {
                log::warn!(
                    "a peer read nothing for {} s; disconnecting it",
                    SEND_TIMEOUT.as_secs()
                );
                Err(axum::Error::new(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            }
        }
    }

    /// Binds `peer` to the token that authenticated its connection; refused when
    /// another token's live connection already uses that peer id, or the token
    /// holds [`MAX_CONNECTIONS_PER_TOKEN`] connections.
    fn register_peer(
        &self,
        peer: &str,
        who: &Identity,
        close: tokio::sync::oneshot::Sender<()>,
    ) -> Result<u64, &'static str> {
        let mut peers = self.peers.lock().map_err(|_| "the server is stopping")?;
        if let Some(entry) = peers.by_id.get(peer) {
            if entry.token_id != who.token_id {
                return Err("this peer id is in use by another token's connection");
            }
        }
        let held = peers
            .live
            .values()
            .filter(|c| c.token_id == who.token_id)
            .count();
        if held >= MAX_CONNECTIONS_PER_TOKEN {
            return Err("this token holds its limit of 32 sync connections; close one first");
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
        Ok(id)
    }

    /// Closes the connections of revoked tokens, checking every [`REVOCATION_CHECK`].
    pub async fn watch_revocations(self: Arc<Self>, tokens: Arc<TokenStore>) {
        let mut tick = tokio::time::interval(REVOCATION_CHECK);
        loop {
            tick.tick().await;
            let Ok(mut peers) = self.peers.lock() else {
                return;
            };
            let mut revoked_tokens = HashMap::new();
            for connection in peers.live.values_mut() {
                let active = *revoked_tokens
                    .entry(connection.token_id.clone())
                    .or_insert_with(|| tokens.is_active(&connection.token_id));
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
}

async fn close_with(mut socket: WebSocket, reason: &str) {
    log::warn!("closing a sync connection: {reason}");
    let frame = CloseFrame {
        code: 1008,
        reason: truncate(reason, 120).into(),
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

/// Validates an inbound sync message before samod sees it; returns the document
/// it brings changes to, if any.
/// What the changes in one sync message may inflate to: four times the largest
/// message a peer may send, and never less than 256 MiB.
fn max_inflated(max_message_bytes: usize) -> u64 {
    (max_message_bytes as u64).saturating_mul(4).max(256 << 20)
}

fn check_inbound(envelope: &wire::Envelope, max_inflated: u64) -> Result<Option<String>, String> {
    if envelope.is_sync() {
        let data = envelope
            .data
            .as_deref()
            .ok_or("a sync message without data")?;
        if wire::check_sync_payload(data, max_inflated)? {
            return Ok(envelope.document_id.clone());
        }
    }
    Ok(None)
}

fn truncate(text: &str, max_bytes: usize) -> String {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// One connection's inbound messages, each checked before samod sees it.
struct Inbound<R> {
    rx: R,
    pending: Option<Vec<u8>>,
    peer: String,
    workspace: Arc<Workspace>,
    rights: Arc<DocRights>,
    role: Role,
    name: String,
    bucket: Bucket,
    refusal: Arc<Mutex<Option<String>>>,
    /// The most the changes in one sync message may inflate to.
    max_inflated: u64,
}

impl<R> Inbound<R>
where
    R: futures::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    /// The next message for samod; `None` ends the connection (the reason, if the
    /// server refused something, goes to its close frame).
    async fn next(mut self) -> Option<(Result<Vec<u8>, std::io::Error>, Self)> {
        loop {
            let bytes = match self.pending.take() {
                Some(bytes) => bytes,
                None => match next_binary(&mut self.rx).await? {
                    Ok(bytes) => bytes,
                    Err(reason) => {
                        log::warn!("peer {}: {reason}; closing its connection", self.peer);
                        return None;
                    }
                },
            };
            match self.check(bytes) {
                Ok(Some(bytes)) => return Some((Ok(bytes), self)),
                // Over the ephemeral rate: dropped, the connection stays.
                Ok(None) => continue,
                Err(reason) => {
                    log::warn!("peer {}: {reason}; closing its connection", self.peer);
                    if let Ok(mut refusal) = self.refusal.lock() {
                        *refusal = Some(reason);
                    }
                    return None;
                }
            }
        }
    }

    fn check(&mut self, bytes: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
        let envelope = wire::decode(&bytes).map_err(|e| e.to_string())?;
        if envelope.kind == "ephemeral" {
            if bytes.len() > MAX_EPHEMERAL_BYTES {
                return Err(format!(
                    "ephemeral messages are limited to {MAX_EPHEMERAL_BYTES} bytes; this one has {}",
                    bytes.len()
                ));
            }
            if !self.bucket.take() {
                return Ok(None);
            }
            return wire::stamp_ephemeral(&bytes, &self.name, self.role.as_str())
                .map(Some)
                .map_err(|e| e.to_string());
        }
        if let Some(doc) = check_inbound(&envelope, self.max_inflated)? {
            if !self.role.can_write() {
                return Err(format!(
                    "a {} token cannot change documents (tried {doc})",
                    self.role.as_str()
                ));
            }
            if !self.rights.is_editable(&doc) {
                return Err(format!(
                    "document {doc} is written by the server only (index, runtime and run documents); peers change notebooks and run notes"
                ));
            }
            self.workspace.touch(doc);
        }
        Ok(Some(bytes))
    }
}
