//! The workspace: every notebook is two automerge documents (its cells, and its
//! runtime state: outputs and executions) in the server's repository, listed in one
//! index document. This service creates, lists, opens, renames and deletes them; a
//! change it makes is on disk before it returns. It knows nothing of HTTP or tokens:
//! the API checks who may call it.

use crate::storage::DurableStorage;
use crate::{ipynb, schema};
use anyhow::Context;
use automerge::transaction::Transactable;
use automerge::{Automerge, AutomergeError, ChangeHash, ObjType, ReadDoc, ROOT};
use samod::{DocHandle, DocumentId, Repo};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

/// How often the index's `updated` times follow edits made over sync.
const UPDATED_STAMP: Duration = Duration::from_secs(2);

/// What can go wrong with a workspace operation.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("no notebook has the id {0:?}; GET /api/notebooks lists them")]
    NotFound(String),
    #[error("the notebook has no cell {0:?}; it may have been deleted")]
    NoCell(String),
    /// The repository, storage or a document is not as it must be.
    #[error("{0}")]
    Internal(String),
}

impl WorkspaceError {
    fn internal(error: impl std::fmt::Display) -> Self {
        WorkspaceError::Internal(error.to_string())
    }
}

/// The notebooks of one server.
pub struct Workspace {
    repo: Repo,
    storage: DurableStorage,
    index: DocHandle,
    /// Documents writers changed since the index's `updated` times were stamped.
    touched: Mutex<HashSet<String>>,
    /// Which documents peers may change: this workspace's notebooks.
    rights: std::sync::Arc<crate::rights::DocRights>,
}

impl Workspace {
    /// Opens the workspace whose index `DATA/workspace.json` names, or starts a new
    /// one there.
    /// Its notebooks' documents are the ones editors may change over sync.
    pub async fn open(
        repo: Repo,
        storage: DurableStorage,
        data: &Path,
        rights: std::sync::Arc<crate::rights::DocRights>,
    ) -> anyhow::Result<Self> {
        let index = open_index(&repo, &storage, data).await?;
        let workspace = Workspace {
            repo,
            storage,
            index,
            touched: Mutex::new(HashSet::new()),
            rights,
        };
        for entry in workspace.entries() {
            if let Some(url) = entry["notebook"].as_str() {
                workspace.rights.allow_edits(url);
            }
        }
        Ok(workspace)
    }

    /// The server's repository.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// The document store.
    pub fn storage(&self) -> &DurableStorage {
        &self.storage
    }

    /// The index document's automerge URL, which clients open to list notebooks.
    pub fn index_url(&self) -> String {
        format!("automerge:{}", self.index.document_id())
    }

    /// Every notebook's index entry, oldest first.
    pub fn entries(&self) -> Vec<Value> {
        let mut entries: Vec<Value> =
            self.index
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
        entries
    }

    /// The workspace index entry of notebook `id`.
    pub fn index_entry(&self, id: &str) -> Option<Value> {
        self.index.with_document(|doc| entry_json(doc, id))
    }

    /// Creates a notebook (empty, or from an imported file) and lists it.
    pub async fn create(
        &self,
        title: Option<String>,
        notebook: Option<&ipynb::Notebook>,
    ) -> Result<Value, WorkspaceError> {
        self.create_with_path(title, notebook, None).await
    }

