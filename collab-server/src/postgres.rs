//! The cluster mode's database (`ferrolab collab serve --database postgres://…`).
//!
//! **Document chunks.** The storage model is samod's, as on disk: one row per
//! storage key (a document's incremental changes and compacted snapshots), the
//! key's components joined by `/`. A chunk is acknowledged only once its
//! transaction has committed, so the durability rule of the embedded store holds:
//! a client that sees its change in the server's heads may rely on it surviving a
//! crash of the server.
//!
//! **Replicas.** Every stored chunk is announced on the channel
//! [`CHUNKS_CHANNEL`] with PostgreSQL's `NOTIFY`, in the same statement as its
//! row, so the announcement goes out exactly when the row commits. The payload is
//! the writing replica's id, the key, the heads a snapshot holds, and the chunk
//! itself when it is small (most edits are); every other replica
//! [listens](Database::listen) and merges the chunk into the document if it has
//! it open (`crate::replicas`). A replica whose listening connection broke may
//! have missed announcements, so it is told ([`Announcement::Reconnected`]) and
//! reloads what it has open.
//!
//! **Server settings** shared by the replicas (the workspace index's id, the
//! tokens, the key that signs browser sessions) are rows of `ferrolab_meta`,
//! announced on [`META_CHANNEL`] when they change.
//!
//! One connection for queries, shared by every request (tokio-postgres pipelines
//! queries on it); when it breaks, the next query opens a new one. Listening
//! takes a second connection.

