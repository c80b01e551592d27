//! Run artifacts, content-addressed: a file's bytes are stored once under their
//! SHA-256 (`DATA/artifacts/sha256/ab/abcd…`), and the tracking store maps each
//! artifact path (`EXPERIMENT/RUN/artifacts/…`, what MLflow's artifact URIs name) to
//! a hash. Served as MLflow's artifact proxy (`/api/2.0/mlflow-artifacts/artifacts`),
//! so the `mlflow` client's `log_artifact(s)`, `list_artifacts` and
//! `download_artifacts` work against the server unchanged.
//!
//! A blob is on disk (fsynced) before the path that names it is recorded: a crash
//! can leave an unnamed blob, never a name without its bytes.

use super::db::args;
use super::SqlStore;
use crate::model::{ArtifactEntry, StoredArtifact};
use crate::store::{now_ms, ArtifactStore, Result, TrackingError};
use crate::upload::{invalid_path, segments, Upload};
use std::collections::BTreeMap;
use std::path::PathBuf;

impl SqlStore {
    pub(crate) fn blob_path(&self, hash: &str) -> PathBuf {
        self.artifacts_dir()
            .join("sha256")
            .join(&hash[..2])
            .join(hash)
    }

    /// The blob `hash` on local disk: in the data folder, or fetched from the
    /// object store into it.
    pub(crate) fn local_blob(&self, hash: &str) -> Result<PathBuf> {
        let blob = self.blob_path(hash);
        if blob.is_file() {
            if self.remote.is_some() {
                touch(&blob);
            }
            return Ok(blob);
        }
        match &self.remote {
            Some(remote) => {
                remote
                    .fetch(hash, &blob)
                    .map_err(|error| TrackingError::Internal(format!("{error:#}")))?;
                self.trim_cache();
            }
            // On a shared database, another replica may have stored the bytes.
            None if self.shared() => {
                return Err(TrackingError::Internal(format!(
                    "the bytes of this artifact ({hash}) are not on this replica: replicas on one \
                     database share artifacts only through object storage; start every replica \
                     with --artifacts s3://BUCKET/PREFIX"
                )))
            }
            None => {}
        }
        Ok(blob)
    }

    /// The run an artifact path belongs to (`EXPERIMENT/RUN/artifacts/NAME…`),
    /// checked to exist, to be in that experiment and, for writes, to be active.
    fn artifact_run(&self, path: &str, write: bool) -> Result<String> {
        let parts = segments(path)?;
        if parts.len() < 4 || parts[2] != "artifacts" {
            return Err(invalid_path(
                path,
                "artifacts live under EXPERIMENT_ID/RUN_ID/artifacts/NAME (a run's artifact_uri)",
            ));
        }
        let (experiment, run_id) = (parts[0], parts[1]);
        self.read(|tx| {
            let found: Option<(i64, String)> = tx.query_opt(
                "SELECT experiment_id, lifecycle_stage FROM runs WHERE run_id = ?1",
                args![run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            match found {
                None => Err(TrackingError::missing(format!(
                    "Run with id={run_id} not found"
                ))),
                Some((exp, _)) if exp.to_string() != experiment => Err(invalid_path(
                    path,
                    &format!("run {run_id} is in experiment {exp}, not {experiment}"),
                )),
                Some((_, stage)) if write && stage != "active" => {
                    Err(TrackingError::invalid(format!(
                        "The run {run_id} must be in the 'active' state. Current state is {stage}."
                    )))
                }
                Some(_) => Ok(run_id.to_string()),
            }
        })
    }
}

/// Blobs used this recently are never trimmed: a download or an evaluation may
/// be about to open the file it was handed.
const CACHE_IN_USE: std::time::Duration = std::time::Duration::from_secs(10);

/// Marks a cached blob as just used (its modification time orders the trim).
fn touch(blob: &std::path::Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(blob)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()));
    if let Err(error) = touched {
        log::debug!("cannot mark {} as used: {error}", blob.display());
    }
}