    /// [`Workspace::create`] for a notebook that mirrors a file of a watched folder.
    pub async fn create_with_path(
        &self,
        title: Option<String>,
        notebook: Option<&ipynb::Notebook>,
        path: Option<&str>,
    ) -> Result<Value, WorkspaceError> {
        let mut nb_doc = schema::notebook_skeleton();
        let mut rt_doc = schema::runtime_skeleton();
        if let Some(notebook) = notebook {
            ipynb::fill(notebook, &mut nb_doc, &mut rt_doc).map_err(WorkspaceError::internal)?;
        }
        let stopped = |_| WorkspaceError::internal("the repository stopped");
        let nb = self.repo.create(nb_doc).await.map_err(stopped)?;
        rt_doc
            .transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, "notebook", nb.url().to_string()))
            .map_err(|f| WorkspaceError::internal(f.error))?;
        let rt = self.repo.create(rt_doc).await.map_err(stopped)?;
        let runtime_url = rt.url().to_string();
        self.change_durably(&nb, |doc| {
            doc.transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, "runtime", runtime_url.as_str()))
                .map(|_| ())
                .map_err(|f| f.error)
        })
        .await?;
        let id = nb.document_id().to_string();
        self.rights.allow_edits(&id);
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
    pub async fn open_handles(&self, id: &str) -> Result<(DocHandle, DocHandle), WorkspaceError> {
        let entry = self
            .index_entry(id)
            .ok_or_else(|| WorkspaceError::NotFound(id.to_string()))?;
        let mut handles = Vec::new();
        for key in ["notebook", "runtime"] {
            let doc_id = entry[key]
                .as_str()
                .map(|url| url.trim_start_matches("automerge:"))
                .and_then(|id| DocumentId::from_str(id).ok())
                .ok_or_else(|| {
                    WorkspaceError::internal(format!(
                        "the index entry of {id} has no {key} document"
                    ))
                })?;
            let handle = self
                .repo
                .find(doc_id)
                .await
                .map_err(|_| WorkspaceError::internal("the repository stopped"))?
                .ok_or_else(|| {
                    WorkspaceError::internal(format!(
                        "the {key} document of {id} is missing from storage"
                    ))
                })?;
            handles.push(handle);
        }
        let runtime = handles
            .pop()
            .ok_or_else(|| WorkspaceError::internal("no runtime handle"))?;
        let notebook = handles
            .pop()
            .ok_or_else(|| WorkspaceError::internal("no notebook handle"))?;
        Ok((notebook, runtime))
    }

    /// The code cells `wanted` (every code cell, in order, when `None`) of notebook
    /// `notebook` with their sources as they are now.
    pub fn code_cells(
        notebook: &DocHandle,
        wanted: Option<&[String]>,
    ) -> Result<Vec<(String, String)>, WorkspaceError> {
        notebook.with_document(|doc| {
            let order = crate::notebook::cell_ids(doc);
            let ids: Vec<String> = wanted.map_or_else(|| order.clone(), <[String]>::to_vec);
            let mut out = Vec::new();
            for cell in ids {
                if !order.contains(&cell) {
                    return Err(WorkspaceError::NoCell(cell));
                }
                if crate::notebook::cell_type(doc, &cell).as_deref() == Some("code") {
                    let source = crate::notebook::source(doc, &cell).unwrap_or_default();
                    out.push((cell, source));
                }
            }
            Ok(out)
        })
    }

    /// Renames notebook `id`; returns its new index entry.
    pub async fn rename(&self, id: &str, title: &str) -> Result<Value, WorkspaceError> {
        let renamed = self
            .change_durably(&self.index, |doc| {
                let Some(notebooks) = schema::get_map(doc, &ROOT, "notebooks") else {
                    return Ok(false);
                };
                let Some(entry) = schema::get_map(doc, &notebooks, id) else {
                    return Ok(false);
                };
                let now = now();
                doc.transact::<_, _, AutomergeError>(|tx| {
                    tx.put(&entry, "title", title)?;
                    tx.put(&entry, "updated", now.as_str())
                })
                .map(|_| true)
                .map_err(|f| f.error)
            })
            .await?;
        if !renamed {
            return Err(WorkspaceError::NotFound(id.to_string()));
        }
        self.index_entry(id)
            .ok_or_else(|| WorkspaceError::NotFound(id.to_string()))
    }

    /// Removes notebook `id` from the index.
    pub async fn delete(&self, id: &str) -> Result<(), WorkspaceError> {
        let notebook_url = self
            .index_entry(id)
            .and_then(|entry| entry["notebook"].as_str().map(str::to_string));
        let existed = self
            .change_durably(&self.index, |doc| {
                let Some(notebooks) = schema::get_map(doc, &ROOT, "notebooks") else {
                    return Ok(false);
                };
                if doc.get(&notebooks, id)?.is_none() {
                    return Ok(false);
                }
                doc.transact::<_, _, AutomergeError>(|tx| tx.delete(&notebooks, id))
                    .map(|_| true)
                    .map_err(|f| f.error)
            })
            .await?;
        if existed {
            if let Some(url) = notebook_url {
                self.rights.forbid_edits(&url);
            }
            Ok(())
        } else {
            Err(WorkspaceError::NotFound(id.to_string()))
        }
    }

    /// The notebook as both documents show it now (nbformat JSON), and its title.
    pub async fn snapshot(&self, id: &str) -> Result<(Value, String), WorkspaceError> {
        let (notebook, runtime) = self.open_handles(id).await?;
        let (notebook, runtime) = (
            notebook.with_document(|doc| doc.clone()),
            runtime.with_document(|doc| doc.clone()),
        );
        let title = self
            .index_entry(id)
            .and_then(|e| e["title"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "notebook".into());
        Ok((ipynb::export(&notebook, &runtime), title))
    }

    /// Notes that a peer changed document `doc` (its notebook's `updated` time
    /// follows within [`UPDATED_STAMP`]).
    pub fn touch(&self, doc: String) {
        if let Ok(mut touched) = self.touched.lock() {
            touched.insert(doc);
        }
    }

    /// Keeps the rights in step with the index when it changes from elsewhere (in
    /// the cluster mode, another replica creates and deletes notebooks): listed
    /// notebooks are editable, notebooks no longer listed are not.
    pub async fn follow_index(self: std::sync::Arc<Self>) {
        use futures::StreamExt;
        let mut changes = self.index.changes();
        let mut listed = self.listed_notebooks();
        while changes.next().await.is_some() {
            let now = self.listed_notebooks();
            for url in now.difference(&listed) {
                self.rights.allow_edits(url);
            }
            for url in listed.difference(&now) {
                self.rights.forbid_edits(url);
            }
            listed = now;
        }
    }

    fn listed_notebooks(&self) -> HashSet<String> {
        self.entries()
            .iter()
            .filter_map(|entry| entry["notebook"].as_str().map(str::to_owned))
            .collect()
    }

    /// Moves the `updated` time of notebooks whose documents peers changed, every
    /// [`UPDATED_STAMP`].
    pub async fn stamp_updates(self: std::sync::Arc<Self>) {
        let mut tick = tokio::time::interval(UPDATED_STAMP);
        loop {
            tick.tick().await;
            let touched: HashSet<String> = match self.touched.lock() {
                Ok(mut touched) => std::mem::take(&mut *touched),
                Err(_) => return,
            };
            if touched.is_empty() {
                continue;
            }
            if let Err(error) = self.stamp(&touched) {
                log::warn!("could not stamp notebook update times: {error}");
            }
        }
    }

    fn stamp(&self, touched: &HashSet<String>) -> Result<(), AutomergeError> {
        let stamp = now();
        self.index.with_document(|doc| {
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
        })
    }

    /// Applies `f` to a document and waits until the change is on disk.
    async fn change_durably<R>(
        &self,
        handle: &DocHandle,
        f: impl FnOnce(&mut Automerge) -> Result<R, AutomergeError>,
    ) -> Result<R, WorkspaceError> {
        let (result, heads): (R, Vec<ChangeHash>) = handle
            .with_document(|doc| f(doc).map(|r| (r, doc.get_heads())))
            .map_err(WorkspaceError::internal)?;
        self.storage
            .wait_durable(&handle.document_id().to_string(), &heads)
            .await;
        Ok(result)
    }
}

