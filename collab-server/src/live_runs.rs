//! Live run documents: each tracked run has an automerge document with its summary
//! — name, status, params, tags, latest metrics — that collaborators sync like any
//! notebook and only the server writes, and a notes document (`notes_url`) whose
//! `notes` text they co-edit. The SQLite store stays the record;
//! the document follows it. Writes through the tracking API mark their run, and a
//! task brings marked runs' documents up to date a few times a second, so a burst
//! of `log_metric` calls costs one document change, not thousands.
//!
//! The live document's URL is the run's tag `ferrolab.doc` (MLflow clients see it
//! in `runs/get`); the notes document's is the live document's `notes_url`.

use crate::schema;
use automerge::transaction::Transactable;
use automerge::{AutomergeError, ObjId, ObjType, ScalarValue, Value as AmValue, ROOT};
use ferrolab_tracking::{Store, TrackingError};
use samod::{DocHandle, DocumentId, Repo};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const RUN_SCHEMA: &str = "ferrolab.run";
pub const NOTES_SCHEMA: &str = "ferrolab.run-notes";

/// How often marked runs' documents are brought up to date.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The live run documents: which runs changed since the last flush, and each run's
/// document handle. Holds the repository and the tracking store it follows.
pub struct LiveRuns {
    repo: Repo,
    store: Arc<dyn Store>,
    dirty: Mutex<HashSet<String>>,
    handles: Mutex<HashMap<String, DocHandle>>,
    rights: Arc<crate::rights::DocRights>,
}

impl LiveRuns {
    /// The runs' notes documents become editable by writers.
    pub async fn new(
        repo: Repo,
        store: Arc<dyn Store>,
        rights: Arc<crate::rights::DocRights>,
    ) -> LiveRuns {
        let listing = store.clone();
        match tokio::task::spawn_blocking(move || listing.run_notes_docs()).await {
            Ok(Ok(urls)) => urls.iter().for_each(|url| rights.allow_edits(url)),
            Ok(Err(e)) => log::error!("cannot list the runs' notes documents: {}", e.message()),
            Err(e) => log::error!("cannot list the runs' notes documents: {e}"),
        }
        LiveRuns {
            repo,
            store,
            dirty: Mutex::default(),
            handles: Mutex::default(),
            rights,
        }
    }

    /// Notes that `run_id` changed; its document follows at the next flush.
    pub fn mark(&self, run_id: &str) {
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.insert(run_id.to_string());
        }
    }

    fn take(&self) -> HashSet<String> {
        self.dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    /// Brings the documents of marked runs up to date, every [`FLUSH_EVERY`].
    pub async fn follow(self: Arc<Self>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tick.tick().await;
            self.flush().await;
        }
    }

    /// Brings the documents of every marked run up to date now.
    pub async fn flush(&self) {
        for run_id in self.take() {
            if let Err(e) = self.update(&run_id).await {
                log::warn!("the live document of run {run_id} was not updated: {e:#}");
            }
        }
    }

    async fn handle_for(
        &self,
        run_id: &str,
        known: Option<(String, String)>,
    ) -> anyhow::Result<DocHandle> {
        if let Some(h) = self
            .handles
            .lock()
            .ok()
            .and_then(|m| m.get(run_id).cloned())
        {
            return Ok(h);
        }
        let stopped = |_| anyhow::anyhow!("the repository stopped");
        let (handle, notes_url) = match known {
            Some((url, notes)) => {
                let id = DocumentId::from_str(url.trim_start_matches("automerge:"))
                    .map_err(|_| anyhow::anyhow!("the stored document id {url} is not valid"))?;
                let handle =
                    self.repo.find(id).await.map_err(stopped)?.ok_or_else(|| {
                        anyhow::anyhow!("its document {url} is missing from storage")
                    })?;
                (handle, (!notes.is_empty()).then_some(notes))
            }
            None => (
                self.repo.create(new_document()).await.map_err(stopped)?,
                None,
            ),
        };
        if notes_url.is_none() {
            // A new run, or one whose notes lived in its summary document before
            // peers lost the right to write summaries: the notes move to a
            // document of their own, text included.
            let old_notes = handle.with_document(|doc| old_notes(doc));
            let notes = self
                .repo
                .create(notes_document(run_id, &old_notes))
                .await
                .map_err(stopped)?;
            let notes_url = notes.url().to_string();
            self.rights.allow_edits(&notes_url);
            handle.with_document(|doc| {
                doc.transact::<_, _, AutomergeError>(|tx| {
                    tx.put(ROOT, "notes_url", notes_url.as_str())
                })
                .map(|_| ())
                .map_err(|f| f.error)
            })?;
            let store = self.store.clone();
            let (run, url) = (run_id.to_string(), handle.url().to_string());
            tokio::task::spawn_blocking(move || store.set_run_doc(&run, &url, &notes_url))
                .await?
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        }
        if let Ok(mut handles) = self.handles.lock() {
            handles.insert(run_id.to_string(), handle.clone());
        }
        Ok(handle)
    }

    async fn update(&self, run_id: &str) -> anyhow::Result<()> {
        let store = self.store.clone();
        let id = run_id.to_string();
        let (run, known) =
            tokio::task::spawn_blocking(move || (store.get_run(&id), store.run_doc(&id))).await?;
        let run = match run.and_then(|run| ferrolab_tracking::model::to_json(&run)) {
            Ok(run) => run,
            // Gone (a deleted experiment's run); nothing to follow.
            Err(TrackingError::NotFound(_)) => return Ok(()),
            Err(e) => anyhow::bail!("{}", e.message()),
        };
        let handle = self
            .handle_for(
                run_id,
                known.map_err(|e| anyhow::anyhow!("{}", e.message()))?,
            )
            .await?;
        handle.with_document(|doc| apply(doc, &run))?;
        Ok(())
    }
}

