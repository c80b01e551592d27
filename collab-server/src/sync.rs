//! Sync: peers speaking automerge-repo's protocol over WebSockets, through samod.
//!
//! Each connection is bound to the token that opened it and to the peer id of its
//! handshake; what the peer may do (read, or read and write) follows the token's
//! role, and a revoked token's connections are closed. Every inbound message is
//! checked before samod sees it, and no sync message leaves before the heads it
//! announces are on disk.

use crate::auth::{Identity, Role, TokenStore};
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

/// samod's share policy for these peers: writers read and write, viewers read,
/// unknown peers get nothing. Built before the repository, which takes it.
pub fn share_policy(
    peers: Arc<Mutex<Peers>>,
) -> impl Fn(DocumentId, PeerId) -> futures::stream::Iter<std::array::IntoIter<ShareConfig, 1>>
       + Clone
       + Send
       + Sync
       + 'static {
    move |_doc: DocumentId, peer: PeerId| {
        let role = peers
            .lock()
            .ok()
            .and_then(|peers| peers.by_id.get(peer.as_str()).map(|entry| entry.role));
        let config = match role {
            Some(role) if role.can_write() => ShareConfig::read_write().with_announce(false),
            Some(_) => ShareConfig::read_only().with_announce(false),
            None => ShareConfig::none(),
        };
        futures::stream::iter([config])
    }
}

/// Accepts authenticated sockets into the repository and serves them.
pub struct SyncService {
    peers: Arc<Mutex<Peers>>,
    acceptor: samod::AcceptorHandle,
    workspace: Arc<Workspace>,
    /// The largest WebSocket message a peer may send.
    pub max_message_bytes: usize,
}

impl SyncService {
    pub fn new(
        peers: Arc<Mutex<Peers>>,
        acceptor: samod::AcceptorHandle,
        workspace: Arc<Workspace>,
        max_message_bytes: usize,
    ) -> SyncService {
        SyncService {
            peers,
            acceptor,
            workspace,
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
        let registered = self.register_peer(&peer, &who, close_tx);
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
        let workspace = self.workspace.clone();
        let role = who.role;
        let inbound = futures::stream::unfold(
            (ws_rx, Some(first), false),
            move |(mut rx, pending, done)| {
                let peer = peer_for_log.clone();
                let workspace = workspace.clone();
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
                                workspace.touch(doc);
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
        if self.acceptor.accept(transport).is_err() {
            log::warn!("the repository is stopping; refusing peer {peer}");
        } else {
            self.write_to_peer(&mut ws_tx, &mut out_rx).await;
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
        ws_tx.send(Message::Binary(message.bytes.into())).await
    }

    /// Binds `peer` to the token that authenticated its connection; `None` when
    /// another token's live connection already uses that peer id.
    fn register_peer(
        &self,
        peer: &str,
        who: &Identity,
        close: tokio::sync::oneshot::Sender<()>,
    ) -> Option<u64> {
        let mut peers = self.peers.lock().ok()?;
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
