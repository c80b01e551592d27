//! The tracking store in SQLite (`DATA/tracking.sqlite`, WAL, synchronous FULL):
//! the [`Store`](crate::Store) of the embedded server and of the kernel's local
//! tracking. Experiments, runs, write-once params, tags and metric series here; the
//! registry in [`registry`], artifacts in [`artifacts`], the audit chain in
//! [`audit`]. Every write is one transaction.

pub mod artifacts;
pub(crate) mod audit;
pub mod registry;
mod schema;

use crate::model::*;
use crate::store::{
    check_batch, check_entry, check_key, check_status, now_ms, parse_experiment_id, CachedRun,
    Result, RunStore, TrackingError, MAX_PARAM_VALUE, MAX_TAG_VALUE,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Runs as search needs them (record and answer JSON), filled by searches and
    /// emptied of a run by every write to it, under the connection's lock.
    run_cache: Mutex<HashMap<String, Arc<CachedRun>>>,
    /// Where artifact blobs live (`artifacts/` beside the database); only a
    /// cache of them when `remote` is set.
    artifacts: std::path::PathBuf,
    /// The object store that holds the artifact blobs (`--artifacts s3://…`).
    pub(crate) remote: Option<crate::remote::RemoteBlobs>,
    /// The audit log's key and anchor.
    pub(crate) audit: audit::Audit,
}

