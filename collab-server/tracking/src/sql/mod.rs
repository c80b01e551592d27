//! The tracking store on SQL: in SQLite (`DATA/tracking.sqlite`, WAL,
//! synchronous FULL) for the embedded server and the kernel's local tracking, or
//! in PostgreSQL for replicas that share one database (`--database`). The same
//! statements run on both ([`db`]). Experiments, runs, write-once params, tags and
//! metric series here; the registry in [`registry`], artifacts in [`artifacts`],
//! the audit chain in [`audit`]. Every write is one transaction.

pub mod artifacts;
pub(crate) mod audit;
pub(crate) mod db;
pub mod import;
pub mod registry;
mod schema;

use crate::model::*;
use crate::store::{
    check_batch, check_entry, check_key, check_status, now_ms, parse_experiment_id, CachedRun,
    Result, RunStore, TrackingError, MAX_PARAM_VALUE, MAX_TAG_VALUE,
};
use db::{args, Arg, Db, Lock, Tx};
pub use db::{Connect, Connection};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;

pub struct SqlStore {
    db: Db,
    /// Runs as search needs them (record and answer JSON) with the revision they
    /// were read at, filled by searches. Every write to a run raises its
    /// revision (`runs.revision`, in the write's transaction, whichever replica
    /// makes it), and a search uses what is here only at the run's current one.
    run_cache: Mutex<HashMap<String, (i64, Arc<CachedRun>)>>,
    /// Where artifact blobs live (`artifacts/` beside the database, or in the
    /// data folder); only a cache of them when `remote` is set.
    artifacts: std::path::PathBuf,
    /// The object store that holds the artifact blobs (`--artifacts s3://…`).
    pub(crate) remote: Option<crate::remote::RemoteBlobs>,
    /// With `remote`: the most bytes the data folder's copies of its blobs may
    /// take (least recently used go first); `None`: no limit.
    pub(crate) cache_limit: Option<u64>,
    /// Held by the one trim of the cache running at a time.
    pub(crate) trimming: Mutex<()>,
    /// The audit log's key and anchor.
    pub(crate) audit: audit::Audit,
}

/// The PostgreSQL schema the tracking tables live in (beside the collaboration
/// server's own tables, apart from anything else in the database).
pub const POSTGRES_SCHEMA: &str = "ferrolab_tracking";

/// Connections a replica keeps to the database for tracking.
const POSTGRES_CONNECTIONS: usize = 4;

impl SqlStore {
    /// The store in the SQLite file at `path` (made if missing).
    pub fn open_sqlite(path: &Path) -> anyhow::Result<SqlStore> {
        let conn = rusqlite::Connection::open(path)?;
        schema::migrate(&conn)?;
        let audit = audit::Audit::open(path)?;
        let store = SqlStore {
            audit,
            db: Db::Lite(Mutex::new(conn)),
            run_cache: Mutex::new(HashMap::new()),
            artifacts: path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join("artifacts"),
            remote: None,
            cache_limit: None,
            trimming: Mutex::new(()),
        };
        store.default_experiment()?;
        Ok(store)
    }

    /// The store in PostgreSQL (schema [`POSTGRES_SCHEMA`], made if missing),
    /// reached through `connect`. It waits for the database, so it is called from
    /// a blocking thread, like every call of the store. Artifact blobs are cached
    /// in `data/artifacts`.
    pub fn open_postgres(connect: Connect, data: &Path) -> anyhow::Result<SqlStore> {
        let pool = db::Pool::new(connect, POSTGRES_CONNECTIONS, POSTGRES_SCHEMA);
        let db = Db::Pg(pool);
        db.transaction(Lock::Store, |tx| {
            schema::migrate_postgres(tx, POSTGRES_SCHEMA)
        })
        .map_err(|e| anyhow::anyhow!("cannot create the tracking tables: {e}"))?;
        let audit = db
            .transaction(Lock::Store, audit::Audit::open_in_database)
            .map_err(|e| anyhow::anyhow!("cannot read the audit key: {e}"))?;
        let store = SqlStore {
            audit,
            db,
            run_cache: Mutex::new(HashMap::new()),
            artifacts: data.join("artifacts"),
            remote: None,
            cache_limit: None,
            trimming: Mutex::new(()),
        };
        store.default_experiment()?;
        Ok(store)
    }

