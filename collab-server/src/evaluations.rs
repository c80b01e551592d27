//! Evaluations the server runs itself. The promotion policy needs a passing
//! prompt-test run of the version being promoted; a run a client logged says
//! whatever the client wrote (`pass_rate = 1` is one call away), so only an
//! evaluation the server ran counts as evidence.
//!
//! An editor sends a suite (promptfoo's format) for a version. The server takes the
//! adapter the version's training run uploaded, checks its content hash is the
//! version's `adapter_digest` (the identity reviews bind to), and runs
//! `ferrolab prompt-test` on that adapter and its base model in the kernels'
//! sandbox with no network, one evaluation at a time and within a deadline. The
//! result becomes a run in the `evaluations` experiment, linked to the version, and
//! the evidence (pass rate, tests, the suite's digest) is kept against the version's
//! identity with an audit entry.

use crate::sandbox::{apply_limits, Limits, Sandbox};
use ferrolab_tracking::api::require;
use ferrolab_tracking::model::Metric;
use ferrolab_tracking::store::{Actor, EvaluationOutcome, EvaluationTarget};
use ferrolab_tracking::{Identity, Role, Store, TrackingError};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The largest suite a request may send.
pub const MAX_SUITE_BYTES: usize = 1 << 20;

/// How long one evaluation may run before it is stopped.
pub const EVALUATION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The experiment the server's evaluation runs go to.
pub const EXPERIMENT: &str = "evaluations";

/// Runs evaluations, one at a time.
pub struct Evaluations {
    program: PathBuf,
    folder: PathBuf,
    sandbox: Sandbox,
    limits: Limits,
    timeout: Duration,
    running: tokio::sync::Semaphore,
}

type Result<T> = std::result::Result<T, TrackingError>;

fn internal(what: &str, e: impl std::fmt::Display) -> TrackingError {
    TrackingError::Internal(format!("{what}: {e}"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(internal("the evaluation failed", e)))
}

impl Evaluations {
    /// Evaluations run `program prompt-test` under `sandbox` and `limits`, each in a
    /// private folder under `folder` that is removed afterwards.
    pub fn new(program: PathBuf, folder: PathBuf, sandbox: Sandbox, limits: Limits) -> Self {
        Evaluations {
            program,
            folder,
            sandbox,
            limits,
            timeout: EVALUATION_TIMEOUT,
            running: tokio::sync::Semaphore::new(1),
        }
    }

    /// Runs `suite` on version `version` of `name` for `who` and keeps the result as
    /// evidence. Returns the run and what it measured.
    pub async fn evaluate(
        &self,
        store: Arc<dyn Store>,
        who: &Identity,
        name: &str,
        version: &str,
        suite: &str,
    ) -> Result<Value> {
        require(who, Role::Editor)?;
        if suite.trim().is_empty() {
            return Err(TrackingError::invalid(
                "Missing value for required parameter 'suite' (a prompt-test suite in promptfoo's YAML format)",
            ));
        }
        if suite.len() > MAX_SUITE_BYTES {
            return Err(TrackingError::invalid(format!(
                "the suite is {} bytes; at most {MAX_SUITE_BYTES} are accepted",
                suite.len()
            )));
        }
        let _turn = self.running.try_acquire().map_err(|_| {
            TrackingError::Busy(
                "the server is running another evaluation (one at a time); try again when it has finished"
                    .into(),
            )
        })?;
        let target = {
            let (store, name, version) = (store.clone(), name.to_string(), version.to_string());
            blocking(move || store.evaluation_target(&name, &version)).await?
        };
        std::fs::create_dir_all(&self.folder)
            .map_err(|e| internal("cannot create the evaluations folder", e))?;
        let work = tempfile::Builder::new()
            .prefix("evaluation-")
            .tempdir_in(&self.folder)
            .map_err(|e| internal("cannot create the evaluation's folder", e))?;
        let base_model = {
            let (target, work) = (target.clone(), work.path().to_path_buf());
            blocking(move || materialise(&target, &work)).await?
        };
        std::fs::write(work.path().join("suite.yaml"), suite)
            .map_err(|e| internal("cannot write the suite", e))?;
        let results = self.run_suite(work.path(), &base_model).await?;
        let outcome = {
            let (store, who, target, suite) =
                (store, who.clone(), target.clone(), suite.to_string());
            let base_model = base_model.clone();
            blocking(move || record(store.as_ref(), &who, &target, &suite, &base_model, &results))
                .await?
        };
        Ok(outcome)
    }

    /// Runs the suite in `work` on the adapter there; `results.json`'s contents.
    async fn run_suite(&self, work: &Path, base_model: &str) -> Result<Value> {
        let inner = self.sandbox.inner_work(work);
        let provider = format!("ferrolab:{base_model}+{}", inner.join("adapter").display());
        let args: Vec<OsString> = vec![
            "prompt-test".into(),
            inner.join("suite.yaml").into(),
            "--provider".into(),
            provider.into(),
            "--no-cache".into(),
            "--name".into(),
            "evaluation".into(),
            "--output".into(),
            inner.join("results.json").into(),
        ];
        let mut command = self.sandbox.job_command(&self.program, &args, work);
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        apply_limits(&mut command, &self.limits);
        let child = command
            .spawn()
            .map_err(|e| internal(&format!("cannot run {}", self.program.display()), e))?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(output) => output.map_err(|e| internal("the evaluation failed", e))?,
            Err(_) => {
                return Err(TrackingError::invalid(format!(
                    "the evaluation did not finish within {} minutes and was stopped; send a smaller suite",
                    self.timeout.as_secs() / 60
                )))
            }
        };
        // 0: every test passed; 100: some failed (the pass rate says how many).
        if !matches!(output.status.code(), Some(0 | 100)) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(TrackingError::invalid(format!(
                "the suite did not run ({}): {}",
                output.status,
                tail.join("\n")
            )));
        }
        let text = std::fs::read(work.join("results.json"))
            .map_err(|e| internal("the evaluation wrote no results", e))?;
        serde_json::from_slice(&text).map_err(|e| internal("the evaluation's results", e))
    }
}

