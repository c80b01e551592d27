//! Access tokens: created by the owner, stored hashed, checked on every request.
//!
//! A token reads `flb_<id>_<secret>`: the id finds the record, the secret is
//! checked against its SHA-256. The store is one JSON file in the data folder,
//! rewritten atomically under an advisory lock, so `ferrolab collab token ...`
//! works whether or not a server is running; a running server re-reads it when
//! it changes, so a revocation takes effect at once. In the cluster mode the same
//! JSON is one row of the database's settings, changed in a transaction that
//! holds it locked and announced to every replica, which re-reads it.

use crate::postgres::Database;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use ferrolab_tracking::access::{Identity, Role};
use ferrolab_tracking::{digest_hex, hex};

const TOKEN_PREFIX: &str = "flb_";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the secret part.
    pub hash: String,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    version: u32,
    tokens: Vec<TokenRecord>,
}

pub struct TokenStore {
    place: Place,
    cache: Mutex<Cache>,
    /// When a presented token's id last sent [`TokenStore::verify_now`] to the
    /// database (a token made a moment ago may not have been announced yet).
    last_miss: Mutex<Option<std::time::Instant>>,
}

/// How often unknown token ids may make the database be read again.
const MISS_RELOAD: std::time::Duration = std::time::Duration::from_millis(50);

enum Place {
    File { path: PathBuf, lock_path: PathBuf },
    Database(Arc<Database>),
}

/// The setting that holds the tokens in the cluster mode.
pub const TOKENS_SETTING: &str = "tokens";
/// The setting that holds the key signing browser sessions in the cluster mode.
pub const SESSION_KEY_SETTING: &str = "session_key";

#[derive(Default)]
struct Cache {
    stamp: Option<(SystemTime, u64, u64)>,
    tokens: Vec<TokenRecord>,
}

