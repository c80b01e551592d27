//! The local store as a tracking backend, and the calls the magics share.

use anyhow::{anyhow, bail, Context, Result};
use ferrolab_llm::tracker::Backend;
use ferrolab_tracking::model::{Experiment, KeyValue, Metric, Run};
use ferrolab_tracking::{ArtifactStore, Identity, Role, SqlStore};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The tracking store in this process: the collaboration server's store and
/// request handling, opened on first use. The user acts as the store's owner under
/// their login name; the governance rules (no self-approval) still hold.
pub struct Local {
    dir: PathBuf,
    user: String,
    store: Mutex<Option<Arc<SqlStore>>>,
}

impl Local {
    pub fn new(dir: PathBuf, user: String) -> Local {
        Local {
            dir,
            user,
            store: Mutex::new(None),
        }
    }

    /// `$FERROLAB_TRACKING_DIR`, else `.ferrolab/tracking` in the working directory;
    /// the user from `$USER` (else `local`).
    pub fn from_env() -> Local {
        let dir = std::env::var_os("FERROLAB_TRACKING_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".ferrolab").join("tracking"));
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "local".to_string());
        Local::new(dir, user)
    }

    fn store(&self) -> Result<Arc<SqlStore>> {
        let mut slot = ferrolab_magics::lock(&self.store);
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        std::fs::create_dir_all(&self.dir).with_context(|| {
            format!(
                "cannot create the local tracking folder {}",
                self.dir.display()
            )
        })?;
        let path = self.dir.join("tracking.sqlite");
        let store =
            Arc::new(SqlStore::open_sqlite(&path).with_context(|| {
                format!("cannot open the local tracking store {}", path.display())
            })?);
        *slot = Some(store.clone());
        Ok(store)
    }
}

impl Backend for Local {
    fn describe(&self) -> String {
        format!(
            "the local store {}",
            self.dir.join("tracking.sqlite").display()
        )
    }

    fn put_artifact(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.store()?
            .put_artifact(path, bytes)
            .map(|_| ())
            .map_err(|e| anyhow!("{} {}: {}", self.describe(), e.code(), e.message()))
    }

    fn call(&self, method: &str, endpoint: &str, body: Value) -> Result<Value> {
        let store = self.store()?;
        let endpoint = match (endpoint, method) {
            ("registered-models/alias", "GET") => "registered-models/alias/get",
            ("registered-models/alias", "DELETE") => "registered-models/alias/delete",
            (e, _) => e,
        };
        let who = Identity {
            token_id: "local".to_string(),
            name: self.user.clone(),
            role: Role::Owner,
        };
        ferrolab_tracking::api::call(store.as_ref(), &who, endpoint, &body)
            .map_err(|e| anyhow!("{} {}: {}", self.describe(), e.code(), e.message()))
    }
}

/// An experiment's id by name, created when `create` and missing.
pub fn experiment_id(api: &dyn Backend, name: &str, create: bool) -> Result<String> {
    if create {
        return ferrolab_llm::tracker::experiment_id(api, name);
    }
    ferrolab_llm::tracker::find_experiment(api, name)?.ok_or_else(|| {
        anyhow!("no experiment named '{name}'; %runs without a name lists every experiment's runs")
    })
}

pub use ferrolab_llm::tracker::read;

/// Every active experiment.
pub fn experiments(api: &dyn Backend) -> Result<Vec<Experiment>> {
    let found = api.call("GET", "experiments/search", json!({"max_results": 50000}))?;
    read(&found, "experiments")
}

/// Runs of these experiments matching an MLflow filter, in `order_by` order.
pub fn search_runs(
    api: &dyn Backend,
    experiment_ids: &[String],
    filter: &str,
    order_by: &[String],
    max: usize,
) -> Result<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({
            "experiment_ids": experiment_ids,
            "filter": filter,
            "order_by": order_by,
            "max_results": max.min(50_000),
        });
        if let Some(t) = &token {
            body["page_token"] = json!(t);
        }
        let page = api.call("POST", "runs/search", body)?;
        if !page["runs"].is_null() {
            runs.extend(read::<Vec<Run>>(&page, "runs")?);
        }
        token = page["next_page_token"].as_str().map(str::to_string);
        if token.is_none() || runs.len() >= max {
            break;
        }
    }
    runs.truncate(max);
    Ok(runs)
}

/// A run by its id.
pub fn get_run(api: &dyn Backend, run_id: &str) -> Result<Run> {
    read(
        &api.call("GET", "runs/get", json!({"run_id": run_id}))?,
        "run",
    )
}

/// A run by its id, an id's first 6+ characters, or its name (the newest of that
/// name when several share it).
pub fn resolve_run(api: &dyn Backend, what: &str) -> Result<Run> {
    let what = what.trim();
    if what.len() == 32 && what.chars().all(|c| c.is_ascii_hexdigit()) {
        return get_run(api, what);
    }
    let ids: Vec<String> = experiments(api)?
        .into_iter()
        .map(|e| e.experiment_id)
        .collect();
    if ids.is_empty() {
        bail!("no run '{what}': there are no experiments yet");
    }
    let runs = search_runs(api, &ids, "", &[], 50_000)?;
    let by_id: Vec<&Run> = runs
        .iter()
        .filter(|r| what.len() >= 6 && r.info.run_id.starts_with(what))
        .collect();
    if by_id.len() == 1 {
        return Ok(by_id[0].clone());
    }
    if by_id.len() > 1 {
        bail!(
            "'{what}' is the start of {} run ids; give more of it",
            by_id.len()
        );
    }
    // search_runs answers newest first.
    runs.into_iter()
        .find(|r| r.info.run_name == what)
        .ok_or_else(|| anyhow!("no run with the id or name '{what}' (%runs lists them)"))
}

/// A run's params or tags by key, as text.
pub fn pairs(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

/// A run's latest metric values by key.
pub fn latest_metrics(run: &Run) -> BTreeMap<String, f64> {
    run.data
        .metrics
        .iter()
        .map(|m| (m.key.clone(), m.value))
        .collect()
}

/// A metric's history: (step, value) in step order.
pub fn metric_history(api: &dyn Backend, run_id: &str, key: &str) -> Result<Vec<(i64, f64)>> {
    let found = api.call(
        "GET",
        "metrics/get-history",
        json!({"run_id": run_id, "metric_key": key}),
    )?;
    let points: Vec<Metric> = read(&found, "metrics")?;
    Ok(points.into_iter().map(|m| (m.step, m.value)).collect())
}
