//! An artifact upload in progress, spooled to a temporary file as its bytes arrive
//! and hashed on the way, so an upload is never held in memory; and the rule every
//! store applies to artifact paths.

use crate::error::{Result, TrackingError};
use std::io::Write;
use std::path::Path;

/// The largest artifact one request may upload.
pub const MAX_ARTIFACT_BYTES: usize = 1 << 30;

pub(crate) fn invalid_path(path: &str, why: &str) -> TrackingError {
    TrackingError::invalid(format!("invalid artifact path '{path}': {why}"))
}

/// The path's segments, refusing anything that could leave its folder.
pub(crate) fn segments(path: &str) -> Result<Vec<&str>> {
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

/// An artifact upload in progress; see [`ArtifactStore::start_upload`](crate::store::ArtifactStore::start_upload). Dropped unfinished,
/// its temporary file is removed.
pub struct Upload {
    pub(crate) path: String,
    pub(crate) file: std::fs::File,
    pub(crate) temp: tempfile::TempPath,
    pub(crate) hasher: ring::digest::Context,
    pub(crate) size: u64,
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

    /// Begins an upload of the artifact at `path`, its temporary file in `staging`
    /// (on the same file system as the blobs, so finishing is a rename).
    pub fn begin(staging: &Path, path: &str) -> Result<Upload> {
        let failed = |e: std::io::Error| {
            TrackingError::Internal(format!("cannot store the artifact's bytes: {e}"))
        };
        std::fs::create_dir_all(staging).map_err(failed)?;
        let (file, temp) = tempfile::Builder::new()
            .prefix(".upload-")
            .tempfile_in(staging)
            .map_err(failed)?
            .into_parts();
        Ok(Upload {
            path: path.to_string(),
            file,
            temp,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            size: 0,
        })
    }
}
