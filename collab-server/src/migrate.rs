//! `ferrolab collab migrate`: moves what an embedded server keeps in its data
//! folder into a cluster's PostgreSQL database (and its artifacts into a bucket),
//! so a team that grows keeps its notebooks, tokens, runs, registry and audit log.
//!
//! The data folder is only read. Artifact blobs go to the bucket first (they are
//! content-addressed, so sending one twice is harmless); then one transaction
//! writes the document chunks, the tokens, the workspace index and every row of
//! the tracking store: the database gets all of it or, on any error, none. A
//! database that already holds a workspace or tracking data is refused, so a
//! second run cannot mix two workspaces. Browser sessions are not moved (their
//! key is kept differently in the cluster): people sign in again with their
//! tokens, which stay the same.

use crate::auth::TOKENS_SETTING;
use crate::postgres::Database;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// Chunks sent in one statement (or fewer, when they are large).
const CHUNK_BATCH: usize = 200;
/// Bytes of chunks sent in one statement, at most (unless one chunk is larger).
const CHUNK_BATCH_BYTES: usize = 16 << 20;

/// What a move carried, for the summary it prints.
pub struct Moved {
    pub documents: usize,
    pub chunks: usize,
    pub chunk_bytes: u64,
    pub tokens: usize,
    pub tracking: ferrolab_tracking::sql::import::Copied,
    /// Artifact blobs sent to the bucket; None when there is no bucket (the blobs
    /// stay in the data folder).
    pub blobs_sent: Option<usize>,
    pub blobs_named: usize,
}

/// Moves the data folder `data` into the database at `url` (artifacts into the
/// bucket at `artifacts`, when given).
pub async fn migrate(data: &Path, url: &str, artifacts: Option<&str>) -> anyhow::Result<Moved> {
    let source = Source::read(data)?;
    let database = Database::connect(url).await?;
    // The tracking tables (and a replica's Default experiment), as a replica
    // makes them on start; their rows come in the transaction below.
    {
        let (connect, scratch) = (database.connector(), data.to_path_buf());
        tokio::task::spawn_blocking(move || {
            ferrolab_tracking::SqlStore::open_postgres(connect, &scratch).map(drop)
        })
        .await?
        .context("cannot create the tracking tables in the database")?;
    }
    let mut client = database.own_connection().await?;
    refuse_if_in_use(&client, url).await?;

    let hashes = if source.tracking.is_file() {
        ferrolab_tracking::sql::import::artifact_hashes(&source.tracking)?
    } else {
        Vec::new()
    };
    let missing = missing_blobs(data, &hashes);
    if let Some(first) = missing.first() {
        bail!(
            "{} of the artifacts the tracking store names are missing from {} (the first: {}); \
             the data folder is incomplete — restore it before moving",
            missing.len(),
            data.join("artifacts").display(),
            first.display()
        );
    }
    let blobs_sent = match artifacts {
        Some(bucket) => Some(send_blobs(data, bucket, hashes.clone()).await?),
        None => None,
    };

    let transaction = client
        .transaction()
        .await
        .context("cannot start a transaction")?;
    let (chunks, chunk_bytes) = copy_chunks(&transaction, &source.chunks).await?;
    for (name, value) in [
        (TOKENS_SETTING, source.tokens_json.as_deref()),
        (crate::workspace::INDEX_SETTING, Some(source.index.as_str())),
    ] {
        if let Some(value) = value {
            transaction
                .execute(
                    "INSERT INTO ferrolab_meta (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    &[&name, &value],
                )
                .await
                .with_context(|| format!("cannot store the setting {name}"))?;
        }
    }
    let tracking = if source.tracking.is_file() {
        ferrolab_tracking::sql::import::copy_sqlite(&source.tracking, &transaction)
            .await
            .with_context(|| {
                format!(
                    "cannot move the tracking store {}",
                    source.tracking.display()
                )
            })?
    } else {
        ferrolab_tracking::sql::import::Copied { rows: Vec::new() }
    };
    // Checked again under the tracking store's lock, which the copy holds: a
    // replica that started meanwhile made its own workspace.
    refuse_if_in_use_except(&transaction, url, chunks).await?;
    transaction
        .commit()
        .await
        .context("cannot commit the move (nothing was stored)")?;
    Ok(Moved {
        documents: source.documents(),
        chunks,
        chunk_bytes,
        tokens: source.tokens,
        tracking,
        blobs_sent,
        blobs_named: hashes.len(),
    })
}

/// What the data folder holds, checked before anything is written.
struct Source {
    chunks: Vec<(samod::storage::StorageKey, PathBuf)>,
    tokens_json: Option<String>,
    tokens: usize,
    index: String,
    tracking: PathBuf,
}

