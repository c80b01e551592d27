//! Folder sync (`--watch DIR`): `.ipynb` files in DIR and their documents are
//! kept in step both ways.
//!
//! Every half second the watcher looks at each file and each document:
//! - a new file is imported as a notebook;
//! - a document that changed (someone edited it over sync) is exported to its
//!   file, atomically;
//! - a file that changed on disk is merged into the documents *as edits*: the
//!   watcher takes the state both sides last agreed on (the document at the
//!   heads recorded at the last sync, the "base"), computes per cell what the
//!   file changed relative to it (cells added, removed, moved; source splices;
//!   metadata and outputs), applies those edits to a fork of the document at the
//!   base heads, and merges the fork. Whatever people typed meanwhile is
//!   concurrent with the file's edits and survives the merge; the merged result
//!   is then written back to the file.
//!
//! The agreed state per file (document heads and the file's hash) is kept in
//! `DATA/watch.json`, so a restart picks up edits made to files while the server
//! was down without replaying edits it had already written out.

use crate::ipynb::{self, Notebook};
use crate::schema::{self, get_map, get_str};
use crate::workspace::Workspace;
use crate::{notebook, storage};
use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ChangeHash, ObjType, ROOT};
use samod::DocHandle;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(500);

/// What both sides last agreed on, per file (relative path).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Agreed {
    notebook_id: String,
    notebook_heads: Vec<String>,
    runtime_heads: Vec<String>,
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    /// Watched folder (absolute) → relative file path → agreed state.
    folders: BTreeMap<String, BTreeMap<String, Agreed>>,
}

struct Tracked {
    notebook: DocHandle,
    runtime: DocHandle,
    agreed: Agreed,
    /// The file's stamp when last read or written.
    stamp: Option<Stamp>,
    /// Set after a file failed to parse, so the log says it once per change.
    unreadable: bool,
}

pub struct Watcher {
    workspace: Arc<Workspace>,
    folder: PathBuf,
    state_path: PathBuf,
    tracked: HashMap<String, Tracked>,
}

fn sha256(bytes: &[u8]) -> String {
    ferrolab_tracking::digest_hex(bytes)
}

fn heads_to_strings(heads: &[ChangeHash]) -> Vec<String> {
    heads.iter().map(ToString::to_string).collect()
}

fn strings_to_heads(heads: &[String]) -> Vec<ChangeHash> {
    heads
        .iter()
        .filter_map(|h| ChangeHash::from_str(h).ok())
        .collect()
}

/// A file text and the document heads it shows.
struct Exported {
    text: String,
    notebook_heads: Vec<ChangeHash>,
    runtime_heads: Vec<ChangeHash>,
}

/// What tells one version of a file from the next without reading it: modified
/// time, length and, on Unix, the inode (an atomic save, ours or an editor's,
/// makes a new one, so even a same-length write within the clock's tick shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: std::time::SystemTime,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: meta.modified().ok()?,
        len: meta.len(),
        inode,
    })
}

/// The notebook as both documents show it at the given heads.
fn export_at(
    nb: &Automerge,
    nb_heads: &[ChangeHash],
    rt: &Automerge,
    rt_heads: &[ChangeHash],
) -> Option<Json> {
    let nb = nb.fork_at(nb_heads).ok()?;
    let rt = rt.fork_at(rt_heads).ok()?;
    Some(ipynb::export(&nb, &rt))
}

