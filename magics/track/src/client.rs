//! The local store as a tracking backend, and the calls the magics share.

use anyhow::{anyhow, bail, Context, Result};
use ferrolab_llm::tracker::Backend;
use ferrolab_tracking::{ArtifactStore, Identity, Role, SqliteStore};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The tracking store in this process: the collaboration server's store and
/// request handling, opened on first use. The user acts as the store's owner under
/// their login name; the governance rules (no self-approval) still hold.
pub struct Local {
    dir: PathBuf,
    user: String,
    store: Mutex<Option<Arc<SqliteStore>>>,
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

    fn store(&self) -> Result<Arc<SqliteStore>> {
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
            Arc::new(SqliteStore::open(&path).with_context(|| {
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

/// Every active experiment: (id, name).
pub fn experiments(api: &dyn Backend) -> Result<Vec<(String, String)>> {
    let found = api.call("GET", "experiments/search", json!({"max_results": 50000}))?;
    Ok(found["experiments"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["experiment_id"].as_str().unwrap_or("0").to_string(),
                        e["name"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Runs of these experiments matching an MLflow filter, in `order_by` order.
pub fn search_runs(
    api: &dyn Backend,
    experiment_ids: &[String],
    filter: &str,
    order_by: &[String],
    max: usize,
) -> Result<Vec<Value>> {
    let mut runs = Vec::new();
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
        runs.extend(page["runs"].as_array().cloned().unwrap_or_default());
        token = page["next_page_token"].as_str().map(str::to_string);
        if token.is_none() || runs.len() >= max {
            break;
        }
    }
    runs.truncate(max);
    Ok(runs)
}

/// A run by its id, an id's first 6+ characters, or its name (the newest of that
/// name when several share it).
pub fn resolve_run(api: &dyn Backend, what: &str) -> Result<Value> {
    let what = what.trim();
    if what.len() == 32 && what.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(api.call("GET", "runs/get", json!({"run_id": what}))?["run"].clone());
    }
    let ids: Vec<String> = experiments(api)?.into_iter().map(|(id, _)| id).collect();
    if ids.is_empty() {
        bail!("no run '{what}': there are no experiments yet");
    }
    let runs = search_runs(api, &ids, "", &[], 50_000)?;
    let by_id: Vec<&Value> = runs
        .iter()
        .filter(|r| what.len() >= 6 && run_id_of(r).starts_with(what))
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
    runs.iter()
        .find(|r| r["info"]["run_name"].as_str() == Some(what))
        .cloned()
        .ok_or_else(|| anyhow!("no run with the id or name '{what}' (%runs lists them)"))
}

pub fn run_id_of(run: &Value) -> &str {
    run["info"]["run_id"].as_str().unwrap_or_default()
}

pub fn run_name_of(run: &Value) -> &str {
    run["info"]["run_name"].as_str().unwrap_or_default()
}

/// A run's params, metrics or tags (`section`) as (key, value) pairs.
pub fn entries(run: &Value, section: &str) -> Vec<(String, Value)> {
    run["data"][section]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["key"].as_str().unwrap_or_default().to_string(),
                        e["value"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn metric_history(api: &dyn Backend, run_id: &str, key: &str) -> Result<Vec<(i64, f64)>> {
    let found = api.call(
        "GET",
        "metrics/get-history",
        json!({"run_id": run_id, "metric_key": key}),
    )?;
    Ok(found["metrics"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|m| Some((m["step"].as_i64().unwrap_or(0), m["value"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default())
}