    /// MLflow's experiment 0, where runs go when no experiment is set.
    fn default_experiment(&self) -> anyhow::Result<()> {
        let now = now_ms();
        self.with(|tx| {
            tx.execute(
                "INSERT INTO experiments (id, name, artifact_location, creation_time, last_update_time)
                 VALUES (0, 'Default', 'mlflow-artifacts:/0', ?1, ?1) ON CONFLICT DO NOTHING",
                args![now],
            )
        })
        .map_err(|e| anyhow::anyhow!("cannot make the Default experiment: {e}"))?;
        Ok(())
    }

    /// Keeps artifact blobs in the S3-compatible store at `url` (`s3://BUCKET/PREFIX`),
    /// the data folder's copies only a cache.
    pub fn with_remote_artifacts(mut self, url: &str) -> anyhow::Result<SqlStore> {
        self.remote = Some(crate::remote::RemoteBlobs::open(url)?);
        Ok(self)
    }

    /// Keeps the data folder's copies of the object store's blobs within `bytes`
    /// (`None`: no limit); see [`SqlStore::trim_cache`].
    pub fn with_artifact_cache_limit(mut self, bytes: Option<u64>) -> SqlStore {
        self.cache_limit = bytes;
        self
    }

    /// Whether other processes (replicas) write this store too.
    pub(crate) fn shared(&self) -> bool {
        matches!(self.db, Db::Pg(_))
    }

    pub(crate) fn artifacts_dir(&self) -> &Path {
        &self.artifacts
    }

    /// A write transaction on one run, which raises the run's revision, so no
    /// search (of any replica) keeps what the write changes. The same statement
    /// reads the run's lifecycle stage, which `f` is given (`None`: no such run),
    /// to check with [`SqlStore::existing`] or [`SqlStore::active`].
    fn write_run<T>(
        &self,
        run_id: &str,
        f: impl FnOnce(&Tx<'_>, Option<String>) -> Result<T>,
    ) -> Result<T> {
        self.transaction(Lock::Run(run_id), |tx| {
            let stage = tx.query_opt(
                "UPDATE runs SET revision = revision + 1 WHERE run_id = ?1 RETURNING lifecycle_stage",
                args![run_id],
                |r| r.get(0),
            )?;
            f(tx, stage)
        })
    }

    /// A run's stage as [`SqlStore::write_run`] read it, or the error for a
    /// missing run.
    fn existing(run_id: &str, stage: Option<String>) -> Result<String> {
        stage.ok_or_else(|| TrackingError::missing(format!("Run with id={run_id} not found")))
    }

    /// Refuses a write to a run that is missing or not active.
    fn active(run_id: &str, stage: Option<String>) -> Result<()> {
        if Self::existing(run_id, stage)? != "active" {
            return Err(TrackingError::invalid(format!(
                "The run {run_id} must be in the 'active' state. Current state is deleted."
            )));
        }
        Ok(())
    }

    /// A transaction that may write anything.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.transaction(Lock::Store, f)
    }