impl Watcher {
    pub fn new(workspace: Arc<Workspace>, folder: PathBuf, data: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&folder)?;
        let folder = folder.canonicalize()?;
        Ok(Self {
            workspace,
            folder,
            state_path: data.join("watch.json"),
            tracked: HashMap::new(),
        })
    }

    fn load_state(&self) -> BTreeMap<String, Agreed> {
        let state: StateFile = std::fs::read(&self.state_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        state
            .folders
            .get(&self.folder.display().to_string())
            .cloned()
            .unwrap_or_default()
    }

    fn save_state(&self) {
        let mut state: StateFile = std::fs::read(&self.state_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let files = self
            .tracked
            .iter()
            .map(|(path, t)| (path.clone(), t.agreed.clone()))
            .collect();
        state
            .folders
            .insert(self.folder.display().to_string(), files);
        match serde_json::to_vec_pretty(&state) {
            Ok(bytes) => {
                if let Err(e) = storage::write_atomically(&self.state_path, &bytes) {
                    log::error!("cannot save {}: {e}", self.state_path.display());
                }
            }
            Err(e) => log::error!("cannot encode the folder sync state: {e}"),
        }
    }

    /// Runs forever (until the server stops).
    pub async fn run(mut self) {
        let mut agreed = self.load_state();
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            let files = list_notebooks(&self.folder);
            for relative in &files {
                let result = if self.tracked.contains_key(relative) {
                    self.sync_file(relative).await
                } else {
                    self.start_tracking(relative, agreed.remove(relative)).await
                };
                if let Err(error) = result {
                    log::error!("folder sync of {relative}: {error:#}");
                }
            }
            let present: HashSet<&String> = files.iter().collect();
            let gone: Vec<String> = self
                .tracked
                .keys()
                .filter(|k| !present.contains(k))
                .cloned()
                .collect();
            for relative in gone {
                log::info!(
                    "{relative} was removed from the folder; its notebook stays in the workspace"
                );
                self.tracked.remove(&relative);
                self.save_state();
            }
        }
    }

    async fn open(&self, id: &str) -> anyhow::Result<(DocHandle, DocHandle)> {
        Ok(self.workspace.open_handles(id).await?)
    }

    async fn start_tracking(
        &mut self,
        relative: &str,
        previous: Option<Agreed>,
    ) -> anyhow::Result<()> {
        let path = self.folder.join(relative);
        let file_stamp = stamp(&path);
        let bytes = std::fs::read(&path)?;
        let hash = sha256(&bytes);
        let known = previous.filter(|p| self.workspace.index_entry(&p.notebook_id).is_some());
        let Some(agreed) = known else {
            // A file we have not seen: import it.
            let parsed = match ipynb::parse(&bytes) {
                Ok(parsed) => parsed,
                Err(error) => {
                    log::warn!("{relative} is not a notebook nbformat 4 can read ({error}); skipping it until it changes");
                    return Ok(());
                }
            };
            let title = Path::new(relative)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned());
            let entry = self
                .workspace
                .create_with_path(title, Some(&parsed), Some(relative))
                .await?;
            let id = entry["id"].as_str().unwrap_or_default().to_string();
            let (notebook, runtime) = self.open(&id).await?;
            let agreed = Agreed {
                notebook_id: id,
                notebook_heads: heads_to_strings(&notebook.with_document(|d| d.get_heads())),
                runtime_heads: heads_to_strings(&runtime.with_document(|d| d.get_heads())),
                sha256: hash,
            };
            log::info!("imported {relative} as notebook {}", agreed.notebook_id);
            self.tracked.insert(
                relative.to_string(),
                Tracked {
                    notebook,
                    runtime,
                    agreed,
                    stamp: file_stamp,
                    unreadable: false,
                },
            );
            // Write the file back in our layout (ids added, lines split) so both agree.
            self.write_file(relative).await?;
            return Ok(());
        };
        let (notebook, runtime) = self.open(&agreed.notebook_id).await?;
        let changed_on_disk = agreed.sha256 != hash;
        self.tracked.insert(
            relative.to_string(),
            Tracked {
                notebook,
                runtime,
                agreed,
                stamp: None,
                unreadable: false,
            },
        );
        if changed_on_disk {
            // If the file already shows the documents as they are now, a previous run
            // wrote it and stopped before recording that: nothing to merge.
            if let Some(current) = self.current_text(relative) {
                if current.text.as_bytes() == bytes.as_slice() {
                    self.record(relative, &current, file_stamp);
                    return Ok(());
                }
            }
        }
        self.sync_file(relative).await
    }

    /// The file text of the documents now, with the heads it shows. The heads must
    /// come from the same copies as the text: edits keep arriving while the file is
    /// written, and recording later heads would mark those edits as on disk when
    /// they are not (the file would then never catch up).
    fn current_text(&self, relative: &str) -> Option<Exported> {
        let t = self.tracked.get(relative)?;
        let nb = t.notebook.with_document(|d| d.clone());
        let rt = t.runtime.with_document(|d| d.clone());
        Some(Exported {
            text: ipynb::to_file_text(&ipynb::export(&nb, &rt)),
            notebook_heads: nb.get_heads(),
            runtime_heads: rt.get_heads(),
        })
    }

    fn record(&mut self, relative: &str, exported: &Exported, file_stamp: Option<Stamp>) {
        if let Some(t) = self.tracked.get_mut(relative) {
            t.agreed.sha256 = sha256(exported.text.as_bytes());
            t.agreed.notebook_heads = heads_to_strings(&exported.notebook_heads);
            t.agreed.runtime_heads = heads_to_strings(&exported.runtime_heads);
            t.stamp = file_stamp;
            t.unreadable = false;
        }
        self.save_state();
    }

    /// One round for one tracked file: merge disk edits in, write document edits out.
    async fn sync_file(&mut self, relative: &str) -> anyhow::Result<()> {
        let path = self.folder.join(relative);
        let Some(t) = self.tracked.get_mut(relative) else {
            return Ok(());
        };
        let file_stamp = stamp(&path);
        if file_stamp != t.stamp {
            let bytes = std::fs::read(&path)?;
            if sha256(&bytes) != t.agreed.sha256 {
                match ipynb::parse(&bytes) {
                    Ok(parsed) => {
                        merge_into_documents(t, &parsed)?;
                        log::info!(
                            "merged the changes to {relative} into notebook {}",
                            t.agreed.notebook_id
                        );
                    }
                    Err(error) => {
                        // Perhaps a half-written file: look again next round.
                        if !t.unreadable {
                            log::warn!("{relative} does not parse ({error}); keeping the notebook as it is");
                            t.unreadable = true;
                        }
                        return Ok(());
                    }
                }
            }
            t.stamp = file_stamp;
        }
        let nb_heads = t.notebook.with_document(|d| d.get_heads());
        let rt_heads = t.runtime.with_document(|d| d.get_heads());
        if heads_to_strings(&nb_heads) != t.agreed.notebook_heads
            || heads_to_strings(&rt_heads) != t.agreed.runtime_heads
        {
            self.write_file(relative).await?;
        }
        Ok(())
    }

    /// Writes the documents out to the file, unless the file changed since it was
    /// last read: then it is left for the next round to merge first. The check sits
    /// just before the new file replaces the old one, so an edit saved while the
    /// text was being prepared is never overwritten.
    async fn write_file(&mut self, relative: &str) -> anyhow::Result<()> {
        let Some(exported) = self.current_text(relative) else {
            return Ok(());
        };
        let Some(last_seen) = self.tracked.get(relative).map(|t| t.stamp) else {
            return Ok(());
        };
        let path = self.folder.join(relative);
        // The stamp before the read: a write after it changes the stamp, so the
        // next round looks at the file again.
        let before = stamp(&path);
        let on_disk = std::fs::read(&path).unwrap_or_default();
        if on_disk == exported.text.as_bytes() {
            self.record(relative, &exported, before);
            return Ok(());
        }
        let (target, bytes) = (path.clone(), exported.text.clone().into_bytes());
        let (written, new_stamp) = tokio::task::spawn_blocking(move || {
            let mut new_stamp = None;
            let written = storage::write_atomically_if(&target, &bytes, |temporary| {
                // The renamed file keeps the temporary's inode and times.
                new_stamp = stamp(temporary);
                stamp(&target) == last_seen
            })?;
            Ok::<_, std::io::Error>((written, new_stamp))
        })
        .await??;
        if written {
            self.record(relative, &exported, new_stamp);
        } else {
            log::info!("{relative} changed on disk while it was being written; merging that first");
        }
        Ok(())
    }
}

