//! Parameters and metrics into the current run, from Rust.

use crate::channel::{call, CellError};
use serde_json::json;

/// Records parameter `key` = `value` on the notebook's current run (the one
/// `%track start NAME` opened).
///
/// ```no_run
/// # use ferrolab_cell::*;
/// # fn main() -> Result<(), CellError> {
/// log_param("prompt_version", "v3")?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// `UsageError` when no run is active (start one with `%track start NAME`); the
/// tracking store's answer when it refuses (for example a parameter already set to
/// another value, which MLflow forbids).
pub fn log_param(key: &str, value: &str) -> Result<(), CellError> {
    call("log_param", json!({ "key": key, "value": value }))?;
    Ok(())
}

/// Records metric `key` = `value` on the notebook's current run (at step 0, as
/// MLflow's `log_metric` does; [`log_metric_at`] gives the step).
///
/// ```no_run
/// # use ferrolab_cell::*;
/// # fn main() -> Result<(), CellError> {
/// log_metric("accuracy", 0.92)?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// `UsageError` for a value that is not finite; the tracking store's answer when
/// it refuses.
pub fn log_metric(key: &str, value: f64) -> Result<(), CellError> {
    log_metric_at(key, value, 0)
}

/// Records metric `key` = `value` at `step` (a training step, an epoch) on the
/// notebook's current run.
///
/// ```no_run
/// # use ferrolab_cell::*;
/// # fn main() -> Result<(), CellError> {
/// for (step, loss) in [2.1, 1.7, 1.4].into_iter().enumerate() {
///     log_metric_at("loss", loss, step as i64)?;
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// As [`log_metric`].
pub fn log_metric_at(key: &str, value: f64, step: i64) -> Result<(), CellError> {
    if !value.is_finite() {
        return Err(CellError::new(
            "UsageError",
            format!("metric `{key}` must be a finite number, got {value}"),
        ));
    }
    call(
        "log_metric",
        json!({ "key": key, "value": value, "step": step }),
    )?;
    Ok(())
}
