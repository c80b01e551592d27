//! Run artifacts, content-addressed: a file's bytes are stored once under their
//! SHA-256 (`DATA/artifacts/sha256/ab/abcd…`), and the tracking store maps each
//! artifact path (`EXPERIMENT/RUN/artifacts/…`, what MLflow's artifact URIs name) to
//! a hash. Served as MLflow's artifact proxy (`/api/2.0/mlflow-artifacts/artifacts`),
//! so the `mlflow` client's `log_artifact(s)`, `list_artifacts` and
//! `download_artifacts` work against the server unchanged.
//!
//! A blob is on disk (fsynced) before the path that names it is recorded: a crash
//! can leave an unnamed blob, never a name without its bytes.

use crate::store::{now_ms, Result, Store, TrackingError};
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// The largest artifact one request may upload.
pub const MAX_ARTIFACT_BYTES: usize = 1 << 30;

fn invalid_path(path: &str, why: &str) -> TrackingError {
    TrackingError::invalid(format!("invalid artifact path '{path}': {why}"))
}

/// The path's segments, refusing anything that could leave its folder.
fn segments(path: &str) -> Result<Vec<&str>> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    for part in &parts {
        if part.is_empty()
            || *part == "."
            || *part == ".."
            || part.contains('\\')
            || part.contains('\0')
        {
            return Err(invalid_path(
                path,
                "no empty, '.' or '..' parts, backslashes or NULs",
            ));
        }
    }
    Ok(parts)
}

/// An artifact upload in progress; see [`Store::start_upload`]. Dropped unfinished,
/// its temporary file is removed.
pub struct Upload {
    path: String,
    file: std::fs::File,
    temp: tempfile::TempPath,
    hasher: ring::digest::Context,
    size: u64,
}

impl Upload {
    /// Appends `chunk`; refused past [`MAX_ARTIFACT_BYTES`].
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.size += chunk.len() as u64;
        if self.size > MAX_ARTIFACT_BYTES as u64 {
            return Err(TrackingError::invalid(format!(
                "the artifact '{}' is over the {} MiB one upload may hold",
                self.path,
                MAX_ARTIFACT_BYTES >> 20
            )));
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .map_err(|e| TrackingError::Internal(format!("cannot store the artifact's bytes: {e}")))
    }
}

impl Store {
    pub(crate) fn blob_path(&self, hash: &str) -> PathBuf {
        self.artifacts_dir()
            .join("sha256")
            .join(&hash[..2])
            .join(hash)
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
        self.with(|tx| {
            let found: Option<(i64, String)> = tx
                .query_row(
                    "SELECT experiment_id, lifecycle_stage FROM runs WHERE run_id = ?1",
                    [run_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
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

    /// Stores `bytes` as the artifact at `path` (replacing what was there).
    pub fn put_artifact(&self, path: &str, bytes: &[u8]) -> Result<Value> {
        let mut upload = self.start_upload(path)?;
        upload.write(bytes)?;
        self.finish_upload(upload)
    }

    /// Begins storing the artifact at `path`, refused before any byte is sent when
    /// the path or its run cannot take it. The bytes go to a temporary file beside
    /// the blobs as they arrive ([`Upload::write`]), so an upload is never held in
    /// memory; [`Store::finish_upload`] names it.
    pub fn start_upload(&self, path: &str) -> Result<Upload> {
        self.artifact_run(path, true)?;
        let staging = self.artifacts_dir().join("sha256");
        std::fs::create_dir_all(&staging).map_err(|e| {
            TrackingError::Internal(format!("cannot store the artifact's bytes: {e}"))
        })?;
        let (file, temp) = tempfile::Builder::new()
            .prefix(".upload-")
            .tempfile_in(&staging)
            .map_err(|e| {
                TrackingError::Internal(format!("cannot store the artifact's bytes: {e}"))
            })?
            .into_parts();
        Ok(Upload {
            path: path.to_string(),
            file,
            temp,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            size: 0,
        })
    }

    /// Names the uploaded bytes: the blob is fsynced and in place (kept once by
    /// content) before the path is recorded.
    pub fn finish_upload(&self, upload: Upload) -> Result<Value> {
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
        let path = segments(&path)?.join("/");
        self.with(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO artifacts (path, run_id, sha256, size, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![path, run_id, hash, size as i64, now_ms()],
            )?;
            Ok(())
        })?;
        Ok(json!({"path": path, "sha256": hash, "size": size}))
    }

    /// The bytes of the artifact at `path`.
    pub fn get_artifact(&self, path: &str) -> Result<Vec<u8>> {
        let (file, _) = self.artifact_file(path)?;
        std::fs::read(&file).map_err(|e| {
            TrackingError::Internal(format!(
                "the bytes of artifact '{path}' ({}) cannot be read: {e}",
                file.display()
            ))
        })
    }

    /// Where the bytes of the artifact at `path` are, and how many there are (to
    /// send them without reading them whole).
    pub fn artifact_file(&self, path: &str) -> Result<(PathBuf, u64)> {
        let path = segments(path)?.join("/");
        let (hash, size): (String, i64) = self
            .with(|tx| {
                Ok(tx
                    .query_row(
                        "SELECT sha256, size FROM artifacts WHERE path = ?1",
                        [&path],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?)
            })?
            .ok_or_else(|| TrackingError::missing(format!("No artifact at '{path}'")))?;
        Ok((self.blob_path(&hash), size.max(0) as u64))
    }

    /// The files and folders directly in `dir`, as MLflow lists them (names only).
    pub fn list_artifacts(&self, dir: &str) -> Result<Vec<Value>> {
        let dir = segments(dir)?.join("/");
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let rows: Vec<(String, i64)> = self.with(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT path, size FROM artifacts WHERE substr(path, 1, length(?1)) = ?1 ORDER BY path",
            )?;
            let rows = stmt.query_map([&prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
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
            .map(|(name, size)| match size {
                Some(size) => json!({"path": name, "is_dir": false, "file_size": size}),
                None => json!({"path": name, "is_dir": true}),
            })
            .collect())
    }

    /// Forgets the artifact at `path` (its bytes stay while another path names them).
    pub fn delete_artifact(&self, path: &str) -> Result<()> {
        self.artifact_run(path, true)?;
        let path = segments(path)?.join("/");
        let removed = self.with(|tx| {
            Ok(tx.execute(
                "DELETE FROM artifacts WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2",
                params![path, format!("{path}/")],
            )?)
        })?;
        if removed == 0 {
            return Err(TrackingError::missing(format!("No artifact at '{path}'")));
        }
        Ok(())
    }
}

/// Writes a content-addressed blob: into a temporary file beside it, synced, then
/// renamed into place, so a crash never leaves a partial blob under its digest.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_stored_once_by_content_and_listed_like_mlflow() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("t.sqlite")).expect("open");
        let run = store
            .create_run("0", "a", "a", None, None, &[])
            .expect("run");
        let id = run["info"]["run_id"].as_str().expect("id").to_string();
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
        assert_eq!(put["sha256"].as_str().map(str::len), Some(64));
        assert_eq!(
            store
                .get_artifact(&format!("{base}/model/weights.bin"))
                .expect("get"),
            b"same"
        );
        let listed = store.list_artifacts(&base).expect("list");
        assert_eq!(
            listed,
            vec![
                json!({"path": "copy.bin", "is_dir": false, "file_size": 4}),
                json!({"path": "model", "is_dir": true}),
                json!({"path": "notes.txt", "is_dir": false, "file_size": 5}),
            ]
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