use anyhow::Context;
use base64::Engine;
use futures::StreamExt;
use samod::storage::StorageKey;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ferrolab_chunks (
    key TEXT PRIMARY KEY,
    data BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS ferrolab_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ferrolab_kernels (
    notebook TEXT PRIMARY KEY,
    replica TEXT NOT NULL,
    expires TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS ferrolab_kernel_requests (
    id BIGSERIAL PRIMARY KEY,
    notebook TEXT NOT NULL,
    request TEXT NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// The channel on which stored chunks are announced.
pub const CHUNKS_CHANNEL: &str = "ferrolab_chunks";
/// The channel on which changed settings are announced (the payload is the name).
pub const META_CHANNEL: &str = "ferrolab_meta";
/// The channel on which runs are handed to the replica holding a notebook's
/// kernel (the payload is JSON: the replica's id in `to`, the request's row in
/// `ferrolab_kernel_requests` in `id`).
pub const KERNELS_CHANNEL: &str = "ferrolab_kernels";
/// A handed-over kernel request no replica could run for this long is dropped
/// (logged): running cells an hour after someone asked would surprise them.
pub const STALE_KERNEL_REQUEST: Duration = Duration::from_secs(3600);
/// Chunks up to this size travel inside their announcement (PostgreSQL allows
/// payloads under 8000 bytes; base64 adds a third, the key and heads the rest).
const INLINE_CHUNK_BYTES: usize = 5_000;
/// A snapshot announces its heads when it has at most this many (else the
/// listeners load it to find out).
const ANNOUNCED_HEADS: usize = 16;

pub struct Database {
    /// The URL as given (for messages, without its password).
    url: String,
    /// How to reach it: the URL tokio-postgres reads, and TLS.
    target: Target,
    /// This process's id in announcements, so that it skips its own.
    replica: String,
    client: Mutex<Option<Arc<Client>>>,
}

/// What a listening replica hears.
#[derive(Debug)]
pub enum Announcement {
    /// Another replica stored `key`. `data` is the chunk when it was small enough
    /// to travel along; `heads` are a snapshot's heads, when it has few.
    Chunk {
        key: StorageKey,
        heads: Option<Vec<automerge::ChangeHash>>,
        data: Option<Vec<u8>>,
    },
    /// A setting (a row of `ferrolab_meta`) changed.
    Meta(String),
    /// Another replica handed this one a request for a kernel it holds: the
    /// request's row, to take with [`Database::take_kernel_request`].
    Kernel(i64),
    /// The listening connection was re-established: announcements may have been
    /// missed since it broke.
    Reconnected,
}

impl Database {
    /// Connects (failing with what went wrong when the database cannot be
    /// reached) and creates the tables, if they are missing.
    pub async fn connect(url: &str) -> anyhow::Result<Database> {
        let database = Database {
            url: url.to_string(),
            target: Target::parse(url)?,
            replica: uuid::Uuid::new_v4().simple().to_string(),
            client: Mutex::new(None),
        };
        let tls_hint = if database.target.tls.is_some() {
            " With TLS: does sslrootcert=FILE name the CA that signed the database's \
             certificate, and does the certificate name the host in the URL? If the database \
             asks for a client certificate, name it with sslcert=FILE and sslkey=FILE."
        } else {
            ""
        };
        let client = database.client().await.with_context(|| {
            format!(
                "cannot connect to the database {} (is PostgreSQL running, and does the URL \
                 name its host, port, user and database?{tls_hint})",
                redacted(url)
            )
        })?;
        client
            .batch_execute(SCHEMA)
            .await
            .context("cannot create the tables ferrolab_chunks and ferrolab_meta")?;
        Ok(database)
    }

    /// How the tracking store opens connections of its own to this database (it
    /// drives them itself).
    pub fn connector(&self) -> ferrolab_tracking::Connect {
        let target = self.target.clone();
        Arc::new(move || {
            let target = target.clone();
            Box::pin(async move { Ok(target.open_undriven().await?) })
        })
    }

    async fn client(&self) -> Result<Arc<Client>, tokio_postgres::Error> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let (client, _notifications) = self.target.open().await?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    pub async fn load(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT data FROM ferrolab_chunks WHERE key = $1",
                &[&key.to_string()],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Every chunk whose key starts with `prefix`'s components.
    pub async fn load_range(
        &self,
        prefix: &StorageKey,
    ) -> Result<Vec<(StorageKey, Vec<u8>)>, tokio_postgres::Error> {
        let exact = prefix.to_string();
        let below = format!("{exact}/");
        let rows = self
            .client()
            .await?
            .query(
                "SELECT key, data FROM ferrolab_chunks WHERE key = $1 OR starts_with(key, $2)",
                &[&exact, &below],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let key: String = row.get(0);
                let key = StorageKey::from_parts(key.split('/')).ok()?;
                Some((key, row.get(1)))
            })
            .collect())
    }

    /// Stores `data` under `key` and announces it to the other replicas; returns
    /// once the row is committed (the announcement leaves with the commit).
    /// `heads` are a snapshot's heads.
    pub async fn put(
        &self,
        key: &StorageKey,
        data: &[u8],
        heads: &[automerge::ChangeHash],
    ) -> Result<(), tokio_postgres::Error> {
        let name = key.to_string();
        let mut payload = format!("{} {name}", self.replica);
        payload.push(' ');
        if !heads.is_empty() && heads.len() <= ANNOUNCED_HEADS {
            let heads: Vec<String> = heads.iter().map(ToString::to_string).collect();
            payload.push_str(&heads.join(","));
        } else {
            payload.push('-');
        }
        if data.len() <= INLINE_CHUNK_BYTES {
            payload.push(' ');
            payload.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
        }
        self.client()
            .await?
            .query(
                "WITH stored AS (
                     INSERT INTO ferrolab_chunks (key, data) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data
                     RETURNING key)
                 SELECT pg_notify('ferrolab_chunks', $3) FROM stored",
                &[&name, &data, &payload],
            )
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, key: &StorageKey) -> Result<(), tokio_postgres::Error> {
        self.client()
            .await?
            .execute(
                "DELETE FROM ferrolab_chunks WHERE key = $1",
                &[&key.to_string()],
            )
            .await
            .map(|_| ())
    }

    /// The setting `name`, if it is set.
    pub async fn setting(&self, name: &str) -> anyhow::Result<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM ferrolab_meta WHERE name = $1", &[&name])
            .await
            .with_context(|| format!("cannot read the setting {name} from the database"))?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Sets `name` to `value` unless it is set already; returns the value it has
    /// afterwards (another replica's, if it came first).
    pub async fn setting_or_insert(&self, name: &str, value: &str) -> anyhow::Result<String> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO ferrolab_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            )
            .await
            .with_context(|| format!("cannot store the setting {name} in the database"))?;
        self.setting(name)
            .await?
            .with_context(|| format!("the setting {name} vanished from the database"))
    }

    /// Changes the setting `name` with `change` (given its current value) inside
    /// one transaction that holds the row locked, and announces it. What `change`
    /// returns besides the new value is passed back.
    pub async fn update_setting<R>(
        &self,
        name: &str,
        change: impl FnOnce(Option<String>) -> anyhow::Result<(String, R)>,
    ) -> anyhow::Result<R> {
        let (mut client, _notifications) =
            self.target.open().await.with_context(|| {
                format!("cannot connect to the database {}", redacted(&self.url))
            })?;
        let result = async {
            let transaction = client.transaction().await?;
            transaction
                .execute(
                    "INSERT INTO ferrolab_meta (name, value) VALUES ($1, '') ON CONFLICT (name) DO NOTHING",
                    &[&name],
                )
                .await?;
            let current: String = transaction
                .query_one(
                    "SELECT value FROM ferrolab_meta WHERE name = $1 FOR UPDATE",
                    &[&name],
                )
                .await?
                .get(0);
            let (value, answer) = change((!current.is_empty()).then_some(current))?;
            transaction
                .execute(
                    "UPDATE ferrolab_meta SET value = $2 WHERE name = $1",
                    &[&name, &value],
                )
                .await?;
            transaction
                .execute("SELECT pg_notify('ferrolab_meta', $1)", &[&name])
                .await?;
            transaction.commit().await?;
            anyhow::Ok(answer)
        }
        .await
        .with_context(|| format!("cannot change the setting {name} in the database"));
        drop(client);
        result
    }

    /// A connection of its own (driven by a task), for work that needs one
    /// transaction from start to end: `ferrolab collab migrate`.
    pub async fn own_connection(&self) -> anyhow::Result<Client> {
        let (client, _notifications) =
            self.target.open().await.with_context(|| {
                format!("cannot connect to the database {}", redacted(&self.url))
            })?;
        Ok(client)
    }

    /// This replica's id (in announcements and kernel leases).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Takes (or renews) the lease on `notebook`'s kernel for `ttl` unless another
    /// replica holds an unexpired one; returns that replica's id, or `None` when
    /// the lease is this replica's now.
    pub async fn claim_kernel(
        &self,
        notebook: &str,
        ttl: Duration,
    ) -> anyhow::Result<Option<String>> {
        let seconds = ttl.as_secs_f64();
        let client = self.client().await?;
        let claimed = client
            .query_opt(
                "INSERT INTO ferrolab_kernels (notebook, replica, expires)
                 VALUES ($1, $2, now() + make_interval(secs => $3))
                 ON CONFLICT (notebook) DO UPDATE
                     SET replica = EXCLUDED.replica, expires = EXCLUDED.expires
                     WHERE ferrolab_kernels.expires < now()
                        OR ferrolab_kernels.replica = EXCLUDED.replica
                 RETURNING replica",
                &[&notebook, &self.replica, &seconds],
            )
            .await
            .context("cannot take the kernel's lease in the database")?;
        if claimed.is_some() {
            return Ok(None);
        }
        let holder = client
            .query_opt(
                "SELECT replica FROM ferrolab_kernels WHERE notebook = $1",
                &[&notebook],
            )
            .await
            .context("cannot read the kernel's lease from the database")?;
        Ok(holder.map(|row| row.get(0)))
    }

    /// Extends this replica's leases on the kernels of `notebooks` by `ttl`.
    pub async fn renew_kernels(&self, notebooks: &[String], ttl: Duration) -> anyhow::Result<()> {
        self.client()
            .await?
            .execute(
                "UPDATE ferrolab_kernels SET expires = now() + make_interval(secs => $3)
                 WHERE replica = $1 AND notebook = ANY($2)",
                &[&self.replica, &notebooks, &ttl.as_secs_f64()],
            )
            .await
            .context("cannot renew the kernels' leases")?;
        Ok(())
    }

    /// Gives up this replica's lease on `notebook`'s kernel (it stopped).
    pub async fn release_kernel(&self, notebook: &str) -> anyhow::Result<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM ferrolab_kernels WHERE notebook = $1 AND replica = $2",
                &[&notebook, &self.replica],
            )
            .await
            .context("cannot release the kernel's lease")?;
        Ok(())
    }

    /// Hands `request` (JSON: `to` names the replica holding the kernel,
    /// `notebook` the notebook) to that replica: stored as a row of
    /// `ferrolab_kernel_requests` and announced in one statement, so that it
    /// outlives the holder. The holder takes the row when it hears the
    /// announcement; a row nobody took is picked up later
    /// ([`Database::take_kernel_requests_of_held`]), by whoever holds the
    /// kernel's lease then.
    pub async fn forward_kernel(&self, request: &serde_json::Value) -> anyhow::Result<()> {
        let to = request["to"].as_str().unwrap_or_default();
        let notebook = request["notebook"].as_str().unwrap_or_default();
        self.client()
            .await?
            .query(
                "WITH stored AS (
                     INSERT INTO ferrolab_kernel_requests (notebook, request) VALUES ($1, $2)
                     RETURNING id)
                 SELECT pg_notify('ferrolab_kernels',
                                  json_build_object('to', $3::text, 'id', id)::text)
                 FROM stored",
                &[&notebook, &request.to_string(), &to],
            )
            .await
            .context("cannot hand the request to the replica running the kernel")?;
        Ok(())
    }

    /// Takes the handed-over request `id`: `None` when it is gone (another
    /// replica took it).
    pub async fn take_kernel_request(&self, id: i64) -> anyhow::Result<Option<serde_json::Value>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "DELETE FROM ferrolab_kernel_requests WHERE id = $1 RETURNING request",
                &[&id],
            )
            .await
            .context("cannot take a kernel request from the database")?;
        Ok(row.and_then(|row| parse_request(&row.get::<_, String>(0))))
    }

    /// Notebooks with requests waiting whose kernel's lease expired or was given
    /// up (the replica they were handed to died, or its kernel stopped). Requests
    /// older than [`STALE_KERNEL_REQUEST`] are dropped first, each logged.
    pub async fn stray_kernel_notebooks(&self) -> anyhow::Result<Vec<String>> {
        let client = self.client().await?;
        let stale = client
            .query(
                "DELETE FROM ferrolab_kernel_requests
                 WHERE created < now() - make_interval(secs => $1) RETURNING notebook, request",
                &[&STALE_KERNEL_REQUEST.as_secs_f64()],
            )
            .await
            .context("cannot drop stale kernel requests")?;
        for row in stale {
            log::warn!(
                "dropping a kernel request for notebook {} that no replica could run for {} minutes: {}",
                row.get::<_, String>(0),
                STALE_KERNEL_REQUEST.as_secs() / 60,
                row.get::<_, String>(1)
            );
        }
        let rows = client
            .query(
                "SELECT DISTINCT r.notebook FROM ferrolab_kernel_requests r
                 LEFT JOIN ferrolab_kernels k ON k.notebook = r.notebook
                 WHERE k.notebook IS NULL OR k.expires < now()",
                &[],
            )
            .await
            .context("cannot read the waiting kernel requests")?;
        Ok(rows.into_iter().map(|row| row.get(0)).collect())
    }

    /// Takes the requests waiting for kernels this replica holds that are older
    /// than `grace` (their announcement was missed, or they were handed to a
    /// replica whose lease this one has taken since), oldest first.
    pub async fn take_kernel_requests_of_held(
        &self,
        grace: Duration,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let rows = self
            .client()
            .await?
            .query(
                "DELETE FROM ferrolab_kernel_requests r USING ferrolab_kernels k
                 WHERE k.notebook = r.notebook AND k.replica = $1 AND k.expires >= now()
                   AND r.created < now() - make_interval(secs => $2)
                 RETURNING r.id, r.request",
                &[&self.replica, &grace.as_secs_f64()],
            )
            .await
            .context("cannot take the waiting kernel requests")?;
        let mut taken: Vec<(i64, String)> = rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        taken.sort();
        Ok(taken
            .into_iter()
            .filter_map(|(_, request)| parse_request(&request))
            .collect())
    }

    /// Starts listening for the other replicas' announcements; returns once the
    /// listening connection is up, so that nothing committed after this returns
    /// goes unheard. The listener reconnects by itself (with back-off) when its
    /// connection breaks, and says so with [`Announcement::Reconnected`].
    pub async fn listen(&self) -> anyhow::Result<mpsc::UnboundedReceiver<Announcement>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let first = subscribe(&self.target)
            .await
            .with_context(|| format!("cannot listen on the database {}", redacted(&self.url)))?;
        let (target, replica) = (self.target.clone(), self.replica.clone());
        tokio::spawn(async move {
            let mut subscription = first;
            loop {
                while let Some(notification) = subscription.notifications.recv().await {
                    let announcement = match notification.channel() {
                        CHUNKS_CHANNEL => match parse_chunk(&replica, notification.payload()) {
                            Some(announcement) => announcement,
                            None => continue,
                        },
                        META_CHANNEL => Announcement::Meta(notification.payload().to_string()),
                        KERNELS_CHANNEL => {
                            match serde_json::from_str::<serde_json::Value>(notification.payload())
                            {
                                Ok(request) if request["to"] == replica.as_str() => {
                                    match request["id"].as_i64() {
                                        Some(id) => Announcement::Kernel(id),
                                        None => {
                                            log::warn!("ignoring a kernel request without its row");
                                            continue;
                                        }
                                    }
                                }
                                Ok(_) => continue,
                                Err(error) => {
                                    log::warn!("ignoring a malformed kernel request: {error}");
                                    continue;
                                }
                            }
                        }
                        _ => continue,
                    };
                    if sender.send(announcement).is_err() {
                        return;
                    }
                }
                drop(subscription);
                let mut delay = Duration::from_millis(50);
                subscription = loop {
                    log::warn!(
                        "not hearing the other replicas: the listening connection to the \
                         database broke; reconnecting in {} ms",
                        delay.as_millis()
                    );
                    tokio::time::sleep(delay).await;
                    match subscribe(&target).await {
                        Ok(subscription) => break subscription,
                        Err(error) => log::warn!("cannot listen on the database: {error}"),
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                };
                log::info!("listening to the other replicas again");
                if sender.send(Announcement::Reconnected).is_err() {
                    return;
                }
            }
        });
        Ok(receiver)
    }
}

