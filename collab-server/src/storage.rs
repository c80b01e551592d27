//! Durable document storage: on local disk (the embedded default), or in
//! PostgreSQL (`--database`, [`crate::postgres`]).
//!
//! The layout is samod's (and automerge-repo's nodefs storage): one file per
//! storage key, the first key component split after two characters. What this
//! implementation adds is durability: every write goes to a temporary file that is
//! fsynced and renamed into place (and the directory fsynced), so a `kill -9` at
//! any moment leaves either the old chunk or the whole new one, never half.
//!
//! It also remembers which changes of each document are on disk, so the sync
//! layer can hold back a message announcing heads until those heads are durable
//! ([`DurableStorage::wait_durable`]): a client that sees its change in the
//! server's heads may rely on it surviving a crash.

use automerge::ChangeHash;
use samod::storage::StorageKey;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a sync message may wait for its heads before we log about it.
const SLOW_DURABILITY_WARNING: Duration = Duration::from_secs(5);
/// How many announced chunks [`DurableStorage::note_announced`] remembers.
const MAX_ANNOUNCED: usize = 100_000;

#[derive(Clone)]
pub struct DurableStorage {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Where the chunks live when not in `root`.
    postgres: Option<Arc<crate::postgres::Database>>,
    /// Documents this process has read or written (and so holds in memory): the
    /// ones other replicas' announced chunks must reach.
    open_here: Mutex<HashSet<String>>,
    /// Incremental chunks another replica stored and announced, which this
    /// process merged: when samod saves the same change (same key, same bytes)
    /// the write is skipped.
    announced: Mutex<HashSet<StorageKey>>,
    /// Per document id: hashes of changes known to be on disk (incremental
    /// chunks and the heads of snapshot chunks).
    durable: Mutex<HashMap<String, HashSet<ChangeHash>>>,
    changed: Notify,
}

impl DurableStorage {
    pub fn open(root: impl AsRef<Path>) -> std::io::Result<Self> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root)?;
        remove_stale_temporaries(&root);
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                postgres: None,
                open_here: Mutex::new(HashSet::new()),
                announced: Mutex::new(HashSet::new()),
                durable: Mutex::new(HashMap::new()),
                changed: Notify::new(),
            }),
        })
    }

    /// Chunks in the PostgreSQL database at `url` (the table is made if missing).
    pub async fn open_postgres(url: &str) -> anyhow::Result<Self> {
        let database = crate::postgres::Database::connect(url).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                root: PathBuf::from(crate::postgres::redacted(url)),
                postgres: Some(Arc::new(database)),
                open_here: Mutex::new(HashSet::new()),
                announced: Mutex::new(HashSet::new()),
                durable: Mutex::new(HashMap::new()),
                changed: Notify::new(),
            }),
        })
    }

    /// The database, in the cluster mode.
    pub fn database(&self) -> Option<&Arc<crate::postgres::Database>> {
        self.inner.postgres.as_ref()
    }

    /// Whether this process has document `doc` in memory (it has read or written
    /// its chunks).
    pub fn is_open_here(&self, doc: &str) -> bool {
        self.inner
            .open_here
            .lock()
            .is_ok_and(|open| open.contains(doc))
    }

    /// The documents this process holds.
    pub fn open_here(&self) -> Vec<String> {
        self.inner
            .open_here
            .lock()
            .map(|open| open.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn note_open(&self, key: &StorageKey) {
        if let (Some(doc), Ok(mut open)) = (key.into_iter().next(), self.inner.open_here.lock()) {
            if !open.contains(doc) {
                open.insert(doc.clone());
            }
        }
    }

    /// Records a chunk another replica committed to the database: its changes are
    /// durable, and samod's own save of the same change need not be written again.
    pub fn note_announced(&self, key: &StorageKey, data: &[u8]) {
        self.note_durable(key, data);
        let incremental = matches!(ChunkKind::of(key), Some(ChunkKind::Incremental(_)));
        if let (true, Ok(mut announced)) = (incremental, self.inner.announced.lock()) {
            // Entries leave when samod saves them; changes that reach disk in a
            // compacted snapshot instead would stay, so the set is bounded.
            if announced.len() >= MAX_ANNOUNCED {
                announced.clear();
            }
            announced.insert(key.clone());
        }
    }

    fn path_of(&self, key: &StorageKey) -> Option<PathBuf> {
        let mut path = self.inner.root.clone();
        for (index, component) in key.into_iter().enumerate() {
            if component.is_empty() || component == "." || component == ".." {
                return None;
            }
            if index == 0 {
                let split = component
                    .char_indices()
                    .nth(2)
                    .map_or(component.len(), |(i, _)| i);
                path.push(&component[..split]);
                path.push(&component[split..]);
            } else {
                path.push(component);
            }
        }
        Some(path)
    }

    /// Records that the chunk stored under `key` is on disk.
    fn note_durable(&self, key: &StorageKey, data: &[u8]) {
        self.note_durable_hashes(key, chunk_hashes(key, data));
    }

    fn note_durable_hashes(&self, key: &StorageKey, hashes: Vec<ChangeHash>) {
        let Some(doc) = key.into_iter().next() else {
            return;
        };
        if hashes.is_empty() {
            return;
        }
        if let Ok(mut durable) = self.inner.durable.lock() {
            durable.entry(doc.clone()).or_default().extend(hashes);
        }
        self.inner.changed.notify_waiters();
    }

    fn is_durable(&self, doc: &str, heads: &[ChangeHash]) -> bool {
        if heads.is_empty() {
            return true;
        }
        let Ok(durable) = self.inner.durable.lock() else {
            return false;
        };
        durable
            .get(doc)
            .is_some_and(|known| heads.iter().all(|head| known.contains(head)))
    }

    /// Waits until every change in `heads` of document `doc` is on disk.
    pub async fn wait_durable(&self, doc: &str, heads: &[ChangeHash]) {
        let mut waited = Duration::ZERO;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_durable(doc, heads) {
                return;
            }
            if tokio::time::timeout(SLOW_DURABILITY_WARNING, notified)
                .await
                .is_err()
            {
                waited += SLOW_DURABILITY_WARNING;
                log::warn!(
                    "document {doc}: changes not on disk after {}s; holding back the acknowledgement",
                    waited.as_secs()
                );
            }
        }
    }

    /// The root folder of the document chunks (the database's URL, without its
    /// password, when they are in PostgreSQL).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }
}