/// `.ipynb` files under `folder`, relative, skipping hidden folders and checkpoints.
fn list_notebooks(folder: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".ipynb") {
                if let Ok(relative) = path.strip_prefix(folder) {
                    out.push(relative.to_string_lossy().into_owned());
                }
            }
        }
    }
    out.sort();
    out
}

fn by_id(notebook: &Notebook) -> HashMap<String, &Map<String, Json>> {
    notebook
        .cells
        .iter()
        .filter_map(|c| Some((c.get("id")?.as_str()?.to_string(), c)))
        .collect()
}

/// Applies what changed between the agreed state and the file, as edits made at
/// the agreed heads, then merges them into the live documents.
fn merge_into_documents(t: &Tracked, file: &Notebook) -> anyhow::Result<()> {
    let nb_heads = strings_to_heads(&t.agreed.notebook_heads);
    let rt_heads = strings_to_heads(&t.agreed.runtime_heads);
    let nb_now = t.notebook.with_document(|d| d.clone());
    let rt_now = t.runtime.with_document(|d| d.clone());
    let base_json = export_at(&nb_now, &nb_heads, &rt_now, &rt_heads).ok_or_else(|| {
        anyhow::anyhow!("the agreed version of the notebook is not in its history")
    })?;
    let base = ipynb::Notebook::from_json(base_json).map_err(|e| anyhow::anyhow!("{e}"))?;

    let mut nb_fork = nb_now.fork_at(&nb_heads)?;
    let encoding = nb_fork.text_encoding();
    nb_fork
        .transact::<_, _, AutomergeError>(|tx| apply_notebook_edits(tx, encoding, &base, file))
        .map_err(|f| f.error)?;
    let mut rt_fork = rt_now.fork_at(&rt_heads)?;
    rt_fork
        .transact::<_, _, AutomergeError>(|tx| apply_runtime_edits(tx, &base, file))
        .map_err(|f| f.error)?;
    t.notebook.with_document(|d| d.merge(&mut nb_fork))?;
    t.runtime.with_document(|d| d.merge(&mut rt_fork))?;
    Ok(())
}