/// A listening connection: its client (dropping it closes the connection) and the
/// notifications it receives, until it breaks.
struct Subscription {
    _client: Client,
    notifications: mpsc::UnboundedReceiver<tokio_postgres::Notification>,
}

async fn subscribe(target: &Target) -> Result<Subscription, tokio_postgres::Error> {
    let (client, notifications) = target.open().await?;
    client
        .batch_execute(&format!(
            "LISTEN {CHUNKS_CHANNEL}; LISTEN {META_CHANNEL}; LISTEN {KERNELS_CHANNEL}"
        ))
        .await?;
    Ok(Subscription {
        _client: client,
        notifications,
    })
}

/// How to reach the database: the connection string tokio-postgres reads, and
/// the TLS it asks for. tokio-postgres knows `sslmode` disable, prefer and
/// require; ferrolab reads `sslrootcert` (a PEM file of the certificates to trust,
/// else the system's) and treats `verify-ca` and `verify-full` as `require`: with
/// TLS the server's certificate and name are always verified. Without
/// `sslmode=require` (or a verify mode) connections are plain.
#[derive(Clone)]
struct Target {
    url: String,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Target> {
        let (prefix, separator, options): (&str, &str, Vec<&str>) = match url.split_once("://") {
            Some(_) => match url.split_once('?') {
                Some((base, query)) => (base, "&", query.split('&').collect()),
                None => (url, "&", Vec::new()),
            },
            None => ("", " ", url.split_whitespace().collect()),
        };
        let mut kept = Vec::new();
        let (mut tls, mut roots, mut cert, mut key) = (false, None, None, None);
        for option in options {
            match option.split_once('=') {
                Some(("sslrootcert", path)) => roots = Some(path.to_string()),
                Some(("sslcert", path)) => cert = Some(path.to_string()),
                Some(("sslkey", path)) => key = Some(path.to_string()),
                Some(("sslmode", "verify-ca" | "verify-full" | "require")) => {
                    tls = true;
                    kept.push("sslmode=require".to_string());
                }
                _ if !option.is_empty() => kept.push(option.to_string()),
                _ => {}
            }
        }
        let url = match (prefix, kept.is_empty()) {
            ("", _) => kept.join(" "),
            (base, true) => base.to_string(),
            (base, false) => format!("{base}?{}", kept.join(separator)),
        };
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!(
                "the database URL names only one of sslcert and sslkey: a client certificate \
                 needs both (the certificate's PEM file and its private key's)"
            ),
        };
        let tls = match (tls, roots, client) {
            (true, roots, client) => Some(tls_connector(roots.as_deref(), client)?),
            (false, Some(_), _) => anyhow::bail!(
                "the database URL names sslrootcert but not sslmode=require (or verify-full): \
                 add it, or the connection would not use TLS"
            ),
            (false, None, Some(_)) => anyhow::bail!(
                "the database URL names a client certificate (sslcert) but not \
                 sslmode=require (or verify-full): add it, or the connection would not use TLS"
            ),
            (false, None, None) => None,
        };
        Ok(Target { url, tls })
    }

    /// A new connection, driven by a task of its own; its notifications arrive on
    /// the receiver (dropping it does not stop the connection).
    async fn open(
        &self,
    ) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), tokio_postgres::Error> {
        let (sender, notifications) = mpsc::unbounded_channel();
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = tokio_postgres::connect(&self.url, tls.clone()).await?;
                drive(connection, sender);
                client
            }
            None => {
                let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
                drive(connection, sender);
                client
            }
        };
        Ok((client, notifications))
    }
}