impl TokenStore {
    /// The tokens of the data folder `data_dir` (`tokens.json`).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            place: Place::File {
                path: data_dir.join("tokens.json"),
                lock_path: data_dir.join("tokens.lock"),
            },
            cache: Mutex::new(Cache::default()),
            last_miss: Mutex::new(None),
        }
    }

    /// The tokens of a cluster, in its database; read once here, and again by
    /// [`TokenStore::reload`] when they change.
    pub async fn on_database(database: Arc<Database>) -> anyhow::Result<Self> {
        let store = Self {
            place: Place::Database(database),
            cache: Mutex::new(Cache::default()),
            last_miss: Mutex::new(None),
        };
        store.reload().await?;
        Ok(store)
    }

    /// Re-reads the tokens from the database (the file is re-read by itself when
    /// it changes).
    pub async fn reload(&self) -> anyhow::Result<()> {
        let Place::Database(database) = &self.place else {
            return Ok(());
        };
        let value = database.setting(TOKENS_SETTING).await?;
        let file = parse_tokens(value.as_deref(), "the database")?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.tokens = file.tokens;
        }
        Ok(())
    }

    fn read_file(path: &Path) -> anyhow::Result<TokenFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => parse_tokens(Some(&text), &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => parse_tokens(None, ""),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Changes the tokens with `change`, holding the file's lock (or the
    /// database row's) from reading them to writing them back.
    async fn edit<R>(
        &self,
        change: impl FnOnce(&mut TokenFile) -> anyhow::Result<R>,
    ) -> anyhow::Result<R> {
        match &self.place {
            Place::File { path, lock_path } => {
                if let Some(parent) = lock_path.parent() {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!("cannot create the data folder {}", parent.display())
                    })?;
                }
                let _lock = FileLock::acquire(lock_path)?;
                let mut file = Self::read_file(path)?;
                let before = serde_json::to_vec(&file)?;
                let answer = change(&mut file)?;
                if serde_json::to_vec(&file)? != before {
                    let mut bytes = serde_json::to_vec_pretty(&file)?;
                    bytes.push(b'\n');
                    crate::storage::write_atomically(path, &bytes)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                Ok(answer)
            }
            Place::Database(database) => {
                let answer = database
                    .update_setting(TOKENS_SETTING, |current| {
                        let mut file = parse_tokens(current.as_deref(), "the database")?;
                        let answer = change(&mut file)?;
                        Ok((serde_json::to_string_pretty(&file)?, answer))
                    })
                    .await?;
                self.reload().await?;
                Ok(answer)
            }
        }
    }

    /// Creates a token and returns its full text (the only time it is shown).
    pub async fn create(&self, name: &str, role: Role) -> anyhow::Result<String> {
        self.edit(|file| add_token(file, name, role)).await
    }

    /// Creates an owner token if there is no token at all yet (a new server);
    /// returns its text.
    pub async fn create_first_owner(&self) -> anyhow::Result<Option<String>> {
        self.edit(|file| {
            if file.tokens.is_empty() {
                add_token(file, "owner", Role::Owner).map(Some)
            } else {
                Ok(None)
            }
        })
        .await
    }

    pub async fn list(&self) -> anyhow::Result<Vec<TokenRecord>> {
        match &self.place {
            Place::File { path, .. } => Ok(Self::read_file(path)?.tokens),
            Place::Database(database) => {
                let value = database.setting(TOKENS_SETTING).await?;
                Ok(parse_tokens(value.as_deref(), "the database")?.tokens)
            }
        }
    }

    /// Revokes by id or by name; returns the ids revoked.
    pub async fn revoke(&self, id_or_name: &str) -> anyhow::Result<Vec<String>> {
        self.edit(|file| {
            let mut revoked = Vec::new();
            for token in &mut file.tokens {
                if (token.id == id_or_name || token.name == id_or_name) && token.revoked.is_none()
                {
                    token.revoked = Some(now());
                    revoked.push(token.id.clone());
                }
            }
            if revoked.is_empty() {
                bail!("no active token has the id or name {id_or_name:?}; `ferrolab collab token list` shows them");
            }
            Ok(revoked)
        })
        .await
    }

    /// The tokens as last read: the file is re-read if it changed since the last
    /// look; the database's copy follows its announcements.
    fn refresh(&self) -> Vec<TokenRecord> {
        let Place::File { path, .. } = &self.place else {
            return self
                .cache
                .lock()
                .map(|cache| cache.tokens.clone())
                .unwrap_or_default();
        };
        let stamp = std::fs::metadata(path).ok().and_then(|m| {
            use std::os::unix::fs::MetadataExt;
            Some((m.modified().ok()?, m.len(), m.ino()))
        });
        let Ok(mut cache) = self.cache.lock() else {
            return Vec::new();
        };
        if stamp.is_none() || stamp != cache.stamp {
            match Self::read_file(path) {
                Ok(file) => {
                    cache.tokens = file.tokens;
                    cache.stamp = stamp;
                }
                // Keep the last good copy; a broken file must not lock everyone out silently.
                Err(error) => log::error!("{error:#}"),
            }
        }
        cache.tokens.clone()
    }

    /// [`TokenStore::verify`], except that in the cluster mode a token whose id is
    /// not known yet (made a moment ago, its announcement still on the way) makes
    /// the tokens be read from the database first — at most every [`MISS_RELOAD`],
    /// so made-up ids cannot flood the database.
    pub async fn verify_now(&self, presented: &str) -> Option<Identity> {
        if let Some(who) = self.verify(presented) {
            return Some(who);
        }
        if !matches!(self.place, Place::Database(_)) {
            return None;
        }
        let due = self.last_miss.lock().is_ok_and(|mut last| {
            let due = last.is_none_or(|at| at.elapsed() >= MISS_RELOAD);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        });
        if due {
            if let Err(error) = self.reload().await {
                log::warn!("cannot re-read the tokens: {error:#}");
            }
        }
        self.verify(presented)
    }

    /// Checks a presented token; `None` if it is unknown, wrong or revoked.
    pub fn verify(&self, presented: &str) -> Option<Identity> {
        let rest = presented.trim().strip_prefix(TOKEN_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let tokens = self.refresh();
        let record = tokens.iter().find(|t| t.id == id)?;
        let matches = constant_time_eq(
            digest_hex(secret.as_bytes()).as_bytes(),
            record.hash.as_bytes(),
        );
        (matches && record.revoked.is_none()).then(|| Identity {
            token_id: record.id.clone(),
            name: record.name.clone(),
            role: record.role,
        })
    }

    /// Who the active token with this id is (a signed-in browser's session names
    /// its token by id); `None` once it is revoked.
    pub fn identity(&self, token_id: &str) -> Option<Identity> {
        self.refresh()
            .iter()
            .find(|t| t.id == token_id && t.revoked.is_none())
            .map(|record| Identity {
                token_id: record.id.clone(),
                name: record.name.clone(),
                role: record.role,
            })
    }

    /// Whether the token with this id is still valid (for live connections).
    pub fn is_active(&self, token_id: &str) -> bool {
        self.refresh()
            .iter()
            .any(|t| t.id == token_id && t.revoked.is_none())
    }
}

/// Browser sessions: after signing in with a token once, a browser holds an
/// HttpOnly cookie naming the token's id and an expiry, signed with a key in the
/// data folder (`session.key`, 0600), so the page's script never holds the token
/// and no URL carries it. A session ends when it expires, when the browser signs
/// out, or at once when its token is revoked.
pub struct Sessions {
    key: ring::hmac::Key,
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ferrolab_session";
/// How long a browser session lasts.
pub const SESSION_DAYS: i64 = 7;

impl Sessions {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("session.key");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            Ok(_) | Err(_) => {
                let bytes = random_bytes::<32>()?.to_vec();
                crate::storage::write_atomically(&path, &bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                bytes
            }
        };
        Ok(Sessions {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
        })
    }

