//! The tracking store: experiments, runs, write-once params, tags, and metric
//! series, in SQLite (`DATA/tracking.sqlite`, WAL, synchronous FULL). Every write
//! is one transaction: a batch is stored whole or not at all.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;

pub use crate::error::{Result, TrackingError};
use crate::search::RunRecord;

/// One metric point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
}

/// MLflow's limits on one `log-batch`.
pub const MAX_BATCH_METRICS: usize = 1000;
pub const MAX_BATCH_PARAMS: usize = 100;
pub const MAX_BATCH_TAGS: usize = 100;
pub const MAX_BATCH_TOTAL: usize = 1000;
pub const MAX_KEY: usize = 250;
pub const MAX_PARAM_VALUE: usize = 6000;
pub const MAX_TAG_VALUE: usize = 8000;

pub const RUN_STATUSES: &[&str] = &["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

pub struct Store {
    conn: Mutex<Connection>,
    /// Runs as search needs them (record and answer JSON), filled by searches and
    /// emptied of a run by every write to it, under the connection's lock.
    run_cache: Mutex<HashMap<String, Arc<CachedRun>>>,
    /// Where artifact blobs live (`artifacts/` beside the database).
    artifacts: std::path::PathBuf,
    /// The audit log's key and anchor.
    pub(crate) audit: crate::audit::Audit,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn check_key(kind: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(TrackingError::invalid(format!(
            "a {kind} key must not be empty"
        )));
    }
    if key.len() > MAX_KEY {
        return Err(TrackingError::invalid(format!(
            "{kind} key '{}…' is {} characters; the limit is {MAX_KEY}",
            &key[..key.char_indices().nth(40).map_or(key.len(), |(i, _)| i)],
            key.len()
        )));
    }
    if key.contains("..") || key.starts_with('/') {
        return Err(TrackingError::invalid(format!(
            "invalid {kind} key '{key}': keys may not start with '/' or contain '..'"
        )));
    }
    Ok(())
}

/// A key and a value within MLflow's length limits.
fn check_entry(kind: &str, key: &str, value: &str, max: usize) -> Result<()> {
    check_key(kind, key)?;
    if value.len() > max {
        return Err(TrackingError::invalid(format!(
            "{kind} '{key}' has a value of {} characters; the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}

/// A metric value as MLflow's JSON writes it: a number, or "NaN" / "Infinity".
pub fn metric_json(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else if value.is_nan() {
        json!("NaN")
    } else if value > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

impl Store {
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open(path)?;
        crate::schema::migrate(&conn)?;
        let now = now_ms();
        // MLflow's experiment 0, where runs go when no experiment is set.
        conn.execute(
            "INSERT OR IGNORE INTO experiments (id, name, artifact_location, creation_time, last_update_time)
             VALUES (0, 'Default', 'mlflow-artifacts:/0', ?1, ?1)",
            params![now],
        )?;
        let audit = crate::audit::Audit::open(path)?;
        Ok(Store {
            audit,
            conn: Mutex::new(conn),
            run_cache: Mutex::new(HashMap::new()),
            artifacts: path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join("artifacts"),
        })
    }

    pub(crate) fn artifacts_dir(&self) -> &Path {
        &self.artifacts
    }

    /// A write transaction on one run: the run leaves the search cache first, under
    /// the same lock, so no search can keep what the write changes.
    fn write_run<T>(
        &self,
        run_id: &str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.with(|tx| {
            if let Ok(mut cache) = self.run_cache.lock() {
                cache.remove(run_id);
            }
            f(tx)
        })
    }

    pub(crate) fn with<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        let out = match f(&tx).and_then(|out| Ok((out, tx.commit()?))) {
            Ok((out, ())) => out,
            Err(error) => {
                self.audit.rolled_back();
                return Err(error);
            }
        };
        self.audit.after_commit(&conn);
        Ok(out)
    }

    // ------------------------------------------------------------ experiments

    pub fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<String> {
        if name.trim().is_empty() {
            return Err(TrackingError::invalid(
                "an experiment needs a non-empty name",
            ));
        }
        self.with(|tx| {
            let taken: Option<i64> = tx
                .query_row("SELECT id FROM experiments WHERE name = ?1", [name], |r| r.get(0))
                .optional()?;
            if taken.is_some() {
                return Err(TrackingError::exists(format!(
                    "Experiment(name={name}) already exists. Error: an experiment with this name exists"
                )));
            }
            let now = now_ms();
            let id: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM experiments", [], |r| r.get(0))?;
            let location = artifact_location
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("mlflow-artifacts:/{id}"));
            tx.execute(
                "INSERT INTO experiments (id, name, artifact_location, creation_time, last_update_time)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![id, name, location, now],
            )?;
            for (k, v) in tags {
                check_key("tag", k)?;
                tx.execute(
                    "INSERT OR REPLACE INTO experiment_tags (experiment_id, key, value) VALUES (?1, ?2, ?3)",
                    params![id, k, v],
                )?;
            }
            Ok(id.to_string())
        })
    }

    fn experiment_row(tx: &Transaction<'_>, id: i64) -> Result<Option<Value>> {
        let row = tx
            .query_row(
                "SELECT id, name, artifact_location, lifecycle_stage, creation_time, last_update_time
                 FROM experiments WHERE id = ?1",
                [id],
                |r| {
                    Ok(json!({
                        "experiment_id": r.get::<_, i64>(0)?.to_string(),
                        "name": r.get::<_, String>(1)?,
                        "artifact_location": r.get::<_, String>(2)?,
                        "lifecycle_stage": r.get::<_, String>(3)?,
                        "creation_time": r.get::<_, i64>(4)?,
                        "last_update_time": r.get::<_, i64>(5)?,
                    }))
                },
            )
            .optional()?;
        let Some(mut row) = row else { return Ok(None) };
        let mut stmt = tx.prepare_cached(
            "SELECT key, value FROM experiment_tags WHERE experiment_id = ?1 ORDER BY key",
        )?;
        let tags: Vec<Value> = stmt
            .query_map([id], |r| {
                Ok(json!({"key": r.get::<_, String>(0)?, "value": r.get::<_, String>(1)?}))
            })?
            .collect::<std::result::Result<_, _>>()?;
        row["tags"] = Value::Array(tags);
        Ok(Some(row))
    }

    fn experiment_id(id: &str) -> Result<i64> {
        id.trim().parse::<i64>().map_err(|_| {
            TrackingError::invalid(format!("experiment_id must be a number, got '{id}'"))
        })
    }

    pub fn get_experiment(&self, id: &str) -> Result<Value> {
        let n = Self::experiment_id(id)?;
        self.with(|tx| {
            Self::experiment_row(tx, n)?
                .ok_or_else(|| TrackingError::missing(format!("No Experiment with id={id} exists")))
        })
    }

    pub fn get_experiment_by_name(&self, name: &str) -> Result<Value> {
        self.with(|tx| {
            let id: Option<i64> = tx
                .query_row("SELECT id FROM experiments WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            match id {
                Some(id) => Self::experiment_row(tx, id)?.ok_or_else(|| {
                    TrackingError::missing(format!("Could not find experiment with name '{name}'"))
                }),
                None => Err(TrackingError::missing(format!(
                    "Could not find experiment with name '{name}'"
                ))),
            }
        })
    }

    /// Active experiments (or deleted, or all), by name; `max_results` at a time.
    /// Experiments of a lifecycle view, newest first, matching a filter of `name`
    /// and `tags.KEY` clauses (`=`, `!=`, `LIKE`, `ILIKE`, joined by AND).
    pub fn search_experiments(
        &self,
        view: &str,
        filter: &str,
        max_results: usize,
        offset: usize,
    ) -> Result<(Vec<Value>, Option<String>)> {
        let clauses = crate::search::registry_filter(filter, &["name", "tags"])?;
        self.with(|tx| {
            let stage = match view {
                "DELETED_ONLY" => "lifecycle_stage = 'deleted'",
                "ALL" => "1",
                _ => "lifecycle_stage = 'active'",
            };
            let mut stmt = tx.prepare(&format!(
                "SELECT id FROM experiments WHERE {stage} ORDER BY creation_time DESC, id DESC"
            ))?;
            let ids: Vec<i64> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?;
            let mut hits = Vec::new();
            for id in ids {
                let Some(e) = Self::experiment_row(tx, id)? else {
                    continue;
                };
                let tags = e["tags"].as_array().cloned().unwrap_or_default();
                let name = e["name"].as_str().unwrap_or_default().to_string();
                if crate::search::filter_matches(&clauses, |key| {
                    crate::search::field(key, &name, &tags)
                }) {
                    hits.push(e);
                }
            }
            let more = hits.len() > offset + max_results;
            let page: Vec<Value> = hits.into_iter().skip(offset).take(max_results).collect();
            Ok((page, more.then(|| (offset + max_results).to_string())))
        })
    }

    // ------------------------------------------------------------ runs

    pub fn create_run(
        &self,
        experiment_id: &str,
        user_id: &str,
        author: &str,
        run_name: Option<&str>,
        start_time: Option<i64>,
        tags: &[(String, String)],
    ) -> Result<Value> {
        let exp = Self::experiment_id(experiment_id)?;
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let name = run_name
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .or_else(|| {
                tags.iter()
                    .find(|(k, _)| k == "mlflow.runName")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| format!("run-{}", &run_id[..8]));
        self.with(|tx| {
            let stage: Option<String> = tx
                .query_row("SELECT lifecycle_stage FROM experiments WHERE id = ?1", [exp], |r| r.get(0))
                .optional()?;
            match stage.as_deref() {
                None => {
                    return Err(TrackingError::missing(format!(
                        "No Experiment with id={experiment_id} exists"
                    )))
                }
                Some("active") => {}
                Some(_) => {
                    return Err(TrackingError::invalid(format!(
                        "experiment {experiment_id} is deleted; restore it before adding runs"
                    )))
                }
            }
            tx.execute(
                "INSERT INTO runs (run_id, experiment_id, name, user_id, author, status, start_time, artifact_uri)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'RUNNING', ?6, ?7)",
                params![
                    run_id,
                    exp,
                    name,
                    user_id,
                    author,
                    start_time.unwrap_or_else(now_ms),
                    format!("mlflow-artifacts:/{exp}/{run_id}/artifacts")
                ],
            )?;
            let mut tags = tags.to_vec();
            if !tags.iter().any(|(k, _)| k == "mlflow.runName") {
                tags.push(("mlflow.runName".into(), name.clone()));
            }
            tags.push(("ferrolab.author".into(), author.to_string()));
            for (k, v) in &tags {
                Self::put_tag(tx, &run_id, k, v)?;
            }
            Self::run_json(tx, &run_id)
        })
    }

    fn run_state(tx: &Transaction<'_>, run_id: &str) -> Result<String> {
        tx.query_row(
            "SELECT lifecycle_stage FROM runs WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| TrackingError::missing(format!("Run with id={run_id} not found")))
    }

    fn writable(tx: &Transaction<'_>, run_id: &str) -> Result<()> {
        if Self::run_state(tx, run_id)? != "active" {
            return Err(TrackingError::invalid(format!(
                "The run {run_id} must be in the 'active' state. Current state is deleted."
            )));
        }
        Ok(())
    }

    fn run_info(tx: &Transaction<'_>, run_id: &str) -> Result<Value> {
        tx.query_row(
            "SELECT run_id, experiment_id, name, user_id, status, start_time, end_time, lifecycle_stage, artifact_uri
             FROM runs WHERE run_id = ?1",
            [run_id],
            |r| {
                let mut info = json!({
                    "run_id": r.get::<_, String>(0)?,
                    "run_uuid": r.get::<_, String>(0)?,
                    "experiment_id": r.get::<_, i64>(1)?.to_string(),
                    "run_name": r.get::<_, String>(2)?,
                    "user_id": r.get::<_, String>(3)?,
                    "status": r.get::<_, String>(4)?,
                    "start_time": r.get::<_, i64>(5)?,
                    "lifecycle_stage": r.get::<_, String>(7)?,
                    "artifact_uri": r.get::<_, String>(8)?,
                });
                if let Some(end) = r.get::<_, Option<i64>>(6)? {
                    info["end_time"] = json!(end);
                }
                Ok(info)
            },
        )
        .optional()?
        .ok_or_else(|| TrackingError::missing(format!("Run with id={run_id} not found")))
    }

    /// A run's params or tags (`table`), by key.
    fn key_values(
        tx: &Transaction<'_>,
        table: &str,
        run_id: &str,
    ) -> Result<BTreeMap<String, String>> {
        let mut stmt =
            tx.prepare_cached(&format!("SELECT key, value FROM {table} WHERE run_id = ?1"))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    fn run_json(tx: &Transaction<'_>, run_id: &str) -> Result<Value> {
        let info = Self::run_info(tx, run_id)?;
        let pairs = |table: &str| -> Result<Vec<Value>> {
            Ok(Self::key_values(tx, table, run_id)?
                .into_iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect())
        };
        let params = pairs("params")?;
        let tags = pairs("tags")?;
        let mut stmt = tx.prepare_cached(
            "SELECT key, value, is_nan, timestamp, step FROM latest_metrics WHERE run_id = ?1 ORDER BY key",
        )?;
        let metrics: Vec<Value> = stmt
            .query_map([run_id], |r| {
                let value: f64 = if r.get::<_, i64>(2)? == 1 {
                    f64::NAN
                } else {
                    r.get::<_, f64>(1)?
                };
                Ok(json!({
                    "key": r.get::<_, String>(0)?,
                    "value": metric_json(value),
                    "timestamp": r.get::<_, i64>(3)?,
                    "step": r.get::<_, i64>(4)?,
                }))
            })?
            .collect::<std::result::Result<_, _>>()?;
        Ok(
            json!({"info": info, "data": {"metrics": metrics, "params": params, "tags": tags}, "inputs": {}}),
        )
    }

    /// The automerge URL of a run's live document, once it has one.
    /// A run's live document and its notes document ('' for a run recorded before
    /// notes had a document of their own).
    pub fn run_doc(&self, run_id: &str) -> Result<Option<(String, String)>> {
        self.with(|tx| {
            Ok(tx
                .query_row(
                    "SELECT doc_url, notes_url FROM run_docs WHERE run_id = ?1",
                    [run_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?)
        })
    }

    /// Every run's notes document (those collaborators may edit).
    pub fn run_notes_docs(&self) -> Result<Vec<String>> {
        self.with(|tx| {
            let mut stmt = tx.prepare("SELECT notes_url FROM run_docs WHERE notes_url != ''")?;
            let urls = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(urls)
        })
    }

    /// Records a run's live document and its notes document, and names the live
    /// document in the run's tag `ferrolab.doc`.
    pub fn set_run_doc(&self, run_id: &str, url: &str, notes_url: &str) -> Result<()> {
        self.write_run(run_id, |tx| {
            Self::run_state(tx, run_id)?;
            tx.execute(
                "INSERT OR REPLACE INTO run_docs (run_id, doc_url, notes_url) VALUES (?1, ?2, ?3)",
                params![run_id, url, notes_url],
            )?;
            // The notes document is named in the run document (`notes_url`), not
            // in a second tag: every search answer carries every tag of each run.
            Self::put_tag(tx, run_id, "ferrolab.doc", url)
        })
    }

    pub fn get_run(&self, run_id: &str) -> Result<Value> {
        self.with(|tx| Self::run_json(tx, run_id))
    }

    pub fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        run_name: Option<&str>,
    ) -> Result<Value> {
        if let Some(s) = status {
            if !RUN_STATUSES.contains(&s) {
                return Err(TrackingError::invalid(format!(
                    "invalid run status '{s}'; use one of {}",
                    RUN_STATUSES.join(", ")
                )));
            }
        }
        self.write_run(run_id, |tx| {
            Self::writable(tx, run_id)?;
            if let Some(s) = status {
                tx.execute(
                    "UPDATE runs SET status = ?1 WHERE run_id = ?2",
                    params![s, run_id],
                )?;
            }
            if let Some(t) = end_time {
                tx.execute(
                    "UPDATE runs SET end_time = ?1 WHERE run_id = ?2",
                    params![t, run_id],
                )?;
            }
            if let Some(n) = run_name.filter(|n| !n.is_empty()) {
                tx.execute(
                    "UPDATE runs SET name = ?1 WHERE run_id = ?2",
                    params![n, run_id],
                )?;
                Self::put_tag(tx, run_id, "mlflow.runName", n)?;
            }
            Self::run_info(tx, run_id)
        })
    }

    pub fn delete_run(&self, run_id: &str) -> Result<()> {
        self.write_run(run_id, |tx| {
            Self::run_state(tx, run_id)?;
            tx.execute(
                "UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_id = ?1",
                [run_id],
            )?;
            Ok(())
        })
    }

    fn put_tag(tx: &Transaction<'_>, run_id: &str, key: &str, value: &str) -> Result<()> {
        check_entry("tag", key, value, MAX_TAG_VALUE)?;
        tx.execute(
            "INSERT INTO tags (run_id, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value",
            params![run_id, key, value],
        )?;
        Ok(())
    }

    fn put_param(tx: &Transaction<'_>, run_id: &str, key: &str, value: &str) -> Result<()> {
        check_entry("param", key, value, MAX_PARAM_VALUE)?;
        let before: Option<String> = tx
            .query_row(
                "SELECT value FROM params WHERE run_id = ?1 AND key = ?2",
                params![run_id, key],
                |r| r.get(0),
            )
            .optional()?;
        match before {
            Some(old) if old == value => Ok(()),
            Some(old) => Err(TrackingError::invalid(format!(
                "Changing param values is not allowed. Param with key='{key}' was already logged with value='{old}' for run ID='{run_id}'. Attempted logging new value '{value}'."
            ))),
            None => {
                tx.execute(
                    "INSERT INTO params (run_id, key, value) VALUES (?1, ?2, ?3)",
                    params![run_id, key, value],
                )?;
                Ok(())
            }
        }
    }

    fn put_metric(tx: &Transaction<'_>, run_id: &str, p: &Point) -> Result<()> {
        check_key("metric", &p.key)?;
        let is_nan = p.value.is_nan();
        let stored = if is_nan { None } else { Some(p.value) };
        tx.prepare_cached(
            "INSERT INTO metrics (run_id, key, value, is_nan, timestamp, step) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![run_id, p.key, stored, is_nan as i64, p.timestamp, p.step])?;
        // The latest value: the highest step, then the latest time, then the largest value.
        tx.prepare_cached(
            "INSERT INTO latest_metrics (run_id, key, value, is_nan, timestamp, step) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan,
                 timestamp = excluded.timestamp, step = excluded.step
             WHERE (excluded.step, excluded.timestamp, COALESCE(excluded.value, -1e308))
                 >= (latest_metrics.step, latest_metrics.timestamp, COALESCE(latest_metrics.value, -1e308))",
        )?
        .execute(params![run_id, p.key, stored, is_nan as i64, p.timestamp, p.step])?;
        Ok(())
    }

    pub fn log_param(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        self.write_run(run_id, |tx| {
            Self::writable(tx, run_id)?;
            Self::put_param(tx, run_id, key, value)
        })
    }

    pub fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        self.write_run(run_id, |tx| {
            Self::writable(tx, run_id)?;
            Self::put_tag(tx, run_id, key, value)
        })
    }

    pub fn log_metric(&self, run_id: &str, point: &Point) -> Result<()> {
        self.write_run(run_id, |tx| {
            Self::writable(tx, run_id)?;
            Self::put_metric(tx, run_id, point)
        })
    }

    /// A whole batch, or nothing.
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Point],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()> {
        let limit = |what: &str, n: usize, max: usize| {
            if n > max {
                Err(TrackingError::invalid(format!(
                    "A batch logging request can contain at most {max} {what}. Got {n} {what}. Please split up {what} across multiple requests and try again."
                )))
            } else {
                Ok(())
            }
        };
        limit("metrics", metrics.len(), MAX_BATCH_METRICS)?;
        limit("params", params.len(), MAX_BATCH_PARAMS)?;
        limit("tags", tags.len(), MAX_BATCH_TAGS)?;
        limit(
            "entities",
            metrics.len() + params.len() + tags.len(),
            MAX_BATCH_TOTAL,
        )?;
        let mut seen = BTreeMap::new();
        for (k, v) in params {
            if let Some(old) = seen.insert(k.as_str(), v.as_str()) {
                if old != v {
                    return Err(TrackingError::invalid(format!(
                        "Duplicate parameter keys have been submitted: '{k}' with two values"
                    )));
                }
            }
        }
        self.write_run(run_id, |tx| {
            Self::writable(tx, run_id)?;
            for (k, v) in params {
                Self::put_param(tx, run_id, k, v)?;
            }
            for p in metrics {
                Self::put_metric(tx, run_id, p)?;
            }
            for (k, v) in tags {
                Self::put_tag(tx, run_id, k, v)?;
            }
            Ok(())
        })
    }

    /// Every point of one metric, in step then time order.
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Point>> {
        self.with(|tx| {
            Self::run_state(tx, run_id)?;
            let mut stmt = tx.prepare_cached(
                "SELECT value, is_nan, timestamp, step FROM metrics WHERE run_id = ?1 AND key = ?2
                 ORDER BY step, timestamp, rowid",
            )?;
            let points = stmt
                .query_map(params![run_id, key], |r| {
                    Ok(Point {
                        key: key.to_string(),
                        value: if r.get::<_, i64>(1)? == 1 {
                            f64::NAN
                        } else {
                            r.get(0)?
                        },
                        timestamp: r.get(2)?,
                        step: r.get(3)?,
                    })
                })?
                .collect::<std::result::Result<_, _>>()?;
            Ok(points)
        })
    }

    /// The runs of some experiments (active, deleted or all) as search needs them,
    /// from the cache where it holds them.
    pub fn runs_of(&self, experiment_ids: &[String], view: &str) -> Result<Vec<Arc<CachedRun>>> {
        let ids: Vec<i64> = experiment_ids
            .iter()
            .map(|id| Self::experiment_id(id))
            .collect::<Result<_>>()?;
        let stage = match view {
            "DELETED_ONLY" => Some("deleted"),
            "ALL" => None,
            _ => Some("active"),
        };
        self.with(|tx| {
            let mut out = Vec::new();
            let mut cache = self.run_cache.lock().unwrap_or_else(|e| e.into_inner());
            for exp in &ids {
                let mut stmt = tx.prepare_cached(
                    "SELECT run_id, lifecycle_stage FROM runs WHERE experiment_id = ?1",
                )?;
                let rows: Vec<(String, String)> = stmt
                    .query_map([exp], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<std::result::Result<_, _>>()?;
                for (run_id, stage_of) in rows {
                    if stage.is_some_and(|s| s != stage_of) {
                        continue;
                    }
                    if let Some(hit) = cache.get(&run_id) {
                        out.push(hit.clone());
                        continue;
                    }
                    let json = Self::run_json(tx, &run_id)?;
                    let cached = Arc::new(CachedRun {
                        record: RunRecord::from_json(&json),
                        json: json.to_string(),
                    });
                    if cache.len() >= MAX_CACHED_RUNS {
                        cache.clear();
                    }
                    cache.insert(run_id, cached.clone());
                    out.push(cached);
                }
            }
            Ok(out)
        })
    }
}

/// How many runs the search cache holds before it starts over.
const MAX_CACHED_RUNS: usize = 200_000;

/// A run as search keeps it: the record filters and orders read, and the run's
/// MLflow JSON, serialised once.
#[derive(Debug)]
pub struct CachedRun {
    pub record: RunRecord,
    pub json: String,
}