fn entry_json(doc: &Automerge, id: &str) -> Option<Value> {
    let notebooks = schema::get_map(doc, &ROOT, "notebooks")?;
    let entry = schema::get_json(doc, &notebooks, id)?;
    entry.is_object().then_some(entry)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The setting naming the workspace index in the cluster mode (the data
/// folder's `workspace.json` otherwise).
pub(crate) const INDEX_SETTING: &str = "workspace_index";

async fn open_index(
    repo: &Repo,
    storage: &DurableStorage,
    data: &Path,
) -> anyhow::Result<DocHandle> {
    let pointer = data.join("workspace.json");
    let known = match storage.database() {
        Some(database) => database.setting(INDEX_SETTING).await?,
        None => match std::fs::read(&pointer) {
            Ok(bytes) => {
                let value: Value = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is damaged", pointer.display()))?;
                let id = value.get("index").and_then(Value::as_str);
                Some(
                    id.with_context(|| format!("{} names no index document", pointer.display()))?
                        .to_string(),
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", pointer.display())),
        },
    };
    let id = match known {
        Some(id) => id,
        None => {
            let handle = repo
                .create(schema::workspace_skeleton())
                .await
                .map_err(|_| anyhow::anyhow!("the repository stopped"))?;
            let id = handle.document_id().to_string();
            let heads = handle.with_document(|doc| doc.get_heads());
            storage.wait_durable(&id, &heads).await;
            match storage.database() {
                // Replicas starting together: the first to store its index wins,
                // the others open that one (theirs stays unused).
                Some(database) => {
                    let chosen = database.setting_or_insert(INDEX_SETTING, &id).await?;
                    if chosen == id {
                        return Ok(handle);
                    }
                    chosen
                }
                None => {
                    let body = serde_json::to_vec_pretty(&json!({ "index": id }))?;
                    crate::storage::write_atomically(&pointer, &body)?;
                    return Ok(handle);
                }
            }
        }
    };
    let id = DocumentId::from_str(&id)
        .map_err(|_| anyhow::anyhow!("the workspace index id {id:?} is damaged"))?;
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
