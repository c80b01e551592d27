//! The tracking interface a run reports through. The run folder is always written;
//! a [`Tracker`] forwards the same facts elsewhere (the shared tracking server).

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::train::StepMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Finished,
    /// Stopped by the user (Ctrl-C, kernel interrupt) after a checkpoint.
    Interrupted,
    /// Stopped because the loss stopped being a number.
    Diverged,
}

pub trait Tracker {
    /// A run starts (or resumes) in `run_dir` with these parameters.
    fn start(&mut self, run_dir: &Path, params: &serde_json::Value) -> Result<()>;
    fn log_metrics(&mut self, step: usize, metrics: &StepMetrics) -> Result<()>;
    /// Named values at a step, for runs that are not training (prompt tests).
    fn log_values(
        &mut self,
        _step: usize,
        _values: &std::collections::BTreeMap<String, f64>,
    ) -> Result<()> {
        Ok(())
    }
    /// A file or folder the run produced.
    fn log_artifact(&mut self, path: &Path) -> Result<()>;
    fn finish(&mut self, status: RunStatus) -> Result<()>;
}

/// Reports nowhere but the run folder.
pub struct LocalOnly;

impl Tracker for LocalOnly {
    fn start(&mut self, _: &Path, _: &serde_json::Value) -> Result<()> {
        Ok(())
    }
    fn log_metrics(&mut self, _: usize, _: &StepMetrics) -> Result<()> {
        Ok(())
    }
    fn log_artifact(&mut self, _: &Path) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self, _: RunStatus) -> Result<()> {
        Ok(())
    }
}