/// Copies the target's adapter files into `work/adapter`, checks their content hash
/// is the version's adapter digest, and returns the base model its config names.
fn materialise(target: &EvaluationTarget, work: &Path) -> Result<String> {
    let adapter = work.join("adapter");
    for (relative, blob) in &target.files {
        let relative = Path::new(relative);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(internal(
                "an adapter file has an unsafe path",
                relative.display(),
            ));
        }
        let to = adapter.join(relative);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| internal("cannot lay out the adapter", e))?;
        }
        std::fs::copy(blob, &to).map_err(|e| internal("cannot read the stored adapter", e))?;
    }
    let digest = ferrolab_tracking::content_hash(&adapter)
        .map_err(|e| internal("cannot hash the adapter", e))?;
    if target.adapter_digest.is_empty() {
        return Err(TrackingError::invalid(format!(
            "version {} of {} was registered without its adapter's digest (lineage.adapter.hash), so the server cannot tell that the uploaded adapter is the version: register it with %register, which records the digest",
            target.version, target.name
        )));
    }
    if digest != target.adapter_digest {
        return Err(TrackingError::PermissionDenied(format!(
            "the adapter run {} uploaded ({digest}) is not the one version {} of {} was registered with ({}): the server evaluates exactly the registered adapter; register the run's adapter as a new version",
            target.run_id, target.version, target.name, target.adapter_digest
        )));
    }
    let config = std::fs::read(adapter.join("adapter_config.json")).map_err(|_| {
        TrackingError::invalid(format!(
            "the adapter run {} uploaded has no adapter_config.json, so its base model is unknown",
            target.run_id
        ))
    })?;
    let config: Value = serde_json::from_slice(&config).map_err(|e| {
        TrackingError::invalid(format!(
            "the adapter's adapter_config.json is not JSON: {e}"
        ))
    })?;
    let base = config["base_model_name_or_path"]
        .as_str()
        .filter(|base| !base.is_empty() && !base.contains('+'))
        .ok_or_else(|| {
            TrackingError::invalid(
                "the adapter's adapter_config.json names no base_model_name_or_path the server can load",
            )
        })?;
    // A path is given as the file it finally names: a link into a folder the
    // sandbox replaces (such as /tmp) would not resolve inside it.
    Ok(match Path::new(base) {
        path if path.is_absolute() => std::fs::canonicalize(path)
            .map(|real| real.display().to_string())
            .unwrap_or_else(|_| base.to_string()),
        _ => base.to_string(),
    })
}