    /// A transaction that only reads.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.transaction(Lock::Read, f)
    }

    fn transaction<T>(&self, lock: Lock<'_>, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        match self.db.transaction(lock, f) {
            Ok(out) => {
                self.audit.after_commit();
                Ok(out)
            }
            Err(error) => {
                self.audit.rolled_back();
                Err(error)
            }
        }
    }

    fn experiment_row(tx: &Tx<'_>, id: i64) -> Result<Option<Experiment>> {
        let row = tx.query_opt(
            "SELECT id, name, artifact_location, lifecycle_stage, creation_time, last_update_time
                 FROM experiments WHERE id = ?1",
            args![id],
            |r| {
                Ok(Experiment {
                    experiment_id: r.get::<i64>(0)?.to_string(),
                    name: r.get(1)?,
                    artifact_location: r.get(2)?,
                    lifecycle_stage: r.get(3)?,
                    creation_time: r.get(4)?,
                    last_update_time: r.get(5)?,
                    tags: Vec::new(),
                })
            },
        )?;
        let Some(mut row) = row else { return Ok(None) };
        row.tags = Self::pairs(
            tx,
            "SELECT key, value FROM experiment_tags WHERE experiment_id = ?1 ORDER BY key",
            &[&id],
        )?;
        Ok(Some(row))
    }

    /// Key-value rows (tags or params) of one query.
    pub(crate) fn pairs(tx: &Tx<'_>, sql: &str, args: &[&dyn Arg]) -> Result<Vec<KeyValue>> {
        let mut stmt = tx.prepare(sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok(KeyValue::new(r.get::<String>(0)?, r.get::<String>(1)?))
        })?;
        rows.collect::<Result<_>>()
    }

    fn run_state(tx: &Tx<'_>, run_id: &str) -> Result<String> {
        tx.query_opt(
            "SELECT lifecycle_stage FROM runs WHERE run_id = ?1",
            args![run_id],
            |r| r.get(0),
        )?
        .ok_or_else(|| TrackingError::missing(format!("Run with id={run_id} not found")))
    }

    fn run_info(tx: &Tx<'_>, run_id: &str) -> Result<RunInfo> {
        tx.query_opt(
            &format!("SELECT {RUN_INFO_COLUMNS} FROM runs WHERE run_id = ?1"),
            args![run_id],
            run_info_row,
        )?
        .ok_or_else(|| TrackingError::missing(format!("Run with id={run_id} not found")))
    }

    fn run_entity(tx: &Tx<'_>, run_id: &str) -> Result<Run> {
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
        let mut stmt = tx.prepare(
            "SELECT key, value, is_nan, timestamp, step FROM latest_metrics WHERE run_id = ?1 ORDER BY key",
        )?;
        let metrics: Vec<Metric> = stmt
            .query_map(args![run_id], |r| latest_metric_row(r, 0))?
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

    fn put_tag(tx: &Tx<'_>, run_id: &str, key: &str, value: &str) -> Result<()> {
        check_entry("tag", key, value, MAX_TAG_VALUE)?;
        tx.execute(
            "INSERT INTO tags (run_id, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value",
            args![run_id, key, value],
        )?;
        Ok(())
    }

    fn put_param(tx: &Tx<'_>, run_id: &str, key: &str, value: &str) -> Result<()> {
        check_entry("param", key, value, MAX_PARAM_VALUE)?;
        let before: Option<String> = tx.query_opt(
            "SELECT value FROM params WHERE run_id = ?1 AND key = ?2",
            args![run_id, key],
            |r| r.get(0),
        )?;
        match before {
            Some(old) if old == value => Ok(()),
            Some(old) => Err(TrackingError::invalid(format!(
                "Changing param values is not allowed. Param with key='{key}' was already logged with value='{old}' for run ID='{run_id}'. Attempted logging new value '{value}'."
            ))),
            None => {
                tx.execute(
                    "INSERT INTO params (run_id, key, value) VALUES (?1, ?2, ?3)",
                    args![run_id, key, value],
                )?;
                Ok(())
            }
        }
    }

    /// Stores metric points: the series in multi-row inserts, and each key's
    /// latest value once.
    fn put_metrics(tx: &Tx<'_>, run_id: &str, points: &[Metric]) -> Result<()> {
        for p in points {
            check_key("metric", &p.key)?;
        }
        let latest = Self::latest_of(points);
        match tx.is_postgres() {
            true => Self::put_metrics_postgres(tx, run_id, points, &latest),
            false => {
                Self::put_points(tx, run_id, points)?;
                Self::put_latest(tx, run_id, &latest)
            }
        }
    }

    /// Metric points in PostgreSQL in one statement (one round trip whatever the
    /// batch): the series' columns as arrays unnested into rows, and each key's
    /// latest value upserted from arrays the same way, in a `WITH` around it.
    fn put_metrics_postgres(
        tx: &Tx<'_>,
        run_id: &str,
        points: &[Metric],
        latest: &[&Metric],
    ) -> Result<()> {
        type Columns<'m> = (Vec<&'m str>, Vec<Option<f64>>, Vec<i64>, Vec<i64>, Vec<i64>);
        fn columns<'m>(points: impl Iterator<Item = &'m Metric> + Clone) -> Columns<'m> {
            (
                points.clone().map(|p| p.key.as_str()).collect(),
                points
                    .clone()
                    .map(|p| (!p.value.is_nan()).then_some(p.value))
                    .collect(),
                points.clone().map(|p| p.value.is_nan() as i64).collect(),
                points.clone().map(|p| p.timestamp).collect(),
                points.map(|p| p.step).collect(),
            )
        }
        let (keys, values, nans, times, steps) = columns(points.iter());
        let (l_keys, l_values, l_nans, l_times, l_steps) = columns(latest.iter().copied());
        tx.execute_postgres(
            "WITH series AS (
                 INSERT INTO metrics (run_id, key, value, is_nan, timestamp, step)
                 SELECT $1, * FROM UNNEST($2::text[], $3::float8[], $4::int8[], $5::int8[], $6::int8[]))
             INSERT INTO latest_metrics (run_id, key, value, is_nan, timestamp, step)
             SELECT $1, * FROM UNNEST($7::text[], $8::float8[], $9::int8[], $10::int8[], $11::int8[])
             ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan,
                 timestamp = excluded.timestamp, step = excluded.step
             WHERE (excluded.step, excluded.timestamp, COALESCE(excluded.value, -1e308))
                 >= (latest_metrics.step, latest_metrics.timestamp, COALESCE(latest_metrics.value, -1e308))",
            &[
                &run_id, &keys, &values, &nans, &times, &steps, &l_keys, &l_values, &l_nans,
                &l_times, &l_steps,
            ],
        )?;
        Ok(())
    }

    /// A metric series' points in multi-row inserts (SQLite).
    fn put_points(tx: &Tx<'_>, run_id: &str, points: &[Metric]) -> Result<()> {
        for chunk in points.chunks(POINTS_PER_INSERT) {
            let stored: Vec<(Option<f64>, i64)> = chunk
                .iter()
                .map(|p| match p.value.is_nan() {
                    true => (None, 1),
                    false => (Some(p.value), 0),
                })
                .collect();
            let mut values: Vec<&dyn Arg> = Vec::with_capacity(chunk.len() * 6);
            for (p, (value, is_nan)) in chunk.iter().zip(&stored) {
                values.extend([
                    &run_id as &dyn Arg,
                    &p.key,
                    value,
                    is_nan,
                    &p.timestamp,
                    &p.step,
                ]);
            }
            tx.execute(&metric_insert(chunk.len()), &values)?;
        }
        Ok(())
    }

    /// Each key's latest value among `points`, kept unless the stored one ranks
    /// higher.
    /// Each key's latest point of `points`: the highest step, then the latest
    /// time, then the largest value (NaN lowest); of equals, the last logged.
    fn latest_of(points: &[Metric]) -> Vec<&Metric> {
        let rank = |p: &Metric| {
            let value = if p.value.is_nan() { -1e308 } else { p.value };
            (p.step, p.timestamp, value)
        };
        let mut latest: std::collections::BTreeMap<&str, &Metric> = Default::default();
        for p in points {
            match latest.get(p.key.as_str()) {
                Some(best)
                    if rank(p).partial_cmp(&rank(best)) == Some(std::cmp::Ordering::Less) => {}
                _ => {
                    latest.insert(&p.key, p);
                }
            }
        }
        latest.into_values().collect()
    }

    /// Each key's latest value (SQLite), kept where it is newer than the stored one.
    fn put_latest(tx: &Tx<'_>, run_id: &str, latest: &[&Metric]) -> Result<()> {
        for p in latest {
            let is_nan = p.value.is_nan();
            let stored = if is_nan { None } else { Some(p.value) };
            tx.execute(
                "INSERT INTO latest_metrics (run_id, key, value, is_nan, timestamp, step) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan,
                     timestamp = excluded.timestamp, step = excluded.step
                 WHERE (excluded.step, excluded.timestamp, COALESCE(excluded.value, -1e308))
                     >= (latest_metrics.step, latest_metrics.timestamp, COALESCE(latest_metrics.value, -1e308))",
                args![run_id, p.key, stored, is_nan as i64, p.timestamp, p.step],
            )?;
        }
        Ok(())
    }

    /// Every run of experiment `exp` whose id is in `wanted`, read in four queries
    /// (not four per run: on PostgreSQL each query is a round trip).
    fn runs_in(
        tx: &Tx<'_>,
        exp: i64,
        wanted: &std::collections::HashSet<&str>,
    ) -> Result<HashMap<String, Run>> {
        let mut runs: HashMap<String, Run> = HashMap::new();
        let infos = tx.query(
            &format!("SELECT {RUN_INFO_COLUMNS} FROM runs WHERE experiment_id = ?1"),
            args![exp],
            run_info_row,
        )?;
        for info in infos {
            if wanted.contains(info.run_id.as_str()) {
                let run = Run {
                    info,
                    data: RunData::default(),
                    inputs: RunInputs::default(),
                };
                runs.insert(run.info.run_id.clone(), run);
            }
        }
        for (table, params) in [("params", true), ("tags", false)] {
            let rows = tx.query(
                &format!(
                    "SELECT t.run_id, t.key, t.value FROM {table} t JOIN runs r ON r.run_id = t.run_id
                     WHERE r.experiment_id = ?1 ORDER BY t.run_id, t.key"
                ),
                args![exp],
                |r| Ok((r.get::<String>(0)?, KeyValue::new(r.get::<String>(1)?, r.get::<String>(2)?))),
            )?;
            for (run_id, pair) in rows {
                if let Some(run) = runs.get_mut(&run_id) {
                    match params {
                        true => run.data.params.push(pair),
                        false => run.data.tags.push(pair),
                    }
                }
            }
        }
        let rows = tx.query(
            "SELECT m.run_id, m.key, m.value, m.is_nan, m.timestamp, m.step FROM latest_metrics m
             JOIN runs r ON r.run_id = m.run_id WHERE r.experiment_id = ?1 ORDER BY m.run_id, m.key",
            args![exp],
            |r| Ok((r.get::<String>(0)?, latest_metric_row(r, 1)?)),
        )?;
        for (run_id, metric) in rows {
            if let Some(run) = runs.get_mut(&run_id) {
                run.data.metrics.push(metric);
            }
        }
        Ok(runs)
    }
}

