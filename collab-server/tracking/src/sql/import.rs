//! Moving an embedded server's tracking store (`DATA/tracking.sqlite`, its audit
//! key and anchor) into PostgreSQL, for `ferrolab collab migrate`: every row of
//! every table, copied inside the caller's transaction, so the move lands whole
//! or not at all.
//!
//! The tables are read from SQLite in key order a few thousand rows at a time and
//! written with multi-row `INSERT`s, each value converted to its PostgreSQL
//! column's type (SQLite keeps whatever it was given; a value that does not fit
//! its column stops the move with the table, row and column). The identity
//! sequences continue after the highest copied number; the audit log keeps its
//! entries, its key and its anchor, so its chain still verifies.

use super::db::STORE_LOCK;
use super::schema;
use super::POSTGRES_SCHEMA;
use anyhow::{bail, Context};
use rusqlite::types::ValueRef;
use std::collections::HashMap;
use std::path::Path;
use tokio_postgres::types::ToSql;

/// Every table, parents before children (the foreign keys hold at each insert).
const TABLES: &[&str] = &[
    "experiments",
    "experiment_tags",
    "runs",
    "params",
    "tags",
    "metrics",
    "latest_metrics",
    "run_docs",
    "registered_models",
    "registered_model_tags",
    "model_versions",
    "model_version_tags",
    "model_aliases",
    "model_evaluations",
    "model_reviews",
    "model_version_numbers",
    "governance_policy",
    "server_evaluations",
    "artifacts",
    "audit_log",
];

/// Tables whose numbers PostgreSQL hands out (`BIGSERIAL`), and the column.
const SERIALS: &[(&str, &str)] = &[
    ("model_reviews", "id"),
    ("server_evaluations", "id"),
    ("audit_log", "seq"),
];

/// Rows read and written at a time (fewer for wide tables: PostgreSQL takes at
/// most 65,535 parameters in one statement).
const BATCH_ROWS: usize = 2_000;

/// What was copied: rows per table, in [`TABLES`] order.
pub struct Copied {
    pub rows: Vec<(&'static str, u64)>,
}

impl Copied {
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

/// What the tracking store in the database holds already, in words (None when it
/// holds nothing but the Default experiment a replica makes on start).
pub async fn existing_data(client: &tokio_postgres::Client) -> anyhow::Result<Option<String>> {
    let mut found = Vec::new();
    for (table, what, condition) in [
        ("experiments", "experiments", "id <> 0"),
        ("runs", "runs", "TRUE"),
        ("registered_models", "registered models", "TRUE"),
        ("audit_log", "audit entries", "TRUE"),
    ] {
        let count: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {POSTGRES_SCHEMA}.{table} WHERE {condition}"),
                &[],
            )
            .await
            .with_context(|| format!("cannot count the {what} in the database"))?
            .get(0);
        if count > 0 {
            found.push(format!("{count} {what}"));
        }
    }
    Ok((!found.is_empty()).then(|| found.join(", ")))
}

/// The artifact blobs the SQLite store at `source` names (their SHA-256), each
/// once.
pub fn artifact_hashes(source: &Path) -> anyhow::Result<Vec<String>> {
    let conn = open_source(source)?;
    let mut statement = conn.prepare("SELECT DISTINCT sha256 FROM artifacts ORDER BY sha256")?;
    let hashes = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(hashes)
}

/// Copies every row of the SQLite store at `source` into the tracking schema, in
/// `tx` (whose tables [`crate::SqlStore::open_postgres`] made, and which holds no
/// data: see [`existing_data`]); then the audit key and anchor kept beside the
/// file, and the sequences.
pub async fn copy_sqlite(
    source: &Path,
    tx: &tokio_postgres::Transaction<'_>,
) -> anyhow::Result<Copied> {
    // Every tracking write takes this lock: no replica writes during the move.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&STORE_LOCK])
        .await
        .context("cannot lock the tracking store in the database")?;
    let conn = open_source(source)?;
    // The Default experiment a replica made on start gives way to the file's.
    tx.execute(
        &format!("DELETE FROM {POSTGRES_SCHEMA}.experiments WHERE id = 0"),
        &[],
    )
    .await
    .context("cannot replace the Default experiment")?;
    let mut rows = Vec::new();
    for &table in TABLES {
        let copied = copy_table(&conn, tx, table)
            .await
            .with_context(|| format!("cannot copy the table {table}"))?;
        rows.push((table, copied));
    }
    for &(table, column) in SERIALS {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{POSTGRES_SCHEMA}.{table}', '{column}'),
                               COALESCE(MAX({column}), 0) + 1, false)
                 FROM {POSTGRES_SCHEMA}.{table}"
            ),
            &[],
        )
        .await
        .with_context(|| format!("cannot move the numbering of {table} on"))?;
    }
    copy_audit_secrets(source, tx, &conn).await?;
    Ok(Copied { rows })
}

