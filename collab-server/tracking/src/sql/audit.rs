//! The append-only audit log of registry and governance actions, made
//! tamper-evident: each entry carries an HMAC-SHA256, under a key only the
//! tracking store's process reads, of the entry and the one before it; and an
//! anchor file beside the database holds the latest entry's number and hash,
//! itself keyed. Editing an entry, inserting one or recomputing the chain needs
//! the key; dropping the last entries (which a plain hash chain cannot show)
//! leaves the anchor pointing past the end.
//!
//! In SQLite the key is `<database>.audit-key` (32 random bytes, 0600), made on
//! first open; on the collaboration server it lives in the data folder, which
//! shared kernels cannot see. Entries written before the key existed (plain
//! SHA-256 links) still verify, but only before the first keyed one.
//!
//! In PostgreSQL, where every replica must sign with the same key, the key and
//! the anchor are rows of the tracking schema (`audit_key`, `audit_anchor`), and
//! the anchor moves in the entry's own transaction: the log is then as safe as the
//! database's credentials (see `docs/deploy.md`).

use super::db::{args, Tx};
use crate::store::Result;
use crate::{digest_hex, hex};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const KEYED: &str = "hmac-sha256:";

#[derive(Debug, Clone)]
pub(crate) struct AuditEntry {
    pub seq: i64,
    pub timestamp: i64,
    pub actor: String,
    pub action: String,
    pub model: String,
    pub version: String,
    pub before: String,
    pub after: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What the chain check found.
pub(crate) struct Verdict {
    /// The first entry that does not verify, if any.
    pub broken_at: Option<i64>,
    /// Why the log cannot be trusted, in words, if it cannot.
    pub problem: Option<String>,
}

pub(crate) struct Audit {
    key: ring::hmac::Key,
    anchor: Anchor,
    /// The entry a transaction appended (file anchor): the anchor follows its commit.
    appended: Mutex<Option<(i64, String)>>,
}

/// Where the anchor is kept.
enum Anchor {
    /// A file beside the SQLite database, written after each commit.
    File(PathBuf),
    /// The row of `audit_anchor`, written in the appending transaction.
    Table,
}

impl Audit {
    /// Reads (or makes) the key beside `database`.
    pub fn open(database: &Path) -> anyhow::Result<Audit> {
        use anyhow::Context;
        let key_path = database.with_extension("audit-key");
        let bytes = match std::fs::read(&key_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                    .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
                write_private(&key_path, &bytes, true)
                    .with_context(|| format!("cannot write {}", key_path.display()))?;
                // Another process may have made it first; theirs wins.
                std::fs::read(&key_path)?
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", key_path.display())),
        };
        if bytes.len() != 32 {
            anyhow::bail!(
                "the audit key {} is damaged ({} bytes, not 32); restore it from a backup — without it the audit log cannot be verified",
                key_path.display(),
                bytes.len()
            );
        }
        Ok(Audit {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
            anchor: Anchor::File(database.with_extension("audit-anchor")),
            appended: Mutex::new(None),
        })
    }

    /// Reads (or makes) the key kept in the database (PostgreSQL): the first
    /// replica to start makes it, the others read it.
    pub fn open_in_database(tx: &Tx<'_>) -> Result<Audit> {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(
            |_| crate::TrackingError::Internal("the system random number generator failed".into()),
        )?;
        tx.execute(
            "INSERT INTO audit_key (id, key) VALUES (1, ?1) ON CONFLICT DO NOTHING",
            args![hex(&bytes)],
        )?;
        let key: String = tx.query_one("SELECT key FROM audit_key WHERE id = 1", args![], |r| {
            r.get(0)
        })?;
        let bytes = unhex(&key).filter(|b| b.len() == 32).ok_or_else(|| {
            crate::TrackingError::Internal(
                "the audit key in the database (audit_key) is damaged; restore it from a backup — \
                 without it the audit log cannot be verified"
                    .into(),
            )
        })?;
        Ok(Audit {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
            anchor: Anchor::Table,
            appended: Mutex::new(None),
        })
    }

    fn mac(&self, text: &str) -> String {
        format!(
            "{KEYED}{}",
            hex(ring::hmac::sign(&self.key, text.as_bytes()).as_ref())
        )
    }