fn new_document() -> automerge::Automerge {
    let mut doc = automerge::Automerge::new();
    let made = doc.transact::<_, _, AutomergeError>(|tx| {
        tx.put(ROOT, "schema", RUN_SCHEMA)?;
        tx.put(ROOT, "schema_version", schema::SCHEMA_VERSION)?;
        for key in ["params", "tags", "metrics"] {
            tx.put_object(ROOT, key, ObjType::Map)?;
        }
        Ok(())
    });
    debug_assert!(made.is_ok(), "a new run document cannot fail");
    doc
}

/// A run's notes document: `{schema, run_id, notes: Text}`.
fn notes_document(run_id: &str, text: &str) -> automerge::Automerge {
    let mut doc = automerge::Automerge::new();
    let made = doc.transact::<_, _, AutomergeError>(|tx| {
        tx.put(ROOT, "schema", NOTES_SCHEMA)?;
        tx.put(ROOT, "schema_version", schema::SCHEMA_VERSION)?;
        tx.put(ROOT, "run_id", run_id)?;
        let notes = tx.put_object(ROOT, "notes", ObjType::Text)?;
        tx.splice_text(&notes, 0, 0, text)?;
        Ok(())
    });
    debug_assert!(made.is_ok(), "a new notes document cannot fail");
    doc
}

/// The `notes` text an older run document kept itself ('' when none).
fn old_notes(doc: &automerge::Automerge) -> String {
    use automerge::ReadDoc;
    match doc.get(ROOT, "notes") {
        Ok(Some((AmValue::Object(ObjType::Text), id))) => doc.text(&id).unwrap_or_default(),
        _ => String::new(),
    }
}

fn scalar_of(v: &Value) -> ScalarValue {
    match v {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => ScalarValue::Int(i),
            (None, Some(f)) => ScalarValue::F64(f),
            _ => ScalarValue::Null,
        },
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        Value::Bool(b) => ScalarValue::Boolean(*b),
        _ => ScalarValue::Null,
    }
}

/// Puts a scalar only when it differs, so an unchanged field adds no operation.
fn put_if_changed<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: ScalarValue,
) -> Result<(), AutomergeError> {
    let same =
        matches!(tx.get(obj, key)?, Some((AmValue::Scalar(current), _)) if *current == value);
    if !same {
        tx.put(obj, key, value)?;
    }
    Ok(())
}

fn map_at<T: Transactable>(tx: &mut T, obj: &ObjId, key: &str) -> Result<ObjId, AutomergeError> {
    match schema::get_map(tx, obj, key) {
        Some(map) => Ok(map),
        None => tx.put_object(obj, key, ObjType::Map),
    }
}