/// Per-key edits of a JSON map held in an automerge map.
fn edit_map<T: Transactable>(
    tx: &mut T,
    parent: &automerge::ObjId,
    key: &str,
    before: Option<&Json>,
    after: Option<&Json>,
) -> Result<(), AutomergeError> {
    if before == after {
        return Ok(());
    }
    match (before, after, get_map(tx, parent, key)) {
        (Some(Json::Object(old)), Some(Json::Object(new)), Some(obj)) => {
            for (k, v) in new {
                if old.get(k) != Some(v) {
                    schema::put_json(tx, &obj, k, v)?;
                }
            }
            for k in old.keys() {
                if !new.contains_key(k) && tx.get(&obj, k.as_str())?.is_some() {
                    tx.delete(&obj, k.as_str())?;
                }
            }
            Ok(())
        }
        (_, Some(value), _) => schema::put_json(tx, parent, key, value),
        (_, None, _) => {
            if tx.get(parent, key)?.is_some() {
                tx.delete(parent, key)?;
            }
            Ok(())
        }
    }
}

/// The single splice (common prefix and suffix kept) turning `old` into `new`,
/// in UTF-16 units: (start, deleted, inserted).
fn text_diff(old: &str, new: &str) -> Option<(usize, usize, String)> {
    if old == new {
        return None;
    }
    let old_chars: Vec<char> = old.chars().collect();
    let new_chars: Vec<char> = new.chars().collect();
    let prefix = old_chars
        .iter()
        .zip(&new_chars)
        .take_while(|(a, b)| a == b)
        .count();
    let max_suffix = old_chars.len().min(new_chars.len()) - prefix;
    let suffix = old_chars
        .iter()
        .rev()
        .zip(new_chars.iter().rev())
        .take(max_suffix)
        .take_while(|(a, b)| a == b)
        .count();
    let units = |chars: &[char]| chars.iter().map(|c| c.len_utf16()).sum::<usize>();
    let start = units(&old_chars[..prefix]);
    let deleted = units(&old_chars[prefix..old_chars.len() - suffix]);
    let inserted: String = new_chars[prefix..new_chars.len() - suffix].iter().collect();
    Some((start, deleted, inserted))
}

fn apply_notebook_edits<T: Transactable>(
    tx: &mut T,
    encoding: automerge::TextEncoding,
    base: &Notebook,
    file: &Notebook,
) -> Result<(), AutomergeError> {
    let before_meta = Json::Object(base.metadata.clone());
    let after_meta = Json::Object(file.metadata.clone());
    edit_map(tx, &ROOT, "metadata", Some(&before_meta), Some(&after_meta))?;
    let old = by_id(base);
    let new = by_id(file);
    let cells = get_map(tx, &ROOT, "cells").ok_or(AutomergeError::Fail)?;
    for id in old.keys() {
        if !new.contains_key(id) {
            notebook::delete_cell(tx, id)?;
        }
    }
    let mut previous: Option<String> = None;
    for cell in &file.cells {
        let Some(id) = cell.get("id").and_then(Json::as_str) else {
            continue;
        };
        let kind = cell
            .get("cell_type")
            .and_then(Json::as_str)
            .unwrap_or("code");
        let source = cell.get("source").and_then(Json::as_str).unwrap_or("");
        match old.get(id) {
            None => {
                let obj = tx.put_object(&cells, id, ObjType::Map)?;
                tx.put(&obj, "id", id)?;
                tx.put(&obj, "cell_type", kind)?;
                tx.put(&obj, "position", "V")?;
                let text = tx.put_object(&obj, "source", ObjType::Text)?;
                tx.splice_text(&text, 0, 0, source)?;
                let empty = Json::Object(Map::new());
                schema::put_json(tx, &obj, "metadata", cell.get("metadata").unwrap_or(&empty))?;
                if let Some(attachments) = cell.get("attachments") {
                    schema::put_json(tx, &obj, "attachments", attachments)?;
                }
            }
            Some(before) => {
                let Some(obj) = get_map(tx, &cells, id) else {
                    continue;
                };
                if before.get("cell_type") != cell.get("cell_type") {
                    tx.put(&obj, "cell_type", kind)?;
                }
                let old_source = before.get("source").and_then(Json::as_str).unwrap_or("");
                if let Some((start, deleted, inserted)) = text_diff(old_source, source) {
                    notebook::splice_source(tx, encoding, id, start, deleted, &inserted)?;
                }
                edit_map(
                    tx,
                    &obj,
                    "metadata",
                    before.get("metadata"),
                    cell.get("metadata"),
                )?;
                edit_map(
                    tx,
                    &obj,
                    "attachments",
                    before.get("attachments"),
                    cell.get("attachments"),
                )?;
            }
        }
        place_after(tx, &cells, id, previous.as_deref(), &file.cells)?;
        previous = Some(id.to_string());
    }
    Ok(())
}

