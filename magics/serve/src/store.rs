//! The request log and human feedback, in an embedded SQLite database.
//!
//! Every request the server answers is stored with its prompt, completion, token
//! counts, latencies and status. Feedback rows point at a logged request. Writes
//! use WAL with `synchronous=FULL`: a feedback POST is answered only after its row
//! is on disk, so an acknowledged rating survives a crash or `kill -9`.

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One answered (or refused) request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    pub id: String,
    /// Seconds since the Unix epoch.
    pub created: f64,
    /// The model name the request asked for (base model or adapter).
    pub model: String,
    /// `completions`, `chat.completions` or `embeddings`.
    pub endpoint: String,
    /// The prompt text as the model saw it (after the chat template).
    pub prompt: String,
    /// Chat requests: the messages as sent (JSON), for exporting chat datasets.
    pub messages: Option<String>,
    pub completion: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub latency_s: f64,
    /// Time to the first generated token; none when nothing was generated.
    pub ttft_s: Option<f64>,
    /// The HTTP status the client got.
    pub status: u16,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
}

/// Human feedback on a logged completion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Feedback {
    pub id: String,
    pub score: f64,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// Per-minute figures for `%monitor`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MinuteStats {
    /// Start of the minute, seconds since the Unix epoch.
    pub minute: i64,
    pub requests: usize,
    pub errors: usize,
    pub p50_latency_s: Option<f64>,
    pub p95_latency_s: Option<f64>,
    pub mean_ttft_s: Option<f64>,
    /// Generated tokens per second of request time, over the minute's requests.
    pub tokens_per_s: Option<f64>,
    /// Mean feedback score given to this minute's requests.
    pub mean_score: Option<f64>,
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    prompt TEXT NOT NULL,
    messages TEXT,
    completion TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    ttft_s REAL,
    status INTEGER NOT NULL,
    finish_reason TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS requests_created ON requests(created);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL REFERENCES requests(id),
    created REAL NOT NULL,
    score REAL NOT NULL,
    label TEXT,
    comment TEXT,
    user TEXT
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback(request_id);
";

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the request log {}", path.display()))?;
        let setup = || -> rusqlite::Result<()> {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)
        };
        setup().with_context(|| {
            format!(
                "{} is not a ferrolab request log (or is damaged); move it aside or pass another --log",
                path.display()
            )
        })?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls
        // back the open statement.
        ferrolab_magics::lock(&self.conn)
    }

    pub fn log(&self, r: &RequestRecord) -> Result<()> {
        self.lock().execute(
            "INSERT OR REPLACE INTO requests (id, created, model, endpoint, prompt, messages, completion,
               prompt_tokens, completion_tokens, latency_s, ttft_s, status, finish_reason, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                r.id,
                r.created,
                r.model,
                r.endpoint,
                r.prompt,
                r.messages,
                r.completion,
                r.prompt_tokens as i64,
                r.completion_tokens as i64,
                r.latency_s,
                r.ttft_s,
                r.status,
                r.finish_reason,
                r.error
            ],
        )?;
        Ok(())
    }

    pub fn request(&self, id: &str) -> Result<Option<RequestRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, created, model, endpoint, prompt, messages, completion, prompt_tokens,
                    completion_tokens, latency_s, ttft_s, status, finish_reason, error
             FROM requests WHERE id = ?1",
        )?;
        Ok(stmt.query_row([id], row_to_record).optional()?)
    }

    /// The most recent requests, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<RequestRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, created, model, endpoint, prompt, messages, completion, prompt_tokens,
                    completion_tokens, latency_s, ttft_s, status, finish_reason, error
             FROM requests ORDER BY created DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], row_to_record)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores feedback on a logged request; fails if the id was never logged.
    pub fn add_feedback(&self, f: &Feedback) -> Result<i64> {
        if !f.score.is_finite() {
            bail!("score must be a finite number");
        }
        let conn = self.lock();
        let known: Option<String> = conn
            .query_row("SELECT id FROM requests WHERE id = ?1", [&f.id], |r| {
                r.get(0)
            })
            .optional()?;
        if known.is_none() {
            bail!(UnknownRequest(f.id.clone()));
        }
        conn.execute(
            "INSERT INTO feedback (request_id, created, score, label, comment, user)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![f.id, now(), f.score, f.label, f.comment, f.user],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn feedback_for(&self, id: &str) -> Result<Vec<Feedback>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT request_id, score, label, comment, user FROM feedback WHERE request_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(Feedback {
                id: r.get(0)?,
                score: r.get(1)?,
                label: r.get(2)?,
                comment: r.get(3)?,
                user: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Successful generations whose mean feedback score is at least `min_score`,
    /// oldest first, with that mean.
    pub fn rated(&self, min_score: f64) -> Result<Vec<(RequestRecord, f64)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT r.id, r.created, r.model, r.endpoint, r.prompt, r.messages, r.completion,
                    r.prompt_tokens, r.completion_tokens, r.latency_s, r.ttft_s, r.status,
                    r.finish_reason, r.error, AVG(f.score)
             FROM requests r JOIN feedback f ON f.request_id = r.id
             WHERE r.status = 200 AND r.endpoint != 'embeddings'
             GROUP BY r.id HAVING AVG(f.score) >= ?1 ORDER BY r.created",
        )?;
        let rows = stmt.query_map([min_score], |r| Ok((row_to_record(r)?, r.get(14)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Figures per minute over the last `minutes` minutes (oldest first; minutes
    /// without requests are left out).
    pub fn minutes(&self, minutes: i64) -> Result<Vec<MinuteStats>> {
        let since = now() - 60.0 * minutes as f64;
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT CAST(r.created / 60 AS INTEGER) * 60, r.status, r.latency_s, r.ttft_s,
                    r.completion_tokens,
                    (SELECT AVG(score) FROM feedback f WHERE f.request_id = r.id)
             FROM requests r WHERE r.created >= ?1 ORDER BY r.created",
        )?;
        type Row = (i64, u16, f64, Option<f64>, i64, Option<f64>);
        let rows: Vec<Row> = stmt
            .query_map([since], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut out: Vec<MinuteStats> = Vec::new();
        let mut i = 0;
        while i < rows.len() {
            let minute = rows[i].0;
            let group: Vec<&Row> = rows[i..].iter().take_while(|r| r.0 == minute).collect();
            i += group.len();
            let ok: Vec<&&Row> = group.iter().filter(|r| r.1 == 200).collect();
            let mut latencies: Vec<f64> = ok.iter().map(|r| r.2).collect();
            latencies.sort_by(f64::total_cmp);
            let ttfts: Vec<f64> = ok.iter().filter_map(|r| r.3).collect();
            let tokens: i64 = ok.iter().map(|r| r.4).sum();
            let time: f64 = ok.iter().map(|r| r.2).sum();
            let scores: Vec<f64> = group.iter().filter_map(|r| r.5).collect();
            out.push(MinuteStats {
                minute,
                requests: group.len(),
                errors: group.iter().filter(|r| r.1 >= 500).count(),
                p50_latency_s: quantile(&latencies, 0.5),
                p95_latency_s: quantile(&latencies, 0.95),
                mean_ttft_s: mean(&ttfts),
                tokens_per_s: (time > 0.0).then(|| tokens as f64 / time),
                mean_score: mean(&scores),
            });
        }
        Ok(out)
    }
}

/// Feedback named a request id that is not in the log.
#[derive(Debug)]
pub struct UnknownRequest(pub String);

impl std::fmt::Display for UnknownRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no logged request has id '{}'; use the id of a completion this server returned",
            self.0
        )
    }
}

impl std::error::Error for UnknownRequest {}

fn row_to_record(r: &rusqlite::Row) -> rusqlite::Result<RequestRecord> {
    Ok(RequestRecord {
        id: r.get(0)?,
        created: r.get(1)?,
        model: r.get(2)?,
        endpoint: r.get(3)?,
        prompt: r.get(4)?,
        messages: r.get(5)?,
        completion: r.get(6)?,
        prompt_tokens: r.get::<_, i64>(7)? as usize,
        completion_tokens: r.get::<_, i64>(8)? as usize,
        latency_s: r.get(9)?,
        ttft_s: r.get(10)?,
        status: r.get(11)?,
        finish_reason: r.get(12)?,
        error: r.get(13)?,
    })
}

/// Nearest-rank quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, status: u16) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            created: now(),
            model: "m".into(),
            endpoint: "completions".into(),
            prompt: "2+2=".into(),
            messages: None,
            completion: "4".into(),
            prompt_tokens: 4,
            completion_tokens: 1,
            latency_s: 0.5,
            ttft_s: Some(0.1),
            status,
            finish_reason: Some("stop".into()),
            error: None,
        }
    }

    #[test]
    fn feedback_survives_reopening_and_selects_the_export() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log.sqlite");
        {
            let store = Store::open(&path)?;
            store.log(&record("a", 200))?;
            store.log(&record("b", 200))?;
            store.log(&record("c", 500))?;
            let feedback = |id: &str, score| Feedback {
                id: id.into(),
                score,
                label: None,
                comment: None,
                user: Some("ana".into()),
            };
            store.add_feedback(&feedback("a", 5.0))?;
            store.add_feedback(&feedback("a", 3.0))?;
            store.add_feedback(&feedback("b", 1.0))?;
            store.add_feedback(&feedback("c", 5.0))?;
            let err = store.add_feedback(&feedback("zzz", 1.0)).unwrap_err();
            assert!(err.to_string().contains("no logged request has id 'zzz'"));
        }
        let store = Store::open(&path)?;
        assert_eq!(store.feedback_for("a")?.len(), 2);
        let rated = store.rated(3.5)?;
        // a: mean 4.0; b: 1.0; c: failed request, never exported.
        assert_eq!(rated.len(), 1);
        assert_eq!(rated[0].0.id, "a");
        assert_eq!(rated[0].1, 4.0);
        let minutes = store.minutes(5)?;
        assert_eq!(minutes.iter().map(|m| m.requests).sum::<usize>(), 3);
        assert_eq!(minutes.iter().map(|m| m.errors).sum::<usize>(), 1);
        Ok(())
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_clearly() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log.sqlite");
        std::fs::write(
            &path,
            b"this is not sqlite, just some text long enough to look like a header...",
        )?;
        let err = Store::open(&path).err().context("opened a text file")?;
        assert!(format!("{err:#}").contains("log.sqlite"), "{err:#}");
        Ok(())
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.0));
        assert_eq!(quantile(&v, 0.95), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