fn open_source(source: &Path) -> anyhow::Result<rusqlite::Connection> {
    if !source.is_file() {
        bail!("there is no tracking store at {}", source.display());
    }
    let conn = rusqlite::Connection::open(source)
        .with_context(|| format!("cannot open the tracking store {}", source.display()))?;
    // A file from an older server gets the current columns first, as the server
    // itself would do when it opened it.
    schema::migrate(&conn)
        .with_context(|| format!("cannot read the tracking store {}", source.display()))?;
    Ok(conn)
}

/// A column's type in PostgreSQL, which decides how a SQLite value is sent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Integer,
    Real,
    Text,
}

/// One value on its way to PostgreSQL.
#[derive(Debug)]
enum Value {
    Integer(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
}

impl Value {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Integer(v) => v,
            Value::Real(v) => v,
            Value::Text(v) => v,
        }
    }
}

/// Converts what SQLite holds to `kind`, or says why it cannot.
fn convert(value: ValueRef<'_>, kind: Kind) -> Result<Value, String> {
    let text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| "bytes that are not UTF-8 text".to_string())
    };
    Ok(match (kind, value) {
        (Kind::Integer, ValueRef::Null) => Value::Integer(None),
        (Kind::Real, ValueRef::Null) => Value::Real(None),
        (Kind::Text, ValueRef::Null) => Value::Text(None),
        (Kind::Integer, ValueRef::Integer(i)) => Value::Integer(Some(i)),
        (Kind::Integer, ValueRef::Real(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => {
            Value::Integer(Some(f as i64))
        }
        (Kind::Integer, ValueRef::Text(t)) => {
            let t = text(t)?;
            Value::Integer(Some(
                t.trim()
                    .parse()
                    .map_err(|_| format!("the text {t:?}, which is not a whole number"))?,
            ))
        }
        (Kind::Real, ValueRef::Integer(i)) => Value::Real(Some(i as f64)),
        (Kind::Real, ValueRef::Real(f)) => Value::Real(Some(f)),
        (Kind::Real, ValueRef::Text(t)) => {
            let t = text(t)?;
            Value::Real(Some(
                t.trim()
                    .parse()
                    .map_err(|_| format!("the text {t:?}, which is not a number"))?,
            ))
        }
        (Kind::Text, ValueRef::Text(t) | ValueRef::Blob(t)) => Value::Text(Some(text(t)?)),
        (Kind::Text, ValueRef::Integer(i)) => Value::Text(Some(i.to_string())),
        (Kind::Text, ValueRef::Real(f)) => Value::Text(Some(f.to_string())),
        (_, other) => return Err(format!("{other:?}, which does not fit a {kind:?} column")),
    })
}

/// The columns `table` has in both stores, with their PostgreSQL kinds (columns
/// PostgreSQL numbers itself, like the metric series' `rowid`, are left to it).
async fn columns(
    conn: &rusqlite::Connection,
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
) -> anyhow::Result<Vec<(String, Kind)>> {
    let rows = tx
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = $2 AND is_identity = 'NO'
             ORDER BY ordinal_position",
            &[&POSTGRES_SCHEMA, &table],
        )
        .await?;
    let mut target = HashMap::new();
    for row in rows {
        let (name, data_type): (String, String) = (row.get(0), row.get(1));
        let kind = match data_type.as_str() {
            "bigint" | "integer" | "smallint" => Kind::Integer,
            "double precision" | "real" | "numeric" => Kind::Real,
            "text" | "character varying" => Kind::Text,
            other => bail!(
                "the column {table}.{name} has the type {other}, which the move does not know"
            ),
        };
        target.insert(name, kind);
    }
    if target.is_empty() {
        bail!("the table {POSTGRES_SCHEMA}.{table} is missing in the database");
    }
    let mut statement = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = statement
        .query_map([], |row| row.get::<_, String>(1))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for name in names {
        match target.get(&name) {
            Some(kind) => out.push((name, *kind)),
            None => bail!("the column {table}.{name} of the file has no place in the database"),
        }
    }
    Ok(out)
}