impl SqlStore {
    /// With an object store: removes the data folder's copies of its blobs, least
    /// recently used first, until they take at most the cache limit (every blob
    /// is in the bucket, so nothing is lost: a later read fetches it again).
    /// Blobs used in the last [`CACHE_IN_USE`] stay even over the limit. One trim
    /// at a time; a call while another runs returns at once.
    pub(crate) fn trim_cache(&self) {
        let (Some(_), Some(limit)) = (&self.remote, self.cache_limit) else {
            return;
        };
        let Ok(_trimming) = self.trimming.try_lock() else {
            return;
        };
        let root = self.artifacts_dir().join("sha256");
        let mut blobs = Vec::new();
        let mut total = 0u64;
        for folder in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for entry in std::fs::read_dir(folder.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                // Blobs only: a fetch's or an upload's temporary is not one.
                let is_blob = entry.file_name().to_str().is_some_and(|name| {
                    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
                });
                let Ok(meta) = entry.metadata() else { continue };
                if !is_blob || !meta.is_file() {
                    continue;
                }
                let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                total += meta.len();
                blobs.push((used, meta.len(), entry.path()));
            }
        }
        if total <= limit {
            return;
        }
        blobs.sort();
        let now = std::time::SystemTime::now();
        for (used, size, path) in blobs {
            if total <= limit || now.duration_since(used).unwrap_or_default() < CACHE_IN_USE {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => total -= size,
                Err(error) => log::warn!(
                    "cannot trim the artifact cache ({}): {error}",
                    path.display()
                ),
            }
        }
    }
}

impl ArtifactStore for SqlStore {
    /// The bytes go to a temporary file beside the blobs as they arrive
    /// ([`Upload::write`]); [`ArtifactStore::finish_upload`] names it.
    fn start_upload(&self, path: &str) -> Result<Upload> {
        self.artifact_run(path, true)?;
        Upload::begin(&self.artifacts_dir().join("sha256"), path)
    }

    fn finish_upload(&self, upload: Upload) -> Result<StoredArtifact> {
        let Upload {
            path,
            file,
            temp,
            hasher,
            size,
        } = upload;
        let stored = |e: std::io::Error| {
            TrackingError::Internal(format!("cannot store the artifact's bytes: {e}"))
        };
        // Checked again: the run may have ended while the bytes arrived.
        let run_id = self.artifact_run(&path, true)?;
        let hash = crate::hex(hasher.finish().as_ref());
        let blob = self.blob_path(&hash);
        if !blob.is_file() {
            file.sync_all().map_err(stored)?;
            drop(file);
            let dir = blob
                .parent()
                .ok_or_else(|| stored(std::io::Error::other("a blob path has no parent folder")))?;
            std::fs::create_dir_all(dir).map_err(stored)?;
            temp.persist(&blob).map_err(|e| stored(e.error))?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(stored)?;
        }
        // In the object store before any path names it.
        if let Some(remote) = &self.remote {
            remote
                .put_file(&hash, &blob)
                .map_err(|error| TrackingError::Internal(format!("{error:#}")))?;
            touch(&blob);
            self.trim_cache();
        }
        let path = segments(&path)?.join("/");
        self.with(|tx| {
            tx.execute(
                "INSERT INTO artifacts (path, run_id, sha256, size, created) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (path) DO UPDATE SET run_id = excluded.run_id, sha256 = excluded.sha256, size = excluded.size, created = excluded.created",
                args![path, run_id, hash, size as i64, now_ms()],
            )?;
            Ok(())
        })?;
        Ok(StoredArtifact {
            path,
            sha256: hash,
            size,
        })
    }