/// What a document chunk's storage key (`DOC/incremental/HASH` or
/// `DOC/snapshot/NAME`) says it is.
pub enum ChunkKind {
    /// One change, named by its hash.
    Incremental(ChangeHash),
    /// A compacted document.
    Snapshot,
}

impl ChunkKind {
    pub fn of(key: &StorageKey) -> Option<ChunkKind> {
        let parts: Vec<&String> = key.into_iter().collect();
        match parts.as_slice() {
            [_, kind, name] if kind.as_str() == "incremental" => {
                ChangeHash::from_str(name).ok().map(ChunkKind::Incremental)
            }
            [_, kind, _] if kind.as_str() == "snapshot" => Some(ChunkKind::Snapshot),
            _ => None,
        }
    }
}

/// The changes a chunk holds, for the durability record: an incremental chunk's
/// one change (its name), a snapshot's heads.
fn chunk_hashes(key: &StorageKey, data: &[u8]) -> Vec<ChangeHash> {
    match ChunkKind::of(key) {
        Some(ChunkKind::Incremental(hash)) => vec![hash],
        Some(ChunkKind::Snapshot) => snapshot_heads(data),
        None => Vec::new(),
    }
}

/// The heads recorded in the header of a saved automerge document, read
/// without loading it: magic, checksum, chunk type 0, length, then the
/// length-prefixed actor ids and the length-prefixed 32-byte head hashes.
/// Falls back to a full load for anything else.
fn snapshot_heads(data: &[u8]) -> Vec<ChangeHash> {
    fn read_header(data: &[u8]) -> Option<Vec<ChangeHash>> {
        const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
        if data.get(..4)? != MAGIC || *data.get(8)? != 0 {
            return None;
        }
        let mut at = 9;
        let _length = uleb(data, &mut at)?;
        let actors = uleb(data, &mut at)?;
        for _ in 0..actors {
            let len = usize::try_from(uleb(data, &mut at)?).ok()?;
            at = at.checked_add(len)?;
        }
        let heads = uleb(data, &mut at)?;
        let mut out = Vec::new();
        for _ in 0..heads {
            let bytes = data.get(at..at + 32)?;
            out.push(ChangeHash::try_from(bytes).ok()?);
            at += 32;
        }
        Some(out)
    }
    fn uleb(data: &[u8], at: &mut usize) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *data.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    read_header(data).unwrap_or_else(|| {
        automerge::Automerge::load(data)
            .map(|doc| doc.get_heads())
            .unwrap_or_default()
    })
}

fn remove_stale_temporaries(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "partial") {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Writes `data` to `path` so that a crash leaves the old file or the new one. The
/// file is the server's own (data folder: tokens, documents, kernel connection
/// files), so it is readable by the server's user only from its first byte on.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_with_mode(path, data, Some(0o600), |_| true).map(|_| ())
}