    /// Appends one entry in `tx`.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        tx: &Tx<'_>,
        actor: &str,
        action: &str,
        model: &str,
        version: &str,
        before: &Value,
        after: &Value,
    ) -> Result<()> {
        let prev: String = tx
            .query_opt(
                "SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                args![],
                |r| r.get(0),
            )?
            .unwrap_or_default();
        let mut entry = AuditEntry {
            seq: 0,
            timestamp: chrono::Utc::now().timestamp_millis(),
            actor: actor.to_string(),
            action: action.to_string(),
            model: model.to_string(),
            version: version.to_string(),
            before: before.to_string(),
            after: after.to_string(),
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        entry.hash = self.mac(&entry_text(&prev, &entry));
        let seq: i64 = tx.query_one(
            "INSERT INTO audit_log (timestamp, actor, action, model, version, before, after, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING seq",
            args![
                entry.timestamp,
                entry.actor,
                entry.action,
                entry.model,
                entry.version,
                entry.before,
                entry.after,
                entry.prev_hash,
                entry.hash
            ],
            |r| r.get(0),
        )?;
        match &self.anchor {
            Anchor::Table => {
                tx.execute(
                    "INSERT INTO audit_anchor (id, body) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    args![self.anchor_body(seq, &entry.hash)],
                )?;
            }
            Anchor::File(_) => {
                if let Ok(mut appended) = self.appended.lock() {
                    *appended = Some((seq, entry.hash));
                }
            }
        }
        Ok(())
    }

    fn anchor_body(&self, seq: i64, hash: &str) -> String {
        json!({"seq": seq, "hash": hash, "mac": self.mac(&anchor_text(seq, hash))}).to_string()
    }

    /// After a commit: moves a file anchor to the newest entry if one was appended.
    /// (A crash between the commit and this leaves the anchor behind, which the
    /// check allows: only an anchor past the end means entries went missing.)
    pub fn after_commit(&self) {
        let Anchor::File(path) = &self.anchor else {
            return;
        };
        let Some((seq, hash)) = self.appended.lock().ok().and_then(|mut a| a.take()) else {
            return;
        };
        if let Err(error) = write_private(path, self.anchor_body(seq, &hash).as_bytes(), false) {
            log::error!("cannot move the audit anchor {}: {error}", path.display());
        }
    }

    /// A transaction that appended and then failed appended nothing.
    pub fn rolled_back(&self) {
        if let Ok(mut appended) = self.appended.lock() {
            *appended = None;
        }
    }

    /// The anchor as stored: None when there is none yet; Err when it cannot be read.
    pub fn read_anchor(&self, tx: &Tx<'_>) -> std::result::Result<Option<Vec<u8>>, String> {
        match &self.anchor {
            Anchor::File(path) => match std::fs::read(path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!(
                    "the audit anchor {} cannot be read: {e}",
                    path.display()
                )),
            },
            Anchor::Table => tx
                .query_opt("SELECT body FROM audit_anchor WHERE id = 1", args![], |r| {
                    r.get::<String>(0)
                })
                .map(|body| body.map(String::into_bytes))
                .map_err(|e| format!("the audit anchor cannot be read: {e}")),
        }
    }

    fn anchor_name(&self) -> String {
        match &self.anchor {
            Anchor::File(path) => format!("the anchor {}", path.display()),
            Anchor::Table => "the anchor (table audit_anchor)".to_string(),
        }
    }

    /// Checks every link and the anchor.
    pub fn verify(
        &self,
        entries: &[AuditEntry],
        anchor: std::result::Result<Option<Vec<u8>>, String>,
    ) -> Verdict {
        let mut prev = String::new();
        let mut keyed_seen = false;
        for e in entries {
            let text = entry_text(&prev, e);
            let ok = e.prev_hash == prev
                && if e.hash.starts_with(KEYED) {
                    keyed_seen = true;
                    ring::hmac::verify(
                        &self.key,
                        text.as_bytes(),
                        &unhex(&e.hash[KEYED.len()..]).unwrap_or_default(),
                    )
                    .is_ok()
                } else {
                    !keyed_seen && digest_hex(text.as_bytes()) == e.hash
                };
            if !ok {
                return Verdict {
                    broken_at: Some(e.seq),
                    problem: Some(format!(
                        "entry {} does not verify: it was changed, inserted or re-signed without the server's key",
                        e.seq
                    )),
                };
            }
            prev = e.hash.clone();
        }
        let anchor = match anchor {
            Ok(Some(bytes)) => serde_json::from_slice::<Value>(&bytes).ok(),
            Ok(None) => {
                return if keyed_seen {
                    Verdict {
                        broken_at: None,
                        problem: Some(format!(
                            "{} is missing: entries may have been removed from the end",
                            self.anchor_name()
                        )),
                    }
                } else {
                    Verdict {
                        broken_at: None,
                        problem: None,
                    }
                };
            }
            Err(_) => None,
        };
        let problem = match anchor {
            None => Some("the audit anchor cannot be read".to_string()),
            Some(anchor) => {
                let seq = anchor["seq"].as_i64().unwrap_or(-1);
                let hash = anchor["hash"].as_str().unwrap_or_default();
                let mac = anchor["mac"].as_str().unwrap_or_default();
                let signed = mac.strip_prefix(KEYED).and_then(unhex).is_some_and(|tag| {
                    ring::hmac::verify(&self.key, anchor_text(seq, hash).as_bytes(), &tag).is_ok()
                });
                if !signed {
                    Some("the audit anchor was not written by this server".to_string())
                } else if !entries.iter().any(|e| e.seq == seq && e.hash == hash) {
                    Some(format!(
                        "entry {seq}, which the anchor records, is gone: the log was cut short"
                    ))
                } else {
                    None
                }
            }
        };
        Verdict {
            broken_at: None,
            problem,
        }
    }
}

/// The text an entry's MAC covers.
fn entry_text(prev: &str, e: &AuditEntry) -> String {
    json!([
        prev,
        e.timestamp,
        e.actor,
        e.action,
        e.model,
        e.version,
        e.before,
        e.after
    ])
    .to_string()
}

fn anchor_text(seq: i64, hash: &str) -> String {
    format!("anchor:{seq}:{hash}")
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    text.len()
        .is_multiple_of(2)
        .then(|| {
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

/// Writes `data` to `path` (0600), atomically; with `only_new`, never replaces a
/// file that is there.
fn write_private(path: &Path, data: &[u8], only_new: bool) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".audit");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(data)?;
    file.as_file().sync_all()?;
    if only_new {
        match file.persist_noclobber(path) {
            Ok(_) => Ok(()),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e.error),
        }
    } else {
        file.persist(path).map(|_| ()).map_err(|e| e.error)
    }
}