impl Target {
    /// A new connection whose driving is left to the caller.
    async fn open_undriven(
        &self,
    ) -> Result<(Client, ferrolab_tracking::Connection), tokio_postgres::Error> {
        Ok(match &self.tls {
            Some(tls) => {
                let (client, connection) = tokio_postgres::connect(&self.url, tls.clone()).await?;
                (client, Box::pin(connection))
            }
            None => {
                let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
                (client, Box::pin(connection))
            }
        })
    }
}

/// The certificates in the PEM file `path`, named by the URL option that gave it;
/// an error when it cannot be read or holds none.
fn pem_certificates(
    option: &str,
    path: &str,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect())
        .map_err(|error| {
            anyhow::anyhow!("cannot read the certificates in {option}={path}: {error}")
        })?;
    if certificates.is_empty() {
        anyhow::bail!("{option}={path} holds no PEM certificate");
    }
    Ok(certificates)
}

/// TLS that verifies the database against `roots` (a PEM file; the system's
/// trusted certificates without it) and, with `client` (certificate and key PEM
/// files: `sslcert`, `sslkey`), presents that certificate to the database.
fn tls_connector(
    roots: Option<&str>,
    client: Option<(String, String)>,
) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
    // The client's own files first: a mistake there is the likelier one.
    let client = match client {
        None => None,
        Some((cert, key)) => {
            let chain = pem_certificates("sslcert", &cert)?;
            let private = PrivateKeyDer::from_pem_file(&key).map_err(|error| {
                anyhow::anyhow!("cannot read the private key in sslkey={key}: {error}")
            })?;
            Some((chain, private, cert, key))
        }
    };
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Some(path) => {
            for certificate in pem_certificates("sslrootcert", path)? {
                store
                    .add(certificate)
                    .with_context(|| format!("a certificate in {path} is not usable"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                anyhow::bail!(
                    "no trusted certificates on this system to verify the database with; \
                     name the database's CA with sslrootcert=FILE in the URL"
                );
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("cannot set up TLS")?
    .with_root_certificates(store);
    let config = match client {
        None => config.with_no_client_auth(),
        Some((chain, private, cert, key)) => config
            .with_client_auth_cert(chain, private)
            .with_context(|| {
                format!(
                    "cannot use the client certificate in sslcert={cert} with the key in \
                     sslkey={key} (an X.509 v3 certificate and its own private key are needed)"
                )
            })?,
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Drives a connection until it ends, passing its notifications on.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notifications: mpsc::UnboundedSender<Notification>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    let _ = notifications.send(notification);
                }
                Ok(_) => {}
                Err(error) => {
                    log::warn!("the database connection ended: {error}");
                    return;
                }
            }
        }
    });
}

