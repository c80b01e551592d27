//! Replicas on one database: what another replica stored reaches this one's
//! clients. Every chunk a replica commits is announced with PostgreSQL's `NOTIFY`
//! ([`crate::postgres`]); here each announcement is merged into the document, if
//! this replica holds it. samod then syncs the new changes to this replica's peers
//! as if a peer had sent them, and its own save of them is skipped
//! ([`DurableStorage::note_announced`]): they are in the database already.
//!
//! Documents this replica does not hold are left alone; when it opens one later it
//! reads every chunk from the database.
//!
//! Changed settings (tokens) are re-read, and kernel requests other replicas hand
//! to this one (it holds the notebook's kernel lease, `crate::kernels::Leases`)
//! are taken from the database and queued here as if they had been asked of it;
//! [`sweep_kernel_requests`] runs those nobody took (their replica died).

use crate::app::App;
use crate::postgres::Announcement;
use crate::storage::{ChunkKind, DurableStorage};
use automerge::{ChangeHash, ReadDoc};
use samod::storage::StorageKey;
use samod::{DocumentId, Repo};
use std::str::FromStr;
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::mpsc;

/// Follows the other replicas' announcements until they end or the server stops.
pub async fn follow(app: Weak<App>, mut announcements: mpsc::UnboundedReceiver<Announcement>) {
    while let Some(announcement) = announcements.recv().await {
        let Some(app) = app.upgrade() else {
            return;
        };
        let (repo, storage) = (app.repo(), app.storage());
        match announcement {
            Announcement::Chunk { key, heads, data } => {
                merge_chunk(repo, storage, key, heads, data).await;
            }
            Announcement::Meta(name) if name == crate::auth::TOKENS_SETTING => {
                reload_tokens(&app).await;
            }
            Announcement::Meta(_) => {}
            Announcement::Kernel(id) => {
                let taken = match storage.database() {
                    Some(database) => database.take_kernel_request(id).await,
                    None => Ok(None),
                };
                match taken {
                    Ok(Some(request)) => run_kernel_request(&app, &request).await,
                    // Taken by the sweep already.
                    Ok(None) => {}
                    // Still in the table: the sweep takes it.
                    Err(error) => log::warn!("{error:#}"),
                }
            }
            Announcement::Reconnected => {
                // Announcements may have been missed: read every held document's
                // chunks again (merging what is known already changes nothing).
                for doc in storage.open_here() {
                    reload(repo, storage, &doc).await;
                }
                reload_tokens(&app).await;
            }
        }
    }
}

async fn reload_tokens(app: &App) {
    if let Err(error) = app.tokens.reload().await {
        log::error!("cannot re-read the tokens: {error:#}");
    }
}

/// How long a handed-over request waits for its replica to take it before the
/// sweep does.
const KERNEL_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Runs, every `every` (a third of a kernel lease), the kernel requests that were
/// handed over and not taken: a replica that missed an announcement takes its
/// own; the requests handed to a replica that died (its lease expired) are taken
/// by whichever replica claims the lease first, which starts the kernel and runs
/// them (its executions; an interrupt or restart meant for the dead kernel is
/// dropped). Nothing the API accepted with 202 is lost with a replica.
pub async fn sweep_kernel_requests(app: Weak<App>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else {
            return;
        };
        let Some(database) = app.storage().database().cloned() else {
            return;
        };
        let stray = match database.stray_kernel_notebooks().await {
            Ok(stray) => stray,
            Err(error) => {
                log::warn!("{error:#}");
                continue;
            }
        };
        for notebook in &stray {
            match app.kernels.holder(notebook).await {
                Ok(None) => log::warn!(
                    "notebook {notebook}: the replica its kernel ran on is gone; \
                     running the requests it had been handed here"
                ),
                Ok(Some(_)) => {}
                Err(error) => log::warn!("{error:#}"),
            }
        }
        let requests = match database
            .take_kernel_requests_of_held(KERNEL_REQUEST_GRACE)
            .await
        {
            Ok(requests) => requests,
            Err(error) => {
                log::warn!("{error:#}");
                continue;
            }
        };
        for request in requests {
            let notebook = request["notebook"].as_str().unwrap_or_default();
            if stray.iter().any(|n| n == notebook) && request["action"] != "execute" {
                log::warn!(
                    "dropping a {} request for notebook {notebook}: the kernel it was meant for is gone",
                    request["action"]
                );
                continue;
            }
            run_kernel_request(&app, &request).await;
        }
    }
}