impl SqliteStore {
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        let conn = Connection::open(path)?;
        schema::migrate(&conn)?;
        let now = now_ms();
        // MLflow's experiment 0, where runs go when no experiment is set.
        conn.execute(
            "INSERT OR IGNORE INTO experiments (id, name, artifact_location, creation_time, last_update_time)
             VALUES (0, 'Default', 'mlflow-artifacts:/0', ?1, ?1)",
            params![now],
        )?;
        let audit = audit::Audit::open(path)?;
        Ok(SqliteStore {
            audit,
            conn: Mutex::new(conn),
            run_cache: Mutex::new(HashMap::new()),
            artifacts: path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join("artifacts"),
            remote: None,
        })
    }

    /// Keeps artifact blobs in the S3-compatible store at `url` (`s3://BUCKET/PREFIX`),
    /// the data folder's copies only a cache.
    pub fn with_remote_artifacts(mut self, url: &str) -> anyhow::Result<SqliteStore> {
        self.remote = Some(crate::remote::RemoteBlobs::open(url)?);
        Ok(self)
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

    fn experiment_row(tx: &Transaction<'_>, id: i64) -> Result<Option<Experiment>> {
        let row = tx
            .query_row(
                "SELECT id, name, artifact_location, lifecycle_stage, creation_time, last_update_time
                 FROM experiments WHERE id = ?1",
                [id],
                |r| {
                    Ok(Experiment {
                        experiment_id: r.get::<_, i64>(0)?.to_string(),
                        name: r.get(1)?,
                        artifact_location: r.get(2)?,
                        lifecycle_stage: r.get(3)?,
                        creation_time: r.get(4)?,
                        last_update_time: r.get(5)?,
                        tags: Vec::new(),
                    })
                },
            )
            .optional()?;
        let Some(mut row) = row else { return Ok(None) };
        row.tags = Self::pairs(
            tx,
            "SELECT key, value FROM experiment_tags WHERE experiment_id = ?1 ORDER BY key",
            &[&id],
        )?;
        Ok(Some(row))
    }

    /// Key-value rows (tags or params) of one query.
    pub(crate) fn pairs(
        tx: &Transaction<'_>,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<KeyValue>> {
        let mut stmt = tx.prepare_cached(sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok(KeyValue::new(
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
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

    fn run_info(tx: &Transaction<'_>, run_id: &str) -> Result<RunInfo> {
        tx.query_row(
            "SELECT run_id, experiment_id, name, user_id, status, start_time, end_time, lifecycle_stage, artifact_uri
             FROM runs WHERE run_id = ?1",
            [run_id],
            |r| {
                let run_id: String = r.get(0)?;
                Ok(RunInfo {
                    run_uuid: run_id.clone(),
                    run_id,
                    experiment_id: r.get::<_, i64>(1)?.to_string(),
                    run_name: r.get(2)?,
                    user_id: r.get(3)?,
                    status: r.get(4)?,
                    start_time: r.get(5)?,
                    end_time: r.get(6)?,
                    lifecycle_stage: r.get(7)?,
                    artifact_uri: r.get(8)?,
                })
            },
        )
        .optional()?
        .ok_or_else(|| TrackingError::missing(format!("Run with id={run_id} not found")))
    }

    fn run_entity(tx: &Transaction<'_>, run_id: &str) -> Result<Run> {
        let info = Self::run_info(tx, run_id)?;
        let params = Self::pairs(
            tx,
            "SELECT key, value FROM params WHERE run_id = ?1 ORDER BY key",
            &[&run_id],
        )?;
        let tags = Self::pairs(
            tx,
            "SELECT key, value FROM tags WHERE run_id = ?1 ORDER BY key",
            &[&run_id],
        )?;
        let mut stmt = tx.prepare_cached(
            "SELECT key, value, is_nan, timestamp, step FROM latest_metrics WHERE run_id = ?1 ORDER BY key",
        )?;
        let metrics: Vec<Metric> = stmt
            .query_map([run_id], |r| {
                Ok(Metric {
                    key: r.get(0)?,
                    value: if r.get::<_, i64>(2)? == 1 {
                        f64::NAN
                    } else {
                        r.get(1)?
                    },
                    timestamp: r.get(3)?,
                    step: r.get(4)?,
                })
            })?
            .collect::<std::result::Result<_, _>>()?;
        Ok(Run {
            info,
            data: RunData {
                metrics,
                params,
                tags,
            },
            inputs: RunInputs::default(),
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

    fn put_metric(tx: &Transaction<'_>, run_id: &str, p: &Metric) -> Result<()> {
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
}

impl RunStore for SqliteStore {
    // ------------------------------------------------------------ experiments

    fn create_experiment(
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

    fn get_experiment(&self, id: &str) -> Result<Experiment> {
        let n = parse_experiment_id(id)?;
        self.with(|tx| {
            Self::experiment_row(tx, n)?
                .ok_or_else(|| TrackingError::missing(format!("No Experiment with id={id} exists")))
        })
    }

    fn get_experiment_by_name(&self, name: &str) -> Result<Experiment> {
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
    fn search_experiments(
        &self,
        view: ViewType,
        filter: &str,
        max_results: usize,
        offset: usize,
    ) -> Result<Page<Experiment>> {
        let clauses = crate::search::registry_filter(filter, &["name", "tags"])?;
        self.with(|tx| {
            let stage = match view {
                ViewType::DeletedOnly => "lifecycle_stage = 'deleted'",
                ViewType::All => "1",
                ViewType::ActiveOnly => "lifecycle_stage = 'active'",
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
                if crate::search::filter_matches(&clauses, |key| {
                    crate::search::field(key, &e.name, &e.tags)
                }) {
                    hits.push(e);
                }
            }
            let more = hits.len() > offset + max_results;
            Ok(Page {
                items: hits.into_iter().skip(offset).take(max_results).collect(),
                next_page_token: more.then(|| (offset + max_results).to_string()),
            })
        })
    }

    // ------------------------------------------------------------ runs

    fn create_run(
        &self,
        experiment_id: &str,
        user_id: &str,
        author: &str,
        run_name: Option<&str>,
        start_time: Option<i64>,
        tags: &[(String, String)],
    ) -> Result<Run> {
        let exp = parse_experiment_id(experiment_id)?;
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
            Self::run_entity(tx, &run_id)
        })
    }

    /// A run's live document and its notes document ('' for a run recorded before
    /// notes had a document of their own).
    fn run_doc(&self, run_id: &str) -> Result<Option<(String, String)>> {
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
    fn run_notes_docs(&self) -> Result<Vec<String>> {
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
    fn set_run_doc(&self, run_id: &str, url: &str, notes_url: &str) -> Result<()> {
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

    fn get_run(&self, run_id: &str) -> Result<Run> {
        self.with(|tx| Self::run_entity(tx, run_id))
    }

    fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        run_name: Option<&str>,
    ) -> Result<RunInfo> {
        if let Some(s) = status {
            check_status(s)?;
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

    fn delete_run(&self, run_id: &str) -> Result<()> {
        self.write_run(run_id, |tx| {
            Self::run_state(tx, run_id)?;
            tx.execute(
                "UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_id = ?1",
                [run_id],
            )?;
            Ok(())
        })
    }

    fn log_param(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        self.write_run(run_id, |tx| {
            Self::writable(tx, run_id)?;
            Self::put_param(tx, run_id, key, value)
        })
    }

    fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        self.write_run(run_id, |tx| {
            Self::writable(tx, run_id)?;
            Self::put_tag(tx, run_id, key, value)
        })
    }

    fn log_metric(&self, run_id: &str, point: &Metric) -> Result<()> {
        self.write_run(run_id, |tx| {
            Self::writable(tx, run_id)?;
            Self::put_metric(tx, run_id, point)
        })
    }

    /// A whole batch, or nothing.
    fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()> {
        check_batch(metrics, params, tags)?;
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
    fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        self.with(|tx| {
            Self::run_state(tx, run_id)?;
            let mut stmt = tx.prepare_cached(
                "SELECT value, is_nan, timestamp, step FROM metrics WHERE run_id = ?1 AND key = ?2
                 ORDER BY step, timestamp, rowid",
            )?;
            let points = stmt
                .query_map(params![run_id, key], |r| {
                    Ok(Metric {
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
    fn runs_of(&self, experiment_ids: &[String], view: ViewType) -> Result<Vec<Arc<CachedRun>>> {
        let ids: Vec<i64> = experiment_ids
            .iter()
            .map(|id| parse_experiment_id(id))
            .collect::<Result<_>>()?;
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
                    if !view.shows(&stage_of) {
                        continue;
                    }
                    if let Some(hit) = cache.get(&run_id) {
                        out.push(hit.clone());
                        continue;
                    }
                    let cached = Arc::new(CachedRun::new(&Self::run_entity(tx, &run_id)?)?);
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