/// [`write_atomically`], except that `still_wanted` is asked once the new content
/// is safely in a temporary file (its path is passed) and just before it replaces
/// `path`; when it answers false nothing is replaced and the answer is `false`.
/// Folder sync uses it to leave alone a file someone changed while it was
/// writing, so that their edit is merged rather than overwritten.
/// The file is a person's (a watched `.ipynb`), so it takes the usual permissions.
pub(crate) fn write_atomically_if(
    path: &Path,
    data: &[u8],
    still_wanted: impl FnOnce(&Path) -> bool,
) -> std::io::Result<bool> {
    write_with_mode(path, data, None, still_wanted)
}

fn write_with_mode(
    path: &Path,
    data: &[u8],
    mode: Option<u32>,
    still_wanted: impl FnOnce(&Path) -> bool,
) -> std::io::Result<bool> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a storage path has no parent folder"))?;
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension(format!("{}.partial", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if let Some(mode) = mode {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&temporary)?;
        file.write_all(data)?;
        file.sync_all()?;
        if !still_wanted(&temporary) {
            return Ok(false);
        }
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Every chunk file under the document folder `root` (the embedded layout, see
/// [`DurableStorage::path_of`]) with its storage key, in a stable order; the
/// temporaries of an interrupted write are left out. For `ferrolab collab
/// migrate`, which reads them one at a time.
pub fn chunk_files(root: &Path) -> std::io::Result<Vec<(StorageKey, PathBuf)>> {
    let mut out = Vec::new();
    let names = |dir: &Path| -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(std::io::Error::other(format!(
                    "{} is not a storage file name",
                    entry.path().display()
                )));
            };
            if !name.ends_with(".partial") {
                entries.push((name, entry.path()));
            }
        }
        entries.sort();
        Ok(entries)
    };
    for (head, head_path) in names(root)? {
        if !head_path.is_dir() {
            continue;
        }
        for (tail, path) in names(&head_path)? {
            let first = format!("{head}{tail}");
            let key = StorageKey::from_parts([first.as_str()]).map_err(|_| {
                std::io::Error::other(format!("{} is not a storage key", path.display()))
            })?;
            if path.is_dir() {
                let mut found: Vec<(StorageKey, PathBuf)> = Vec::new();
                let mut stack = vec![(path, key)];
                while let Some((dir, key)) = stack.pop() {
                    for (name, child_path) in names(&dir)? {
                        let child = key.with_component(name).map_err(|_| {
                            std::io::Error::other(format!(
                                "{} is not a storage key",
                                child_path.display()
                            ))
                        })?;
                        if child_path.is_dir() {
                            stack.push((child_path, child));
                        } else {
                            found.push((child, child_path));
                        }
                    }
                }
                found.sort_by(|a, b| a.1.cmp(&b.1));
                out.extend(found);
            } else {
                out.push((key, path));
            }
        }
    }
    Ok(out)
}

fn read_tree(prefix: &StorageKey, dir: &Path) -> HashMap<StorageKey, Vec<u8>> {
    let mut out = HashMap::new();
    let mut stack = vec![(dir.to_path_buf(), prefix.clone())];
    while let Some((dir, key)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.ends_with(".partial") {
                continue;
            }
            let Ok(child) = key.with_component(name) else {
                continue;
            };
            let path = entry.path();
            if path.is_dir() {
                stack.push((path, child));
            } else if let Ok(data) = std::fs::read(&path) {
                out.insert(child, data);
            }
        }
    }
    out
}

