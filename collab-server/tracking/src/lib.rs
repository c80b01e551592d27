//! ferrolab's tracking store: experiments, runs, params, tags and metric series;
//! the model registry (registered models, versions, aliases, tags); governance
//! (reviews, evaluation links, the promotion policy, the audit log); and artifacts.
//!
//! The layers, each importing only those below it:
//! - [`api`]: MLflow's REST API as one typed [`request::Request`] per call
//!   ([`endpoint`] says who may make it), answered on any [`Store`];
//! - [`store`]: the [`Store`] trait (runs, registry, artifacts) and the rules every
//!   store applies; [`model`]: the entities it takes and gives, serialized as
//!   MLflow writes them; [`search`]: MLflow's filter language;
//! - [`sql`]: [`SqlStore`], the store in one SQLite file or in PostgreSQL.
//!
//! The collaboration server serves the API over HTTP and the kernel's local
//! tracking calls it in process, both with the same rules. This crate knows nothing
//! of HTTP, automerge or Jupyter.
//!
//! ```
//! use ferrolab_tracking::{api, Identity, Role, SqlStore};
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqlStore::open_sqlite(&dir.path().join("tracking.sqlite")).unwrap();
//! let me = Identity { token_id: "local".into(), name: "ada".into(), role: Role::Editor };
//! let request = json!({"name": "prompts"});
//! let reply = api::call(&store, &me, "experiments/create", &request).unwrap();
//! assert!(reply["experiment_id"].is_string());
//! ```

pub mod access;
pub mod api;
pub mod endpoint;
mod error;
pub mod model;
pub mod remote;
pub mod request;
pub mod search;
pub mod sql;
pub mod store;
pub mod upload;

pub use access::{Identity, Role};
pub use error::{Result, TrackingError};
pub use sql::{Connect, Connection, SqlStore, POSTGRES_SCHEMA};
pub use store::{ArtifactStore, RegistryStore, RunStore, Store};

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of `bytes` (the audit chain's links, artifact digests, token hashes).
pub fn digest_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// `blake3:HEX` of a file, or of a folder's files (their relative paths, `/`-joined,
/// and hashes, sorted), so the same bytes give the same hash wherever they live. A
/// version's `adapter_digest` is this hash of its adapter folder; the server checks
/// the adapter it evaluates against it.
pub fn content_hash(path: &std::path::Path) -> std::io::Result<String> {
    fn file_hash(path: &std::path::Path) -> std::io::Result<String> {
        let mut hasher = blake3::Hasher::new();
        std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
        Ok(format!("blake3:{}", hasher.finalize().to_hex()))
    }
    fn collect(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut Vec<(String, String)>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                collect(root, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, file_hash(&path)?));
            }
        }
        Ok(())
    }
    if path.is_file() {
        return file_hash(path);
    }
    if !path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", path.display()),
        ));
    }
    let mut files = Vec::new();
    collect(path, path, &mut files)?;
    files.sort();
    let mut hasher = blake3::Hasher::new();
    for (rel, hash) in &files {
        hasher.update(rel.as_bytes());
        hasher.update(b"\0");
        hasher.update(hash.as_bytes());
        hasher.update(b"\n");
    }
    Ok(format!("blake3:{}", hasher.finalize().to_hex()))
}
