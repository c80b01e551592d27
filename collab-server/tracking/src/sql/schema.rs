//! The tracking database's tables, created (or added to an older file) when a store
//! opens: runs and experiments, then the registry and governance tables, then
//! artifacts; in SQLite ([`migrate`]) or PostgreSQL ([`migrate_postgres`]). Every
//! statement is idempotent, so opening an existing database is safe.

use super::db::Tx;
use rusqlite::Connection;

/// Brings the database at `conn` to the current schema.
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    runs(conn)?;
    registry(conn)?;
    version_identity(conn)?;
    add_column(conn, "run_docs", "notes_url", "TEXT NOT NULL DEFAULT ''")?;
    add_column(conn, "runs", "revision", "INTEGER NOT NULL DEFAULT 0")?;
    artifacts(conn)?;
    server_evaluations(conn)
}

/// Evaluations the server ran itself on a version's own adapter: the only evidence
/// the promotion policy counts (a run a client logged says whatever the client
/// wrote). Bound to the version's identity, like reviews; no API writes here but the
/// server's evaluation.
fn server_evaluations(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS server_evaluations (
             id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version INTEGER NOT NULL,
             version_uid TEXT NOT NULL, adapter_digest TEXT NOT NULL, run_id TEXT NOT NULL,
             requested_by TEXT NOT NULL, pass_rate REAL NOT NULL, tests INTEGER NOT NULL,
             suite_sha256 TEXT NOT NULL, timestamp INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS server_evaluations_by_uid ON server_evaluations(version_uid);",
    )
}

/// Adds `column` to `table` unless it is there.
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let has = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .iter()
        .any(|c| c == column);
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// A version's identity, which no later version ever has: a random `uid` and the
/// adapter digest it was registered with; the highest number each model name ever
/// used (so a deleted and re-created model never hands out a number again); and
/// reviews bound to that identity. Files from before get uids now, and each old
/// review binds to the version that existed when it was written.
fn version_identity(conn: &Connection) -> rusqlite::Result<()> {
    add_column(conn, "model_versions", "uid", "TEXT NOT NULL DEFAULT ''")?;
    add_column(
        conn,
        "model_versions",
        "adapter_digest",
        "TEXT NOT NULL DEFAULT ''",
    )?;
    add_column(
        conn,
        "model_reviews",
        "version_uid",
        "TEXT NOT NULL DEFAULT ''",
    )?;
    add_column(
        conn,
        "model_reviews",
        "adapter_digest",
        "TEXT NOT NULL DEFAULT ''",
    )?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS model_version_numbers (
             name TEXT PRIMARY KEY, last INTEGER NOT NULL);
         UPDATE model_versions SET uid = lower(hex(randomblob(16))) WHERE uid = '';
         UPDATE model_reviews SET version_uid = COALESCE((
             SELECT v.uid FROM model_versions v
             WHERE v.name = model_reviews.name AND v.version = model_reviews.version
               AND v.creation_timestamp <= model_reviews.timestamp), '-')
         WHERE version_uid = '';
         INSERT OR IGNORE INTO model_version_numbers (name, last)
             SELECT name, MAX(version) FROM (
                 SELECT name, version FROM model_versions
                 UNION ALL SELECT name, version FROM model_reviews
                 UNION ALL SELECT model AS name, CAST(version AS INTEGER) FROM audit_log
                     WHERE version GLOB '[0-9]*')
             GROUP BY name;",
    )
}