/// Retries a database operation until it succeeds: chunks are never dropped
/// (acknowledgements wait for them), and a missing chunk must not pass for an
/// absent document while the database is away.
async fn with_retries<T, F, Fut>(what: &str, key: &StorageKey, mut operation: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match operation().await {
            Ok(value) => return value,
            Err(error) => {
                log::error!(
                    "could not {what} {key} in the database: {error}; retrying in {} ms",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

impl samod::storage::Storage for DurableStorage {
    fn load(&self, key: StorageKey) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send {
        let this = self.clone();
        this.note_open(&key);
        async move {
            let data = if let Some(pg) = &this.inner.postgres {
                with_retries("load", &key, || pg.load(&key)).await?
            } else {
                let path = this.path_of(&key)?;
                tokio::task::spawn_blocking(move || std::fs::read(path).ok())
                    .await
                    .ok()??
            };
            this.note_durable(&key, &data);
            Some(data)
        }
    }

    fn load_range(
        &self,
        prefix: StorageKey,
    ) -> impl std::future::Future<Output = HashMap<StorageKey, Vec<u8>>> + Send {
        let this = self.clone();
        // Before the query: a chunk committed after it is announced, and heard.
        this.note_open(&prefix);
        async move {
            let found: HashMap<StorageKey, Vec<u8>> = if let Some(pg) = &this.inner.postgres {
                with_retries("load the chunks under", &prefix, || pg.load_range(&prefix))
                    .await
                    .into_iter()
                    .collect()
            } else {
                let Some(dir) = this.path_of(&prefix) else {
                    return HashMap::new();
                };
                tokio::task::spawn_blocking(move || read_tree(&prefix, &dir))
                    .await
                    .unwrap_or_default()
            };
            for (key, data) in &found {
                this.note_durable(key, data);
            }
            found
        }
    }

    fn put(&self, key: StorageKey, data: Vec<u8>) -> impl std::future::Future<Output = ()> + Send {
        let this = self.clone();
        this.note_open(&key);
        async move {
            if let Some(pg) = &this.inner.postgres {
                let hashes = chunk_hashes(&key, &data);
                let announced = this
                    .inner
                    .announced
                    .lock()
                    .is_ok_and(|mut announced| announced.remove(&key));
                if !announced {
                    let snapshot = matches!(ChunkKind::of(&key), Some(ChunkKind::Snapshot));
                    let heads: &[ChangeHash] = if snapshot { &hashes } else { &[] };
                    with_retries("store", &key, || pg.put(&key, &data, heads)).await;
                }
                this.note_durable_hashes(&key, hashes);
                return;
            }
            let Some(path) = this.path_of(&key) else {
                log::error!("refusing to store a chunk under the malformed key {key}");
                return;
            };
            let data = Arc::new(data);
            let mut delay = Duration::from_millis(50);
            loop {
                let (target, bytes) = (path.clone(), data.clone());
                let result = tokio::task::spawn_blocking(move || write_atomically(&target, &bytes))
                    .await
                    .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
                match result {
                    Ok(()) => break,
                    Err(error) => {
                        // Never drop a chunk: acknowledgements wait for it.
                        log::error!(
                            "could not write {}: {error}; retrying in {} ms (free disk space?)",
                            path.display(),
                            delay.as_millis()
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
            this.note_durable(&key, &data);
        }
    }

    fn delete(&self, key: StorageKey) -> impl std::future::Future<Output = ()> + Send {
        let this = self.clone();
        async move {
            if let Some(pg) = &this.inner.postgres {
                with_retries("delete", &key, || pg.delete(&key)).await;
                return;
            }
            let Some(path) = this.path_of(&key) else {
                return;
            };
            let _ = tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("could not delete {}: {e}", path.display()),
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    #[test]
    fn snapshot_heads_are_read_from_the_header() {
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "a", 1).expect("put");
        doc.put(automerge::ROOT, "b", 2).expect("put");
        let heads = doc.get_heads();
        let saved = doc.save();
        assert_eq!(snapshot_heads(&saved), heads);
    }

    #[tokio::test]
    async fn every_stored_chunk_is_found_under_its_own_key() {
        use samod::storage::Storage;
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = DurableStorage::open(dir.path()).expect("open");
        let keys = [
            vec!["storage-adapter-id"],
            vec!["3mZ8kq7", "incremental", "00aa"],
            vec!["3mZ8kq7", "snapshot", "bb11"],
            vec!["4Hw2", "incremental", "cc22"],
        ];
        for (i, parts) in keys.iter().enumerate() {
            let key = StorageKey::from_parts(parts.iter()).expect("key");
            storage.put(key, vec![i as u8; i + 1]).await;
        }
        // An interrupted write's temporary is not a chunk.
        std::fs::write(
            dir.path().join("3m/Z8kq7/incremental/dd33.0123.partial"),
            b"x",
        )
        .expect("write");
        let found = chunk_files(dir.path()).expect("walk");
        let mut found: Vec<(String, Vec<u8>)> = found
            .into_iter()
            .map(|(key, path)| (key.to_string(), std::fs::read(path).expect("read")))
            .collect();
        found.sort();
        let mut expected: Vec<(String, Vec<u8>)> = keys
            .iter()
            .enumerate()
            .map(|(i, parts)| (parts.join("/"), vec![i as u8; i + 1]))
            .collect();
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/c");
        write_atomically(&path, b"first").expect("write");
        write_atomically(&path, b"second").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary files stay behind");
    }

    #[test]
    fn a_write_no_longer_wanted_leaves_the_file_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notebook.ipynb");
        std::fs::write(&path, b"theirs").expect("write");
        let mut seen = Vec::new();
        let written = write_atomically_if(&path, b"ours", |temporary| {
            seen = std::fs::read(temporary).expect("the temporary holds the new text");
            false
        })
        .expect("write");
        assert!(!written);
        assert_eq!(seen, b"ours");
        assert_eq!(std::fs::read(&path).expect("read"), b"theirs");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(leftovers.len(), 1, "the temporary is removed");
        assert!(write_atomically_if(&path, b"ours", |_| true).expect("write"));
        assert_eq!(std::fs::read(&path).expect("read"), b"ours");
    }
}