/// Keeps the evaluation as a finished run in the `evaluations` experiment and as
/// the version's evidence.
fn record(
    store: &dyn Store,
    who: &Identity,
    target: &EvaluationTarget,
    suite: &str,
    base_model: &str,
    results: &Value,
) -> Result<Value> {
    let stats = &results["stats"];
    let pass_rate = stats["passRate"]
        .as_f64()
        .ok_or_else(|| internal("the evaluation's results", "no stats.passRate"))?;
    let count = |key: &str| stats[key].as_u64().unwrap_or(0);
    let (passed, failed, errors) = (count("successes"), count("failures"), count("errors"));
    let tests = (passed + failed + errors) as i64;
    let experiment = match store.get_experiment_by_name(EXPERIMENT) {
        Ok(found) => found.experiment_id,
        Err(TrackingError::NotFound(_)) => match store.create_experiment(EXPERIMENT, None, &[]) {
            Ok(id) => id,
            // Made at the same moment by another call.
            Err(TrackingError::AlreadyExists(_)) => {
                store.get_experiment_by_name(EXPERIMENT)?.experiment_id
            }
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let version = target.version.to_string();
    let tags = vec![
        ("ferrolab.evaluation.model".to_string(), target.name.clone()),
        ("ferrolab.evaluation.version".to_string(), version.clone()),
        (
            "ferrolab.evaluation.version_uid".to_string(),
            target.uid.clone(),
        ),
        (
            "ferrolab.evaluation.adapter_digest".to_string(),
            target.adapter_digest.clone(),
        ),
        ("ferrolab.recorded_by".to_string(), "server".to_string()),
    ];
    let run_name = format!("evaluate {} v{}", target.name, target.version);
    let run = store.create_run(
        &experiment,
        &who.name,
        &who.name,
        Some(&run_name),
        None,
        &tags,
    )?;
    let run_id = run.info.run_id;
    let now = ferrolab_tracking::store::now_ms();
    let metric = |key: &str, value: f64| Metric {
        key: key.to_string(),
        value,
        timestamp: now,
        step: 0,
    };
    let mut metrics = vec![
        metric("pass_rate", pass_rate),
        metric("passed", passed as f64),
        metric("failed", failed as f64),
        metric("errors", errors as f64),
    ];
    if let Some(latency) = stats["latencyMsMean"].as_f64() {
        metrics.push(metric("latency_ms_mean", latency));
    }
    let suite_sha256 = ferrolab_tracking::digest_hex(suite.as_bytes());
    let params = vec![
        ("model".to_string(), target.name.clone()),
        ("version".to_string(), version),
        ("base_model".to_string(), base_model.to_string()),
        ("suite_sha256".to_string(), suite_sha256.clone()),
    ];
    store.log_batch(&run_id, &metrics, &params, &[])?;
    let artifacts = format!("{experiment}/{run_id}/artifacts");
    store.put_artifact(&format!("{artifacts}/suite.yaml"), suite.as_bytes())?;
    let results_text =
        serde_json::to_vec_pretty(results).map_err(|e| internal("the evaluation's results", e))?;
    store.put_artifact(&format!("{artifacts}/results.json"), &results_text)?;
    store.update_run(
        &run_id,
        Some("FINISHED"),
        Some(ferrolab_tracking::store::now_ms()),
        None,
    )?;
    let outcome = EvaluationOutcome {
        run_id: run_id.clone(),
        pass_rate,
        tests,
        suite_sha256,
    };
    let actor = Actor {
        name: &who.name,
        owner: who.role >= Role::Owner,
    };
    store.record_server_evaluation(&actor, target, &outcome)?;
    Ok(json!({
        "run_id": run_id,
        "name": target.name,
        "version": target.version.to_string(),
        "pass_rate": pass_rate,
        "tests": tests,
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "adapter_digest": target.adapter_digest,
        "base_model": base_model,
    }))
}