/// Queues a kernel request another replica handed over (see `http::kernels`).
async fn run_kernel_request(app: &App, request: &serde_json::Value) {
    let text = |key: &str| request[key].as_str().unwrap_or_default().to_string();
    let wanted = request["cells"].as_array().map(|cells| {
        cells
            .iter()
            .filter_map(|cell| cell.as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    });
    let notebook = text("notebook");
    let action = text("action");
    // This replica runs the kernel now: its lease is taken (renewed) here.
    if let Err(error) = app.kernels.holder(&notebook).await {
        log::warn!("{error:#}");
    }
    let ran = crate::http::kernels::run_here(
        app,
        &notebook,
        &action,
        wanted,
        &text("by"),
        &text("starter"),
    )
    .await;
    if let Err(error) = ran {
        log::warn!("a kernel request for notebook {notebook} handed over by another replica failed: {error}");
    }
}

async fn merge_chunk(
    repo: &Repo,
    storage: &DurableStorage,
    key: StorageKey,
    heads: Option<Vec<ChangeHash>>,
    data: Option<Vec<u8>>,
) {
    let Some(doc) = (&key).into_iter().next().cloned() else {
        return;
    };
    if !storage.is_open_here(&doc) {
        return;
    }
    let Some(handle) = find(repo, &doc).await else {
        return;
    };
    // The changes the chunk holds: an incremental chunk's is its name.
    let holds = heads.or_else(|| match ChunkKind::of(&key) {
        Some(ChunkKind::Incremental(hash)) => Some(vec![hash]),
        _ => None,
    });
    if let Some(holds) = holds {
        let known = handle
            .with_document_async(move |doc| {
                holds
                    .iter()
                    .all(|hash| doc.get_change_by_hash(hash).is_some())
            })
            .await
            .unwrap_or(false);
        if known {
            return;
        }
    }
    let data = match data {
        Some(data) => data,
        None => match storage.database() {
            // Gone means compacted away: the compacted chunk is announced too.
            Some(database) => match database.load(&key).await {
                Ok(Some(data)) => data,
                Ok(None) => return,
                Err(error) => {
                    log::warn!("cannot read the announced chunk {key}: {error}; reloading {doc}");
                    reload(repo, storage, &doc).await;
                    return;
                }
            },
            None => return,
        },
    };
    merge(storage, &handle, key, data).await;
}

/// Merges a chunk that is in the database into the held copy of its document.
async fn merge(
    storage: &DurableStorage,
    handle: &samod::DocHandle,
    key: StorageKey,
    data: Vec<u8>,
) {
    storage.note_announced(&key, &data);
    let merged = handle
        .with_document_async(move |doc| doc.load_incremental(&data).map(|_| ()))
        .await;
    if let Ok(Err(error)) = merged {
        log::warn!("cannot merge the chunk {key} from the database: {error}");
    }
}

/// Merges every chunk of document `doc` in the database into the copy held here.
async fn reload(repo: &Repo, storage: &DurableStorage, doc: &str) {
    let (Some(database), Some(handle)) = (storage.database(), find(repo, doc).await) else {
        return;
    };
    let Ok(prefix) = StorageKey::from_parts([doc]) else {
        return;
    };
    match database.load_range(&prefix).await {
        Ok(chunks) => {
            for (key, data) in chunks {
                merge(storage, &handle, key, data).await;
            }
        }
        Err(error) => log::warn!("cannot reload {doc} from the database: {error}"),
    }
}

async fn find(repo: &Repo, doc: &str) -> Option<samod::DocHandle> {
    let id = DocumentId::from_str(doc).ok()?;
    repo.find(id).await.ok().flatten()
}