impl Source {
    fn read(data: &Path) -> anyhow::Result<Source> {
        if !data.is_dir() {
            bail!(
                "there is no data folder at {} (name the embedded server's --data folder)",
                data.display()
            );
        }
        let docs = data.join("docs");
        let pointer = data.join("workspace.json");
        if !docs.is_dir() || !pointer.is_file() {
            bail!(
                "{} is not an embedded server's data folder (it has no docs/ or workspace.json); \
                 name the folder `ferrolab collab serve --data` used",
                data.display()
            );
        }
        let chunks = crate::storage::chunk_files(&docs)
            .with_context(|| format!("cannot read the documents in {}", docs.display()))?;
        let text = std::fs::read_to_string(&pointer)
            .with_context(|| format!("cannot read {}", pointer.display()))?;
        let index = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|value| value.get("index")?.as_str().map(str::to_string))
            .with_context(|| {
                format!(
                    "{} is damaged (it names no index document)",
                    pointer.display()
                )
            })?;
        if !chunks
            .iter()
            .any(|(key, _)| key.into_iter().next().is_some_and(|doc| *doc == index))
        {
            bail!(
                "the workspace index {index} that {} names is not in {}; the data folder is incomplete",
                pointer.display(),
                docs.display()
            );
        }
        let tokens_path = data.join("tokens.json");
        let (tokens_json, tokens) = match std::fs::read_to_string(&tokens_path) {
            Ok(text) => {
                let count = crate::auth::count_tokens(&text).with_context(|| {
                    format!(
                        "{} is damaged; restore it before moving",
                        tokens_path.display()
                    )
                })?;
                (Some(text), count)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", tokens_path.display()))
            }
        };
        Ok(Source {
            chunks,
            tokens_json,
            tokens,
            index,
            tracking: data.join("tracking.sqlite"),
        })
    }

    fn documents(&self) -> usize {
        let mut ids: Vec<&String> = self
            .chunks
            .iter()
            .filter(|(key, _)| key.into_iter().count() > 1)
            .filter_map(|(key, _)| key.into_iter().next())
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    }
}

/// Refuses a database that holds a workspace, tokens or tracking data already.
async fn refuse_if_in_use(client: &tokio_postgres::Client, url: &str) -> anyhow::Result<()> {
    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM ferrolab_chunks),
                    (SELECT count(*) FROM ferrolab_meta WHERE name IN ($1, $2))",
            &[&TOKENS_SETTING, &crate::workspace::INDEX_SETTING],
        )
        .await
        .context("cannot read what the database holds")?;
    let (chunks, settings): (i64, i64) = (counts.get(0), counts.get(1));
    if chunks > 0 || settings > 0 {
        bail!(
            "the database {} already holds a ferrolab workspace ({chunks} document chunks); \
             move into a new, empty database (or one no replica has started on)",
            crate::postgres::redacted(url)
        );
    }
    if let Some(found) = ferrolab_tracking::sql::import::existing_data(client).await? {
        bail!(
            "the database {} already holds tracking data ({found}); move into a new, empty database",
            crate::postgres::redacted(url)
        );
    }
    Ok(())
}

/// [`refuse_if_in_use`] again inside the move's transaction, which has stored
/// `ours` chunks itself.
async fn refuse_if_in_use_except(
    transaction: &tokio_postgres::Transaction<'_>,
    url: &str,
    ours: usize,
) -> anyhow::Result<()> {
    let chunks: i64 = transaction
        .query_one("SELECT count(*) FROM ferrolab_chunks", &[])
        .await?
        .get(0);
    if chunks != ours as i64 {
        bail!(
            "a server started on the database {} during the move and made its own workspace; \
             nothing was moved: stop it, empty the database and move again",
            crate::postgres::redacted(url)
        );
    }
    Ok(())
}

/// Stores every chunk file as a row of `ferrolab_chunks`, a batch per statement.
async fn copy_chunks(
    transaction: &tokio_postgres::Transaction<'_>,
    chunks: &[(samod::storage::StorageKey, PathBuf)],
) -> anyhow::Result<(usize, u64)> {
    let mut bytes_total = 0u64;
    let mut at = 0;
    while at < chunks.len() {
        let mut keys: Vec<String> = Vec::new();
        let mut datas: Vec<Vec<u8>> = Vec::new();
        let mut batch_bytes = 0usize;
        while at < chunks.len() && keys.len() < CHUNK_BATCH && batch_bytes < CHUNK_BATCH_BYTES {
            let (key, path) = &chunks[at];
            let data =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            batch_bytes += data.len();
            keys.push(key.to_string());
            datas.push(data);
            at += 1;
        }
        bytes_total += batch_bytes as u64;
        transaction
            .execute(
                "INSERT INTO ferrolab_chunks (key, data) SELECT * FROM UNNEST($1::text[], $2::bytea[])",
                &[&keys, &datas],
            )
            .await
            .context("cannot store the document chunks")?;
    }
    Ok((chunks.len(), bytes_total))
}

/// The blob files of `hashes` that are not in the data folder.
fn missing_blobs(data: &Path, hashes: &[String]) -> Vec<PathBuf> {
    hashes
        .iter()
        .map(|hash| blob_path(data, hash))
        .filter(|path| !path.is_file())
        .collect()
}

fn blob_path(data: &Path, hash: &str) -> PathBuf {
    data.join("artifacts")
        .join("sha256")
        .join(hash.get(..2).unwrap_or(hash))
        .join(hash)
}

/// Sends every blob (all in the data folder: checked before) to the bucket at
/// `url`, each checked against its name first.
async fn send_blobs(data: &Path, url: &str, hashes: Vec<String>) -> anyhow::Result<usize> {
    let data = data.to_path_buf();
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let remote = ferrolab_tracking::remote::RemoteBlobs::open(&url)?;
        for hash in &hashes {
            let path = blob_path(&data, hash);
            let actual =
                sha256_file(&path).with_context(|| format!("cannot read {}", path.display()))?;
            if actual != *hash {
                bail!(
                    "the artifact {} does not hold what its name says (its SHA-256 is {actual}); \
                     the data folder is damaged — restore it before moving",
                    path.display()
                );
            }
            remote.put_file(hash, &path)?;
        }
        Ok(hashes.len())
    })
    .await?
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        digest.update(&buffer[..read]);
    }
    Ok(ferrolab_tracking::hex(digest.finish().as_ref()))
}