/// Metric points one insert statement carries at most: MLflow's batch limit, so a
/// batch is one statement (6,000 values, under either database's limit).
const POINTS_PER_INSERT: usize = 1000;

/// `INSERT INTO metrics … VALUES (…), (…)` for `rows` points.
fn metric_insert(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO metrics (run_id, key, value, is_nan, timestamp, step) VALUES ");
    for row in 0..rows {
        let n = row * 6;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6
        ));
    }
    sql
}

/// The columns [`run_info_row`] reads.
const RUN_INFO_COLUMNS: &str =
    "run_id, experiment_id, name, user_id, status, start_time, end_time, lifecycle_stage, artifact_uri";

fn run_info_row(r: &db::Row<'_>) -> Result<RunInfo> {
    let run_id: String = r.get(0)?;
    Ok(RunInfo {
        run_uuid: run_id.clone(),
        run_id,
        experiment_id: r.get::<i64>(1)?.to_string(),
        run_name: r.get(2)?,
        user_id: r.get(3)?,
        status: r.get(4)?,
        start_time: r.get(5)?,
        end_time: r.get(6)?,
        lifecycle_stage: r.get(7)?,
        artifact_uri: r.get(8)?,
    })
}

/// A latest value (`key, value, is_nan, timestamp, step` from column `at`).
fn latest_metric_row(r: &db::Row<'_>, at: usize) -> Result<Metric> {
    Ok(Metric {
        key: r.get(at)?,
        value: if r.get::<i64>(at + 2)? == 1 {
            f64::NAN
        } else {
            r.get(at + 1)?
        },
        timestamp: r.get(at + 3)?,
        step: r.get(at + 4)?,
    })
}