    /// The cluster's session key, in the database (made by the first replica), so
    /// that a browser signed in through one replica is signed in on all.
    pub async fn on_database(database: &Database) -> anyhow::Result<Self> {
        let fresh = hex(&random_bytes::<32>()?);
        let key = database
            .setting_or_insert(SESSION_KEY_SETTING, &fresh)
            .await?;
        if key.len() != 64 {
            bail!("the session key in the database is damaged; remove the setting {SESSION_KEY_SETTING} (every browser signs in again)");
        }
        Ok(Sessions {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes()),
        })
    }

    /// A session cookie value for `token_id`, valid for [`SESSION_DAYS`].
    pub fn issue(&self, token_id: &str) -> String {
        let expiry = chrono::Utc::now().timestamp() + SESSION_DAYS * 86_400;
        let body = format!("{token_id}.{expiry}");
        let mac = hex(ring::hmac::sign(&self.key, body.as_bytes()).as_ref());
        format!("{body}.{mac}")
    }

    /// The token id a cookie value names, if it is ours and unexpired.
    pub fn verify(&self, value: &str) -> Option<String> {
        let (body, mac) = value.rsplit_once('.')?;
        let (token_id, expiry) = body.split_once('.')?;
        let expected = hex(ring::hmac::sign(&self.key, body.as_bytes()).as_ref());
        let fresh = expiry.parse::<i64>().ok()? > chrono::Utc::now().timestamp();
        (constant_time_eq(expected.as_bytes(), mac.as_bytes()) && fresh)
            .then(|| token_id.to_string())
    }
}

/// Reads the tokens' JSON (`None`: there are none yet); `whence` names where it
/// came from, for the message when it is damaged.
fn parse_tokens(text: Option<&str>, whence: &str) -> anyhow::Result<TokenFile> {
    let Some(text) = text else {
        return Ok(TokenFile {
            version: 1,
            tokens: Vec::new(),
        });
    };
    serde_json::from_str(text).with_context(|| {
        format!(
            "the tokens in {whence} are damaged; restore them from a backup, or remove them \
             and run `ferrolab collab token create --role owner`"
        )
    })
}

/// How many tokens the JSON of a token file holds (an error when it is damaged).
pub(crate) fn count_tokens(text: &str) -> anyhow::Result<usize> {
    Ok(parse_tokens(Some(text), "the token file")?.tokens.len())
}

/// Adds a token named `name` to `file`; returns its full text.
fn add_token(file: &mut TokenFile, name: &str, role: Role) -> anyhow::Result<String> {
    if name.trim().is_empty() {
        bail!("a token needs a name (--name) so you can tell tokens apart in `token list`");
    }
    if !ferrolab_tracking::access::valid_name(name) {
        bail!(
            "invalid token name {name:?}: use 1 to 64 ASCII letters, digits, spaces and .@_- \
             (the name is the person: tokens whose names differ only in case or spacing \
             belong to the same person, for reviews and approvals)"
        );
    }
    let id = loop {
        let id = hex(&random_bytes::<4>()?);
        if !file.tokens.iter().any(|t| t.id == id) {
            break id;
        }
    };
    let secret = hex(&random_bytes::<32>()?);
    file.version = 1;
    file.tokens.push(TokenRecord {
        id: id.clone(),
        name: name.to_string(),
        role,
        hash: digest_hex(secret.as_bytes()),
        created: now(),
        revoked: None,
    });
    Ok(format!("{TOKEN_PREFIX}{id}_{secret}"))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(bytes)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An exclusive advisory lock on a file, released on drop.
struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Self(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking a descriptor we own.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(dir.path());
        let token =
            futures::executor::block_on(store.create("alice", Role::Editor)).expect("create");
        let who = store.verify(&token).expect("valid token");
        assert_eq!((who.name.as_str(), who.role), ("alice", Role::Editor));
        assert!(store.verify(&format!("{token}x")).is_none(), "wrong secret");
        assert!(store.verify("flb_nope_nope").is_none());
        let stored = std::fs::read_to_string(dir.path().join("tokens.json")).expect("read");
        let secret = token.rsplit('_').next().expect("secret");
        assert!(!stored.contains(secret), "the secret is never stored");
        for bad in ["", "   ", "al\u{0456}ce", "a\tb", "a/b", &"x".repeat(65)] {
            assert!(
                futures::executor::block_on(store.create(bad, Role::Editor)).is_err(),
                "{bad:?}"
            );
        }
        let sessions = Sessions::open(dir.path()).expect("sessions");
        let cookie = sessions.issue(&who.token_id);
        assert_eq!(
            sessions.verify(&cookie).as_deref(),
            Some(who.token_id.as_str())
        );
        let forged = cookie.replacen(&who.token_id, "ffffffff", 1);
        assert!(
            sessions.verify(&forged).is_none(),
            "the signature covers the token id"
        );
        let (body, _) = cookie.rsplit_once('.').expect("mac");
        let (id, _) = body.split_once('.').expect("expiry");
        let stale = format!("{id}.1000000000");
        let mac = hex(ring::hmac::sign(&sessions.key, stale.as_bytes()).as_ref());
        assert!(
            sessions.verify(&format!("{stale}.{mac}")).is_none(),
            "expired"
        );
        futures::executor::block_on(store.revoke("alice")).expect("revoke");
        assert!(
            store.identity(&who.token_id).is_none(),
            "a revoked token's session ends"
        );
        assert!(store.verify(&token).is_none(), "revoked");
        assert!(
            futures::executor::block_on(store.revoke("alice")).is_err(),
            "nothing left to revoke"
        );
    }
}