/// Experiments, runs, params, tags and metric series.
fn runs(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;
             CREATE TABLE IF NOT EXISTS experiments (
                 id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, artifact_location TEXT NOT NULL,
                 lifecycle_stage TEXT NOT NULL DEFAULT 'active', creation_time INTEGER NOT NULL,
                 last_update_time INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS experiment_tags (
                 experiment_id INTEGER NOT NULL REFERENCES experiments(id), key TEXT NOT NULL,
                 value TEXT NOT NULL, PRIMARY KEY (experiment_id, key));
             CREATE TABLE IF NOT EXISTS runs (
                 run_id TEXT PRIMARY KEY, experiment_id INTEGER NOT NULL REFERENCES experiments(id),
                 name TEXT NOT NULL, user_id TEXT NOT NULL, author TEXT NOT NULL,
                 status TEXT NOT NULL, start_time INTEGER NOT NULL, end_time INTEGER,
                 lifecycle_stage TEXT NOT NULL DEFAULT 'active', artifact_uri TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs(experiment_id, start_time);
             CREATE TABLE IF NOT EXISTS params (
                 run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value TEXT NOT NULL,
                 PRIMARY KEY (run_id, key));
             CREATE TABLE IF NOT EXISTS tags (
                 run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value TEXT NOT NULL,
                 PRIMARY KEY (run_id, key));
             CREATE TABLE IF NOT EXISTS metrics (
                 run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value REAL,
                 is_nan INTEGER NOT NULL, timestamp INTEGER NOT NULL, step INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS metrics_by_key ON metrics(run_id, key, step, timestamp);
             CREATE TABLE IF NOT EXISTS latest_metrics (
                 run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value REAL,
                 is_nan INTEGER NOT NULL, timestamp INTEGER NOT NULL, step INTEGER NOT NULL,
                 PRIMARY KEY (run_id, key));
             CREATE TABLE IF NOT EXISTS run_docs (
                 run_id TEXT PRIMARY KEY REFERENCES runs(run_id), doc_url TEXT NOT NULL);",
        )?;
    Ok(())
}

/// Registered models, versions, aliases, tags, reviews, evaluation links, the
/// promotion policy and the audit log.
fn registry(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS registered_models (
             name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', created_by TEXT NOT NULL,
             creation_timestamp INTEGER NOT NULL, last_updated_timestamp INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS registered_model_tags (
             name TEXT NOT NULL REFERENCES registered_models(name) ON DELETE CASCADE,
             key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (name, key));
         CREATE TABLE IF NOT EXISTS model_versions (
             name TEXT NOT NULL REFERENCES registered_models(name) ON DELETE CASCADE,
             version INTEGER NOT NULL, author TEXT NOT NULL, source TEXT NOT NULL,
             run_id TEXT NOT NULL DEFAULT '', description TEXT NOT NULL DEFAULT '',
             lineage TEXT NOT NULL DEFAULT '{}', creation_timestamp INTEGER NOT NULL,
             last_updated_timestamp INTEGER NOT NULL, PRIMARY KEY (name, version));
         CREATE TABLE IF NOT EXISTS model_version_tags (
             name TEXT NOT NULL, version INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
             PRIMARY KEY (name, version, key),
             FOREIGN KEY (name, version) REFERENCES model_versions(name, version) ON DELETE CASCADE);
         CREATE TABLE IF NOT EXISTS model_aliases (
             name TEXT NOT NULL REFERENCES registered_models(name) ON DELETE CASCADE,
             alias TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (name, alias));
         CREATE TABLE IF NOT EXISTS model_evaluations (
             name TEXT NOT NULL, version INTEGER NOT NULL, run_id TEXT NOT NULL,
             PRIMARY KEY (name, version, run_id),
             FOREIGN KEY (name, version) REFERENCES model_versions(name, version) ON DELETE CASCADE);
         CREATE TABLE IF NOT EXISTS model_reviews (
             id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version INTEGER NOT NULL,
             reviewer TEXT NOT NULL, decision TEXT NOT NULL, comment TEXT NOT NULL,
             timestamp INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS governance_policy (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS audit_log (
             seq INTEGER PRIMARY KEY AUTOINCREMENT, timestamp INTEGER NOT NULL, actor TEXT NOT NULL,
             action TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
             before TEXT NOT NULL, after TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
         CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
             BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
         CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
             BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    )
}

/// Artifact paths and the blobs they name.
fn artifacts(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS artifacts (
             path TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(run_id),
             sha256 TEXT NOT NULL, size INTEGER NOT NULL, created INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS artifacts_by_run ON artifacts(run_id);",
    )
}

/// The tables in PostgreSQL, in `schema` (the same tables as in SQLite, with
/// PostgreSQL's types; text compares bytewise, as SQLite does). Every statement
/// is idempotent; the caller holds the store's lock, so replicas starting
/// together do not race. The metric series, the one table written a thousand
/// rows at a time, has no key of its own and no foreign key (checking the run
/// for each row doubled a batch's time): every write checks its run under the
/// run's lock first, and runs are never removed, only marked deleted.
pub(crate) fn migrate_postgres(tx: &Tx<'_>, schema: &str) -> crate::Result<()> {
    tx.batch(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema};"
    ))?;
    tx.batch(&POSTGRES_TABLES.replace("TEXT", "TEXT COLLATE \"C\""))
}

const POSTGRES_TABLES: &str = "
CREATE TABLE IF NOT EXISTS experiments (
    id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE, artifact_location TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active', creation_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS experiment_tags (
    experiment_id BIGINT NOT NULL REFERENCES experiments(id), key TEXT NOT NULL,
    value TEXT NOT NULL, PRIMARY KEY (experiment_id, key));
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, experiment_id BIGINT NOT NULL REFERENCES experiments(id),
    name TEXT NOT NULL, user_id TEXT NOT NULL, author TEXT NOT NULL,
    status TEXT NOT NULL, start_time BIGINT NOT NULL, end_time BIGINT,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active', artifact_uri TEXT NOT NULL,
    revision BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs(experiment_id, start_time);
CREATE TABLE IF NOT EXISTS params (
    run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (run_id, key));
CREATE TABLE IF NOT EXISTS tags (
    run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (run_id, key));
CREATE TABLE IF NOT EXISTS metrics (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
    run_id TEXT NOT NULL, key TEXT NOT NULL, value DOUBLE PRECISION,
    is_nan BIGINT NOT NULL, timestamp BIGINT NOT NULL, step BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS metrics_by_key ON metrics(run_id, key, step, timestamp, rowid);
CREATE TABLE IF NOT EXISTS latest_metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id), key TEXT NOT NULL, value DOUBLE PRECISION,
    is_nan BIGINT NOT NULL, timestamp BIGINT NOT NULL, step BIGINT NOT NULL,
    PRIMARY KEY (run_id, key));
CREATE TABLE IF NOT EXISTS run_docs (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id), doc_url TEXT NOT NULL,
    notes_url TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS registered_models (
    name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', created_by TEXT NOT NULL,
    creation_timestamp BIGINT NOT NULL, last_updated_timestamp BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS registered_model_tags (
    name TEXT NOT NULL REFERENCES registered_models(name) ON DELETE CASCADE,
    key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (name, key));
CREATE TABLE IF NOT EXISTS model_versions (
    name TEXT NOT NULL REFERENCES registered_models(name) ON DELETE CASCADE,
    version BIGINT NOT NULL, author TEXT NOT NULL, source TEXT NOT NULL,
    run_id TEXT NOT NULL DEFAULT '', description TEXT NOT NULL DEFAULT '',
    lineage TEXT NOT NULL DEFAULT '{}', creation_timestamp BIGINT NOT NULL,
    last_updated_timestamp BIGINT NOT NULL, uid TEXT NOT NULL DEFAULT '',
    adapter_digest TEXT NOT NULL DEFAULT '', PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS model_version_tags (
    name TEXT NOT NULL, version BIGINT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (name, version, key),
    FOREIGN KEY (name, version) REFERENCES model_versions(name, version) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS model_aliases (
    name TEXT NOT NULL REFERENCES registered_models(name) ON DELETE CASCADE,
    alias TEXT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (name, alias));
CREATE TABLE IF NOT EXISTS model_evaluations (
    name TEXT NOT NULL, version BIGINT NOT NULL, run_id TEXT NOT NULL,
    PRIMARY KEY (name, version, run_id),
    FOREIGN KEY (name, version) REFERENCES model_versions(name, version) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS model_reviews (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, version BIGINT NOT NULL,
    reviewer TEXT NOT NULL, decision TEXT NOT NULL, comment TEXT NOT NULL,
    timestamp BIGINT NOT NULL, version_uid TEXT NOT NULL DEFAULT '',
    adapter_digest TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS model_version_numbers (name TEXT PRIMARY KEY, last BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS governance_policy (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS server_evaluations (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, version BIGINT NOT NULL,
    version_uid TEXT NOT NULL, adapter_digest TEXT NOT NULL, run_id TEXT NOT NULL,
    requested_by TEXT NOT NULL, pass_rate DOUBLE PRECISION NOT NULL, tests BIGINT NOT NULL,
    suite_sha256 TEXT NOT NULL, timestamp BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS server_evaluations_by_uid ON server_evaluations(version_uid);
CREATE TABLE IF NOT EXISTS artifacts (
    path TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(run_id),
    sha256 TEXT NOT NULL, size BIGINT NOT NULL, created BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS artifacts_by_run ON artifacts(run_id);
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGSERIAL PRIMARY KEY, timestamp BIGINT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
    before TEXT NOT NULL, after TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_key (id BIGINT PRIMARY KEY CHECK (id = 1), key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_anchor (id BIGINT PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
";