/// Writes the run's summary (MLflow's run JSON) into its document.
fn apply(doc: &mut automerge::Automerge, run: &Value) -> Result<(), AutomergeError> {
    doc.transact::<_, _, AutomergeError>(|tx| {
        let info = &run["info"];
        for (key, field) in [
            ("run_id", "run_id"),
            ("name", "run_name"),
            ("experiment_id", "experiment_id"),
            ("status", "status"),
            ("user", "user_id"),
            ("start_time", "start_time"),
            ("end_time", "end_time"),
            ("lifecycle_stage", "lifecycle_stage"),
        ] {
            if !info[field].is_null() {
                put_if_changed(tx, &ROOT, key, scalar_of(&info[field]))?;
            }
        }
        for section in ["params", "tags"] {
            let obj = map_at(tx, &ROOT, section)?;
            for entry in run["data"][section].as_array().into_iter().flatten() {
                if let Some(key) = entry["key"].as_str() {
                    put_if_changed(tx, &obj, key, scalar_of(&entry["value"]))?;
                }
            }
        }
        let metrics = map_at(tx, &ROOT, "metrics")?;
        for m in run["data"]["metrics"].as_array().into_iter().flatten() {
            let Some(key) = m["key"].as_str() else {
                continue;
            };
            let point = map_at(tx, &metrics, key)?;
            // NaN and infinities travel as MLflow's strings.
            put_if_changed(tx, &point, "value", scalar_of(&m["value"]))?;
            put_if_changed(tx, &point, "step", scalar_of(&m["step"]))?;
            put_if_changed(tx, &point, "timestamp", scalar_of(&m["timestamp"]))?;
        }
        Ok(())
    })
    .map(|_| ())
    .map_err(|f| f.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ReadDoc;
    use serde_json::json;

    #[test]
    fn a_summary_update_touches_only_what_changed() {
        let mut doc = new_document();
        let run = json!({
            "info": {"run_id": "r1", "run_name": "a", "experiment_id": "0", "status": "RUNNING", "user_id": "al", "start_time": 5},
            "data": {"params": [{"key": "lr", "value": "0.1"}], "tags": [],
                     "metrics": [{"key": "loss", "value": 0.5, "step": 1, "timestamp": 9}]}
        });
        apply(&mut doc, &run).expect("apply");
        let heads = doc.get_heads();
        apply(&mut doc, &run).expect("apply again");
        assert_eq!(
            doc.get_heads(),
            heads,
            "an unchanged summary adds no change"
        );
        let mut later = run.clone();
        later["data"]["metrics"][0]["value"] = json!(0.25);
        later["info"]["status"] = json!("FINISHED");
        apply(&mut doc, &later).expect("apply later");
        let metrics = schema::get_map(&doc, &ROOT, "metrics").expect("metrics");
        let loss = schema::get_json(&doc, &metrics, "loss").expect("loss");
        assert_eq!(loss, json!({"value": 0.25, "step": 1, "timestamp": 9}));
        assert_eq!(
            schema::get_str(&doc, &ROOT, "status").as_deref(),
            Some("FINISHED")
        );
    }

    /// Notes an older run document kept move, text and all, to the notes document.
    #[test]
    fn old_notes_move_to_their_own_document() {
        let mut old = new_document();
        old.transact::<_, _, AutomergeError>(|tx| {
            let notes = tx.put_object(ROOT, "notes", ObjType::Text)?;
            tx.splice_text(&notes, 0, 0, "r=8 looks best")
        })
        .map_err(|f| f.error)
        .expect("old notes");
        assert_eq!(old_notes(&old), "r=8 looks best");
        assert_eq!(old_notes(&new_document()), "");
        let moved = notes_document("r1", &old_notes(&old));
        let notes = match moved.get(ROOT, "notes").expect("get") {
            Some((AmValue::Object(ObjType::Text), id)) => id,
            other => panic!("notes is {other:?}"),
        };
        assert_eq!(moved.text(&notes).expect("text"), "r=8 looks best");
        assert_eq!(
            schema::get_str(&moved, &ROOT, "schema").as_deref(),
            Some(NOTES_SCHEMA)
        );
    }
}