async fn copy_table(
    conn: &rusqlite::Connection,
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
) -> anyhow::Result<u64> {
    let columns = columns(conn, tx, table).await?;
    let names: Vec<String> = columns.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let batch = (60_000 / columns.len().max(1)).clamp(1, BATCH_ROWS);
    let mut read = conn.prepare(&format!(
        "SELECT rowid, {} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT {batch}",
        names.join(", ")
    ))?;
    let mut statements: HashMap<usize, tokio_postgres::Statement> = HashMap::new();
    let mut after = i64::MIN;
    let mut copied = 0u64;
    loop {
        // Read a batch (SQLite is local and quick), then send it.
        let mut values: Vec<Value> = Vec::with_capacity(batch * columns.len());
        let mut count = 0usize;
        let mut rows = read.query([after])?;
        while let Some(row) = rows.next()? {
            after = row.get(0)?;
            for (i, (name, kind)) in columns.iter().enumerate() {
                let value = convert(row.get_ref(i + 1)?, *kind)
                    .map_err(|why| anyhow::anyhow!("row {after}, column {name}: it holds {why}"))?;
                values.push(value);
            }
            count += 1;
        }
        drop(rows);
        if count == 0 {
            break;
        }
        let statement = match statements.get(&count) {
            Some(statement) => statement.clone(),
            None => {
                let sql = insert_sql(table, &names, count);
                let statement = tx.prepare(&sql).await?;
                statements.insert(count, statement.clone());
                statement
            }
        };
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(Value::as_sql).collect();
        tx.execute(&statement, &params).await?;
        copied += count as u64;
        if count < batch {
            break;
        }
    }
    Ok(copied)
}

/// `INSERT INTO schema.table (columns) VALUES ($1, …), …` for `rows` rows.
fn insert_sql(table: &str, names: &[String], rows: usize) -> String {
    let width = names.len();
    let mut sql = format!(
        "INSERT INTO {POSTGRES_SCHEMA}.{table} ({}) VALUES ",
        names.join(", ")
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..width {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * width + column + 1));
        }
        sql.push(')');
    }
    sql
}

/// The audit key and anchor beside the file (`tracking.audit-key`,
/// `tracking.audit-anchor`) become the rows `audit_key` and `audit_anchor`.
async fn copy_audit_secrets(
    source: &Path,
    tx: &tokio_postgres::Transaction<'_>,
    conn: &rusqlite::Connection,
) -> anyhow::Result<()> {
    let key_path = source.with_extension("audit-key");
    match std::fs::read(&key_path) {
        Ok(bytes) if bytes.len() == 32 => {
            tx.execute(
                &format!(
                    "INSERT INTO {POSTGRES_SCHEMA}.audit_key (id, key) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET key = excluded.key"
                ),
                &[&crate::hex(&bytes)],
            )
            .await
            .context("cannot store the audit key")?;
        }
        Ok(bytes) => bail!(
            "the audit key {} is damaged ({} bytes, not 32); restore it from a backup before moving",
            key_path.display(),
            bytes.len()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keyed: i64 = conn.query_row(
                "SELECT count(*) FROM audit_log WHERE hash LIKE 'hmac-sha256:%'",
                [],
                |row| row.get(0),
            )?;
            if keyed > 0 {
                bail!(
                    "the audit key {} is missing while the audit log has {keyed} signed entries; \
                     restore it from a backup before moving (without it the log cannot be verified)",
                    key_path.display()
                );
            }
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", key_path.display())),
    }
    let anchor_path = source.with_extension("audit-anchor");
    match std::fs::read_to_string(&anchor_path) {
        Ok(body) => {
            tx.execute(
                &format!(
                    "INSERT INTO {POSTGRES_SCHEMA}.audit_anchor (id, body) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET body = excluded.body"
                ),
                &[&body],
            )
            .await
            .context("cannot store the audit anchor")?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", anchor_path.display())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_their_columns_type() {
        assert!(matches!(
            convert(ValueRef::Real(3.0), Kind::Integer),
            Ok(Value::Integer(Some(3)))
        ));
        assert!(matches!(
            convert(ValueRef::Integer(2), Kind::Real),
            Ok(Value::Real(Some(f))) if f == 2.0
        ));
        assert!(matches!(
            convert(ValueRef::Integer(7), Kind::Text),
            Ok(Value::Text(Some(t))) if t == "7"
        ));
        assert!(matches!(
            convert(ValueRef::Null, Kind::Real),
            Ok(Value::Real(None))
        ));
        let refused = convert(ValueRef::Text(b"seven"), Kind::Integer).unwrap_err();
        assert!(refused.contains("\"seven\""), "{refused}");
        assert!(convert(ValueRef::Real(2.5), Kind::Integer).is_err());
        assert!(convert(ValueRef::Blob(&[0xff, 0xfe]), Kind::Text).is_err());
    }

    #[test]
    fn inserts_number_their_parameters_row_by_row() {
        let names = vec!["\"a\"".to_string(), "\"b\"".to_string()];
        assert_eq!(
            insert_sql("t", &names, 2),
            format!("INSERT INTO {POSTGRES_SCHEMA}.t (\"a\", \"b\") VALUES ($1, $2), ($3, $4)")
        );
    }
}