    /// The bytes of the artifact at `path`.
    fn artifact_file(&self, path: &str) -> Result<(PathBuf, u64)> {
        let path = segments(path)?.join("/");
        let (hash, size): (String, i64) = self
            .read(|tx| {
                tx.query_opt(
                    "SELECT sha256, size FROM artifacts WHERE path = ?1",
                    args![&path],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })?
            .ok_or_else(|| TrackingError::missing(format!("No artifact at '{path}'")))?;
        Ok((self.local_blob(&hash)?, size.max(0) as u64))
    }

    /// The files and folders directly in `dir`, as MLflow lists them (names only).
    fn list_artifacts(&self, dir: &str) -> Result<Vec<ArtifactEntry>> {
        let dir = segments(dir)?.join("/");
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let rows: Vec<(String, i64)> = self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT path, size FROM artifacts WHERE substr(path, 1, length(CAST(?1 AS TEXT))) = CAST(?1 AS TEXT) ORDER BY path",
            )?;
            let rows = stmt.query_map(args![&prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_>>()
        })?;
        let mut entries: BTreeMap<String, Option<i64>> = BTreeMap::new();
        for (path, size) in rows {
            let rest = &path[prefix.len()..];
            match rest.split_once('/') {
                Some((folder, _)) => {
                    entries.insert(folder.to_string(), None);
                }
                None => {
                    entries.insert(rest.to_string(), Some(size));
                }
            }
        }
        Ok(entries
            .into_iter()
            .map(|(path, file_size)| ArtifactEntry {
                path,
                is_dir: file_size.is_none(),
                file_size,
            })
            .collect())
    }

    /// Forgets the artifact at `path` (its bytes stay while another path names them).
    fn delete_artifact(&self, path: &str) -> Result<()> {
        self.artifact_run(path, true)?;
        let path = segments(path)?.join("/");
        let removed = self.with(|tx| {
            tx.execute(
                "DELETE FROM artifacts WHERE path = ?1 OR substr(path, 1, length(CAST(?2 AS TEXT))) = CAST(?2 AS TEXT)",
                args![path, format!("{path}/")],
            )
        })?;
        if removed == 0 {
            return Err(TrackingError::missing(format!("No artifact at '{path}'")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunStore;
    use serde_json::json;

    #[test]
    fn artifacts_are_stored_once_by_content_and_listed_like_mlflow() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqlStore::open_sqlite(&dir.path().join("t.sqlite")).expect("open");
        let run = store
            .create_run("0", "a", "a", None, None, &[])
            .expect("run");
        let id = run.info.run_id;
        let base = format!("0/{id}/artifacts");
        let put = store
            .put_artifact(&format!("{base}/model/weights.bin"), b"same")
            .expect("put");
        store
            .put_artifact(&format!("{base}/copy.bin"), b"same")
            .expect("put");
        store
            .put_artifact(&format!("{base}/notes.txt"), b"hello")
            .expect("put");
        let blobs: Vec<_> = walk(&dir.path().join("artifacts"));
        assert_eq!(
            blobs.len(),
            2,
            "two distinct contents, two blobs: {blobs:?}"
        );
        assert_eq!(put.sha256.len(), 64);
        assert_eq!(
            store
                .get_artifact(&format!("{base}/model/weights.bin"))
                .expect("get"),
            b"same"
        );
        let listed = store.list_artifacts(&base).expect("list");
        assert_eq!(
            crate::model::to_json(&listed).expect("json"),
            json!([
                {"path": "copy.bin", "is_dir": false, "file_size": 4},
                {"path": "model", "is_dir": true},
                {"path": "notes.txt", "is_dir": false, "file_size": 5},
            ])
        );
        assert_eq!(
            store
                .list_artifacts(&format!("{base}/model"))
                .expect("list")
                .len(),
            1
        );
        for bad in [
            "../x",
            &format!("{base}/../../etc"),
            "0/nope/artifacts/x",
            &format!("1/{id}/artifacts/x"),
            &format!("0/{id}/other/x"),
        ] {
            assert!(
                store.put_artifact(bad, b"x").is_err(),
                "{bad} must be refused"
            );
        }
        store
            .delete_artifact(&format!("{base}/model"))
            .expect("delete folder");
        assert!(store
            .get_artifact(&format!("{base}/model/weights.bin"))
            .is_err());
        assert_eq!(
            store
                .get_artifact(&format!("{base}/copy.bin"))
                .expect("kept"),
            b"same"
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