/// A stored kernel request's JSON (a damaged one is logged and dropped).
fn parse_request(text: &str) -> Option<serde_json::Value> {
    match serde_json::from_str(text) {
        Ok(request) => Some(request),
        Err(error) => {
            log::warn!("dropping a damaged kernel request: {error}");
            None
        }
    }
}

/// Reads a chunk announcement: `REPLICA KEY HEADS [DATA]`, where HEADS is `-` or
/// comma-separated hashes and DATA the chunk in base64. `None` for our own and
/// for anything malformed (logged: the chunk is still in the table).
fn parse_chunk(ours: &str, payload: &str) -> Option<Announcement> {
    let mut parts = payload.split(' ');
    let replica = parts.next()?;
    if replica == ours {
        return None;
    }
    let parsed = (|| {
        let key = StorageKey::from_parts(parts.next()?.split('/')).ok()?;
        let heads = match parts.next()? {
            "-" => None,
            list => Some(
                list.split(',')
                    .map(|hash| hash.parse().ok())
                    .collect::<Option<Vec<_>>>()?,
            ),
        };
        let data = match parts.next() {
            Some(text) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()?,
            ),
            None => None,
        };
        Some(Announcement::Chunk { key, heads, data })
    })();
    if parsed.is_none() {
        log::warn!("ignoring a malformed chunk announcement from replica {replica}");
    }
    parsed
}