/// Gives cell `id` a position after `previous` (and before the next cell of the
/// file that already has a larger position) when its current one is out of order.
fn place_after<T: Transactable>(
    tx: &mut T,
    cells: &automerge::ObjId,
    id: &str,
    previous: Option<&str>,
    order: &[Map<String, Json>],
) -> Result<(), AutomergeError> {
    let position =
        |tx: &T, id: &str| get_map(tx, cells, id).and_then(|obj| get_str(tx, &obj, "position"));
    let before = previous.and_then(|p| position(tx, p));
    let current = position(tx, id);
    // The next cell in the file order that sits after `before`, as an upper bound.
    let index = order
        .iter()
        .position(|c| c.get("id").and_then(Json::as_str) == Some(id))
        .unwrap_or(0);
    let after = order[index + 1..]
        .iter()
        .filter_map(|c| c.get("id").and_then(Json::as_str))
        .filter_map(|next| position(tx, next))
        .find(|p| before.as_deref().is_none_or(|b| p.as_str() > b));
    let in_order = match (&current, &before, &after) {
        (Some(c), b, a) => {
            b.as_deref().is_none_or(|b| c.as_str() > b)
                && a.as_deref().is_none_or(|a| c.as_str() < a)
        }
        (None, _, _) => false,
    };
    if !in_order {
        let fresh = schema::position_between(before.as_deref(), after.as_deref());
        if let Some(obj) = get_map(tx, cells, id) {
            tx.put(&obj, "position", fresh)?;
        }
    }
    Ok(())
}

fn apply_runtime_edits<T: Transactable>(
    tx: &mut T,
    base: &Notebook,
    file: &Notebook,
) -> Result<(), AutomergeError> {
    let old = by_id(base);
    let new = by_id(file);
    let cells = match get_map(tx, &ROOT, "cells") {
        Some(cells) => cells,
        None => tx.put_object(ROOT, "cells", ObjType::Map)?,
    };
    for id in old.keys() {
        if !new.contains_key(id) && tx.get(&cells, id.as_str())?.is_some() {
            tx.delete(&cells, id.as_str())?;
        }
    }
    for (id, cell) in &new {
        if cell.get("cell_type").and_then(Json::as_str) != Some("code") {
            continue;
        }
        let before = old.get(id);
        let obj = match get_map(tx, &cells, id) {
            Some(obj) => obj,
            None => tx.put_object(&cells, id.as_str(), ObjType::Map)?,
        };
        for key in ["execution_count", "outputs"] {
            let after = cell.get(key);
            if before.and_then(|b| b.get(key)) != after || tx.get(&obj, key)?.is_none() {
                let default = if key == "outputs" {
                    Json::Array(Vec::new())
                } else {
                    Json::Null
                };
                schema::put_json(tx, &obj, key, after.unwrap_or(&default))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_diff_is_one_splice_in_utf16_units() {
        assert_eq!(text_diff("abc", "abc"), None);
        assert_eq!(text_diff("abc", "aXc"), Some((1, 1, "X".into())));
        assert_eq!(text_diff("😀b", "😀cb"), Some((2, 0, "c".into())));
        assert_eq!(text_diff("aaa", "aa"), Some((2, 1, String::new())));
        assert_eq!(text_diff("", "new"), Some((0, 0, "new".into())));
    }
}