impl RunStore for SqlStore {
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
                .query_opt("SELECT id FROM experiments WHERE name = ?1", args![name], |r| r.get(0))?;
            if taken.is_some() {
                return Err(TrackingError::exists(format!(
                    "Experiment(name={name}) already exists. Error: an experiment with this name exists"
                )));
            }
            let now = now_ms();
            let id: i64 = tx.query_one("SELECT COALESCE(MAX(id), 0) + 1 FROM experiments", args![], |r| r.get(0))?;
            let location = artifact_location
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("mlflow-artifacts:/{id}"));
            tx.execute(
                "INSERT INTO experiments (id, name, artifact_location, creation_time, last_update_time)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                args![id, name, location, now],
            )?;
            for (k, v) in tags {
                check_key("tag", k)?;
                tx.execute(
                    "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                    args![id, k, v],
                )?;
            }
            Ok(id.to_string())
        })
    }

    fn get_experiment(&self, id: &str) -> Result<Experiment> {
        let n = parse_experiment_id(id)?;
        self.read(|tx| {
            Self::experiment_row(tx, n)?
                .ok_or_else(|| TrackingError::missing(format!("No Experiment with id={id} exists")))
        })
    }

    fn get_experiment_by_name(&self, name: &str) -> Result<Experiment> {
        self.read(|tx| {
            let id: Option<i64> = tx.query_opt(
                "SELECT id FROM experiments WHERE name = ?1",
                args![name],
                |r| r.get(0),
            )?;
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
        self.read(|tx| {
            let stage = match view {
                ViewType::DeletedOnly => "lifecycle_stage = 'deleted'",
                ViewType::All => "TRUE",
                ViewType::ActiveOnly => "lifecycle_stage = 'active'",
            };
            let mut stmt = tx.prepare(&format!(
                "SELECT id FROM experiments WHERE {stage} ORDER BY creation_time DESC, id DESC"
            ))?;
            let ids: Vec<i64> = stmt
                .query_map(args![], |r| r.get(0))?
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
                .query_opt("SELECT lifecycle_stage FROM experiments WHERE id = ?1", args![exp], |r| r.get(0))?;
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
                args![
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
        self.read(|tx| {
            tx.query_opt(
                "SELECT doc_url, notes_url FROM run_docs WHERE run_id = ?1",
                args![run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// Every run's notes document (those collaborators may edit).
    fn run_notes_docs(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let mut stmt = tx.prepare("SELECT notes_url FROM run_docs WHERE notes_url != ''")?;
            let urls = stmt
                .query_map(args![], |r| r.get(0))?
                .collect::<Result<_>>()?;
            Ok(urls)
        })
    }

    /// Records a run's live document and its notes document, and names the live
    /// document in the run's tag `ferrolab.doc`.
    fn set_run_doc(&self, run_id: &str, url: &str, notes_url: &str) -> Result<()> {
        self.write_run(run_id, |tx, stage| {
            Self::existing(run_id, stage)?;
            tx.execute(
                "INSERT INTO run_docs (run_id, doc_url, notes_url) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id) DO UPDATE SET doc_url = excluded.doc_url, notes_url = excluded.notes_url",
                args![run_id, url, notes_url],
            )?;
            // The notes document is named in the run document (`notes_url`), not
            // in a second tag: every search answer carries every tag of each run.
            Self::put_tag(tx, run_id, "ferrolab.doc", url)
        })
    }

    fn get_run(&self, run_id: &str) -> Result<Run> {
        self.read(|tx| Self::run_entity(tx, run_id))
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
        self.write_run(run_id, |tx, stage| {
            Self::active(run_id, stage)?;
            if let Some(s) = status {
                tx.execute(
                    "UPDATE runs SET status = ?1 WHERE run_id = ?2",
                    args![s, run_id],
                )?;
            }
            if let Some(t) = end_time {
                tx.execute(
                    "UPDATE runs SET end_time = ?1 WHERE run_id = ?2",
                    args![t, run_id],
                )?;
            }
            if let Some(n) = run_name.filter(|n| !n.is_empty()) {
                tx.execute(
                    "UPDATE runs SET name = ?1 WHERE run_id = ?2",
                    args![n, run_id],
                )?;
                Self::put_tag(tx, run_id, "mlflow.runName", n)?;
            }
            Self::run_info(tx, run_id)
        })
    }

    fn delete_run(&self, run_id: &str) -> Result<()> {
        self.write_run(run_id, |tx, stage| {
            Self::existing(run_id, stage)?;
            tx.execute(
                "UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_id = ?1",
                args![run_id],
            )?;
            Ok(())
        })
    }

    fn log_param(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        self.write_run(run_id, |tx, stage| {
            Self::active(run_id, stage)?;
            Self::put_param(tx, run_id, key, value)
        })
    }

    fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        self.write_run(run_id, |tx, stage| {
            Self::active(run_id, stage)?;
            Self::put_tag(tx, run_id, key, value)
        })
    }

    fn log_metric(&self, run_id: &str, point: &Metric) -> Result<()> {
        self.write_run(run_id, |tx, stage| {
            Self::active(run_id, stage)?;
            Self::put_metrics(tx, run_id, std::slice::from_ref(point))
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
        self.write_run(run_id, |tx, stage| {
            Self::active(run_id, stage)?;
            for (k, v) in params {
                Self::put_param(tx, run_id, k, v)?;
            }
            Self::put_metrics(tx, run_id, metrics)?;
            for (k, v) in tags {
                Self::put_tag(tx, run_id, k, v)?;
            }
            Ok(())
        })
    }

    /// Every point of one metric, in step then time order.
    fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        self.read(|tx| {
            Self::run_state(tx, run_id)?;
            let mut stmt = tx.prepare(
                "SELECT value, is_nan, timestamp, step FROM metrics WHERE run_id = ?1 AND key = ?2
                 ORDER BY step, timestamp, rowid",
            )?;
            let points = stmt
                .query_map(args![run_id, key], |r| {
                    Ok(Metric {
                        key: key.to_string(),
                        value: if r.get::<i64>(1)? == 1 {
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
        self.read(|tx| {
            let mut out = Vec::new();
            let mut cache = self.run_cache.lock().unwrap_or_else(|e| e.into_inner());
            for exp in &ids {
                let rows: Vec<(String, String, i64)> = tx.query(
                    "SELECT run_id, lifecycle_stage, revision FROM runs WHERE experiment_id = ?1",
                    args![exp],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                let shown: Vec<(String, i64)> = rows
                    .into_iter()
                    .filter(|(_, stage_of, _)| view.shows(stage_of))
                    .map(|(run_id, _, revision)| (run_id, revision))
                    .collect();
                let current =
                    |cache: &HashMap<String, (i64, Arc<CachedRun>)>, id: &str, revision: i64| {
                        cache
                            .get(id)
                            .filter(|(seen, _)| *seen == revision)
                            .map(|(_, run)| run.clone())
                    };
                let missing: std::collections::HashSet<&str> = shown
                    .iter()
                    .filter(|(id, revision)| current(&cache, id, *revision).is_none())
                    .map(|(id, _)| id.as_str())
                    .collect();
                // Many runs to read: the whole experiment at once.
                let mut loaded = match missing.len() > BULK_READ_RUNS {
                    true => Self::runs_in(tx, *exp, &missing)?,
                    false => HashMap::new(),
                };
                for (run_id, revision) in shown.iter().cloned() {
                    if let Some(hit) = current(&cache, &run_id, revision) {
                        out.push(hit);
                        continue;
                    }
                    let run = match loaded.remove(&run_id) {
                        Some(run) => run,
                        None => Self::run_entity(tx, &run_id)?,
                    };
                    let cached = Arc::new(CachedRun::new(&run)?);
                    if cache.len() >= MAX_CACHED_RUNS {
                        cache.clear();
                    }
                    cache.insert(run_id, (revision, cached.clone()));
                    out.push(cached);
                }
            }
            Ok(out)
        })
    }
}

/// Above this many runs to read for a search, an experiment's runs are read at once.
const BULK_READ_RUNS: usize = 4;

/// How many runs the search cache holds before it starts over.
const MAX_CACHED_RUNS: usize = 200_000;