/// The URL (or `key=value` connection string) without its password, for
/// messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url
            .split_whitespace()
            .map(|part| match part.split_once('=') {
                Some(("password", _)) => "password=***".to_string(),
                _ => part.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_read_and_the_rest_passed_on() {
        let plain = Target::parse("postgres://ada@db/ferrolab?connect_timeout=5").expect("plain");
        assert_eq!(plain.url, "postgres://ada@db/ferrolab?connect_timeout=5");
        assert!(plain.tls.is_none());
        let dir = tempfile::tempdir().expect("tmp");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let error = Target::parse(&format!(
            "postgres://ada@db/x?sslmode=verify-full&sslrootcert={}",
            empty.display()
        ))
        .err()
        .expect("an empty sslrootcert is refused");
        assert!(
            error.to_string().contains("holds no PEM certificate"),
            "{error}"
        );
        assert!(
            Target::parse("host=db sslrootcert=/nope").is_err(),
            "sslrootcert without sslmode"
        );
        let missing = Target::parse("host=db sslmode=require sslrootcert=/nope/ca.pem")
            .err()
            .expect("missing file");
        assert!(missing.to_string().contains("/nope/ca.pem"), "{missing}");
        let half = Target::parse("host=db sslmode=require sslcert=/a.pem")
            .err()
            .expect("a certificate without its key");
        assert!(half.to_string().contains("sslkey"), "{half}");
        let plain_cert = Target::parse("host=db sslcert=/a.pem sslkey=/a.key")
            .err()
            .expect("a client certificate without TLS");
        assert!(
            plain_cert.to_string().contains("sslmode=require"),
            "{plain_cert}"
        );
        let no_key = Target::parse(&format!(
            "host=db sslmode=require sslcert={} sslkey=/nope/client.key",
            empty.display()
        ))
        .err()
        .expect("unreadable client files");
        assert!(no_key.to_string().contains("sslcert="), "{no_key}");
    }

    #[test]
    fn announcements_read_back_and_skip_our_own() {
        let hash: automerge::ChangeHash =
            "0101010101010101010101010101010101010101010101010101010101010101"
                .parse()
                .expect("hash");
        let payload = format!("other doc/snapshot/abc {hash} AQID");
        match parse_chunk("ours", &payload) {
            Some(Announcement::Chunk { key, heads, data }) => {
                assert_eq!(key.to_string(), "doc/snapshot/abc");
                assert_eq!(heads, Some(vec![hash]));
                assert_eq!(data, Some(vec![1, 2, 3]));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_chunk("ours", "ours doc/incremental/x - AQID").is_none());
        assert!(matches!(
            parse_chunk("ours", "other doc/incremental/x -"),
            Some(Announcement::Chunk {
                data: None,
                heads: None,
                ..
            })
        ));
        assert!(parse_chunk("ours", "other doc/x notahash").is_none());
        assert!(parse_chunk("ours", "other doc/x - ***").is_none());
    }

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redacted("postgres://ada:s3cret@db.example:5432/ferrolab"),
            "postgres://ada:***@db.example:5432/ferrolab"
        );
        assert_eq!(
            redacted("postgres://ada@db/ferrolab"),
            "postgres://ada@db/ferrolab"
        );
        assert_eq!(redacted("host=db user=ada"), "host=db user=ada");
        assert_eq!(
            redacted("host=db user=ada password=s3cret"),
            "host=db user=ada password=***"
        );
    }
}
