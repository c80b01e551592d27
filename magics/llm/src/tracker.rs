//! The tracking interface a run reports through. The run folder is always written;
//! a [`Tracker`] forwards the same facts elsewhere (the shared tracking server).

use anyhow::{Context, Result};
pub use ferrolab_tracking::model::{Experiment, KeyValue, Metric, Run};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Finished,
    /// Stopped by the user (Ctrl-C, kernel interrupt) after a checkpoint.
    Interrupted,
    /// Stopped because the loss stopped being a number.
    Diverged,
}

/// One optimizer step's figures, as a training run reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Tokens in the step's batches (prompt and completion, no padding).
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
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

/// Where tracking calls go: a tracking server's REST API ([`Http`]), or a store in
/// this process (the local store a [`Tracking`] falls back to). Endpoints are MLflow's
/// (`runs/create`) or, prefixed `ferrolab/`, ferrolab's governance API.
pub trait Backend: Send + Sync {
    fn call(
        &self,
        method: &str,
        endpoint: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value>;
    /// Where the calls go, for messages: a URL, or the local store's path.
    fn describe(&self) -> String;
    /// Stores `bytes` as the artifact at `path` (`EXPERIMENT/RUN/artifacts/NAME`, the
    /// part of a run's `mlflow-artifacts:/` URI after the scheme).
    fn put_artifact(&self, path: &str, bytes: &[u8]) -> Result<()>;
    /// A call that may take up to `wait` to answer (an evaluation the server runs);
    /// ordinary calls give up sooner.
    fn call_waiting(
        &self,
        method: &str,
        endpoint: &str,
        body: serde_json::Value,
        wait: std::time::Duration,
    ) -> Result<serde_json::Value> {
        let _ = wait;
        self.call(method, endpoint, body)
    }
    /// Whether calls reach a server (else they go to a store in this process).
    fn is_remote(&self) -> bool {
        false
    }
}

/// MLflow's REST API (and ferrolab's `/api/2.0/ferrolab/`) over HTTP: `ferrolab
/// collab serve`, or MLflow's own server for the MLflow endpoints.
pub struct Http {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Http {
    pub fn new(uri: &str, token: Option<String>) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        Http {
            base: uri.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }
}

impl Backend for Http {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn put_artifact(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{path}", self.base);
        let mut request = self
            .agent
            .put(&url)
            .header("Content-Type", "application/octet-stream");
        if let Some(t) = &self.token {
            request = request.header("Authorization", &format!("Bearer {t}"));
        }
        let mut response = request
            .send(bytes)
            .map_err(|e| anyhow::anyhow!("cannot upload the artifact to {url}: {e}"))?;
        if !response.status().is_success() {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            anyhow::bail!(
                "the tracking server refused the artifact {path}: {} {text}",
                response.status()
            );
        }
        Ok(())
    }

    fn call(
        &self,
        method: &str,
        endpoint: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value> {
        self.send(method, endpoint, body, None)
    }

    fn call_waiting(
        &self,
        method: &str,
        endpoint: &str,
        body: serde_json::Value,
        wait: std::time::Duration,
    ) -> Result<serde_json::Value> {
        self.send(method, endpoint, body, Some(wait))
    }

    fn is_remote(&self) -> bool {
        true
    }
}

impl Http {
    fn send(
        &self,
        method: &str,
        endpoint: &str,
        body: serde_json::Value,
        wait: Option<std::time::Duration>,
    ) -> Result<serde_json::Value> {
        let url = match endpoint.strip_prefix("ferrolab/") {
            Some(rest) => format!("{}/api/2.0/ferrolab/{rest}", self.base),
            None => format!("{}/api/2.0/mlflow/{endpoint}", self.base),
        };
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let response = if method == "GET" {
            let mut request = self.agent.get(&url);
            if let Some(a) = &auth {
                request = request.header("Authorization", a);
            }
            if let serde_json::Value::Object(map) = &body {
                for (k, v) in map {
                    let v = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    request = request.query(k, &v);
                }
            }
            request.call()
        } else {
            let mut request = self
                .agent
                .post(&url)
                .header("Content-Type", "application/json");
            if let Some(a) = &auth {
                request = request.header("Authorization", a);
            }
            if let Some(wait) = wait {
                request = request.config().timeout_global(Some(wait)).build();
            }
            request.send(body.to_string())
        };
        let mut response = response.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the tracking server at {url}: {e} (check FERROLAB_TRACKING_URI or %track connect)"
            )
        })?;
        let status = response.status();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let message = value["message"].as_str().unwrap_or(&text).to_string();
            let code = value["error_code"].as_str().unwrap_or("").to_string();
            anyhow::bail!("the tracking server answered {status} {code}: {message}");
        }
        Ok(value)
    }
}

/// Where one process's runs go: the server `%track connect` chose; else the server
/// named by `$FERROLAB_TRACKING_URI` (with `$FERROLAB_TRACKING_TOKEN`, else
/// `$MLFLOW_TRACKING_TOKEN`); else the local store, when there is one. The binary
/// makes one per kernel (or command) and hands it to every family that reports
/// runs, so all of them follow one `%track connect`.
pub struct Tracking {
    connected: std::sync::RwLock<Option<Arc<dyn Backend>>>,
    local: Option<Arc<dyn Backend>>,
}

impl Tracking {
    /// Tracking that falls back to `local` when no server is named.
    pub fn new(local: Option<Arc<dyn Backend>>) -> Arc<Tracking> {
        Arc::new(Tracking {
            connected: std::sync::RwLock::new(None),
            local,
        })
    }

    /// Sends runs to `backend` from now on (`%track connect`), or, with `None`,
    /// back to what the environment says.
    pub fn connect(&self, backend: Option<Arc<dyn Backend>>) {
        *self.connected.write().unwrap_or_else(|e| e.into_inner()) = backend;
    }

    /// The backend runs go to now, if any.
    pub fn backend(&self) -> Option<Arc<dyn Backend>> {
        if let Some(b) = self
            .connected
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Some(b);
        }
        match std::env::var("FERROLAB_TRACKING_URI") {
            Ok(uri) if !uri.trim().is_empty() => Some(Arc::new(Http::new(&uri, env_token()))),
            _ => self.local.clone(),
        }
    }

    /// The tracker for a run filed under `experiment` and started by `cell` (if a
    /// notebook cell started it): reports through [`Tracking::backend`], or only to
    /// the run folder when there is none.
    pub fn tracker(&self, experiment: &str, cell: Option<&str>) -> Box<dyn Tracker> {
        match self.backend() {
            Some(b) => Box::new(Remote::new(b, experiment, cell)),
            None => Box::new(LocalOnly),
        }
    }
}

/// The token from `$FERROLAB_TRACKING_TOKEN`, else `$MLFLOW_TRACKING_TOKEN`.
pub fn env_token() -> Option<String> {
    std::env::var("FERROLAB_TRACKING_TOKEN")
        .or_else(|_| std::env::var("MLFLOW_TRACKING_TOKEN"))
        .ok()
        .filter(|t| !t.is_empty())
}

/// `key` of a tracking reply, read into the tracking store's own entity, so that
/// what a server answers is read by the same types that wrote it.
pub fn read<T: DeserializeOwned>(reply: &serde_json::Value, key: &str) -> Result<T> {
    serde_json::from_value(reply[key].clone())
        .with_context(|| format!("the tracking reply's '{key}' is not what was expected"))
}

/// The id of the experiment `name`, or `None` when there is none.
pub fn find_experiment(backend: &dyn Backend, name: &str) -> Result<Option<String>> {
    match backend.call(
        "GET",
        "experiments/get-by-name",
        serde_json::json!({"experiment_name": name}),
    ) {
        Ok(found) => Ok(Some(
            read::<Experiment>(&found, "experiment")?.experiment_id,
        )),
        Err(e) if e.to_string().contains("RESOURCE_DOES_NOT_EXIST") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The id of the experiment `name`, created when missing.
pub fn experiment_id(backend: &dyn Backend, name: &str) -> Result<String> {
    match find_experiment(backend, name)? {
        Some(id) => Ok(id),
        None => Ok(backend.call(
            "POST",
            "experiments/create",
            serde_json::json!({"name": name}),
        )?["experiment_id"]
            .as_str()
            .unwrap_or("0")
            .to_string()),
    }
}

/// Reports a run through a [`Backend`] in MLflow's terms (an experiment, a run,
/// params, metric series, tags, a final status). The run folder stays the record:
/// if the backend cannot be reached when the run starts, the run stops with that
/// error before any work; a failure later is logged as a warning and the run goes on.
pub struct Remote {
    backend: Arc<dyn Backend>,
    experiment: String,
    /// The notebook cell that started the run, tagged on it.
    cell: Option<String>,
    run_id: Option<String>,
    /// The run's artifact folder on the server (`EXP/RUN/artifacts`), when it keeps
    /// artifacts itself (`mlflow-artifacts:/` URIs).
    artifact_base: Option<String>,
}

impl Remote {
    pub fn new(backend: Arc<dyn Backend>, experiment: &str, cell: Option<&str>) -> Remote {
        Remote {
            backend,
            experiment: experiment.to_string(),
            cell: cell.map(str::to_string),
            run_id: None,
            artifact_base: None,
        }
    }

    /// The run's id once it has started.
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    fn batch(&self, body: serde_json::Value) {
        if let Some(run_id) = &self.run_id {
            let mut body = body;
            body["run_id"] = serde_json::Value::String(run_id.clone());
            if let Err(e) = self.backend.call("POST", "runs/log-batch", body) {
                log::warn!("tracking: {e:#}; the run folder still has everything");
            }
        }
    }

    fn metrics(step: usize, values: &[(&str, f64)]) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp_millis();
        let metrics: Vec<Metric> = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| Metric {
                key: k.to_string(),
                value: *v,
                timestamp: now,
                step: step as i64,
            })
            .collect();
        serde_json::json!({ "metrics": metrics })
    }
}

/// The most a run uploads for one artifact (a merged model stays in the run folder).
pub const MAX_UPLOAD: u64 = 256 << 20;

/// Uploads the file or folder at `path` as `BASE/NAME[/…]`.
fn upload(backend: &dyn Backend, base: &str, name: &str, path: &Path) -> Result<()> {
    let mut files = Vec::new();
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let p = entry?.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
    } else {
        files.push(path.to_path_buf());
    }
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    if total > MAX_UPLOAD {
        anyhow::bail!(
            "{} is {} MiB, over the {} MiB a run uploads; it is not copied to the server",
            path.display(),
            total >> 20,
            MAX_UPLOAD >> 20
        );
    }
    for file in files {
        let rel = file
            .strip_prefix(path)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .map(|r| format!("{name}/{}", r.to_string_lossy().replace('\\', "/")))
            .unwrap_or_else(|| name.to_string());
        let bytes = std::fs::read(&file)?;
        backend.put_artifact(&format!("{base}/{rel}"), &bytes)?;
    }
    Ok(())
}

/// Where a run comes from, as MLflow's tags: the notebook (Jupyter servers name it
/// in `$JPY_SESSION_NAME`) and the cell that started it (the magic's
/// [`ferrolab_magics::Host::current_cell`]), when known.
pub fn source_tags(cell: Option<&str>) -> Vec<KeyValue> {
    let mut tags = Vec::new();
    if let Ok(notebook) = std::env::var("JPY_SESSION_NAME") {
        if !notebook.is_empty() {
            tags.push(KeyValue::new("mlflow.source.name", notebook));
        }
    }
    if let Some(cell) = cell {
        tags.push(KeyValue::new("ferrolab.source.cell", cell));
    }
    tags
}

/// A run's parameters as MLflow params: nested keys joined with dots, values as text.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Null => {}
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

impl Tracker for Remote {
    fn start(&mut self, run_dir: &Path, params: &serde_json::Value) -> Result<()> {
        let experiment = experiment_id(&*self.backend, &self.experiment)?;
        let name = run_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "run".to_string());
        let mut tags = vec![
            KeyValue::new("ferrolab.run_dir", run_dir.display().to_string()),
            KeyValue::new("mlflow.source.type", "NOTEBOOK"),
        ];
        tags.extend(source_tags(self.cell.as_deref()));
        let created = self.backend.call(
            "POST",
            "runs/create",
            serde_json::json!({
                "experiment_id": experiment,
                "run_name": name,
                "start_time": chrono::Utc::now().timestamp_millis(),
                "tags": tags,
            }),
        )?;
        let run: Run = read(&created, "run")?;
        self.artifact_base = run
            .info
            .artifact_uri
            .strip_prefix("mlflow-artifacts:/")
            .map(|u| u.trim_matches('/').to_string());
        self.run_id = Some(run.info.run_id).filter(|id| !id.is_empty());
        let mut pairs = Vec::new();
        flatten("", params, &mut pairs);
        for chunk in pairs.chunks(100) {
            let params: Vec<KeyValue> = chunk
                .iter()
                .map(|(k, v)| KeyValue::new(k.as_str(), v.chars().take(6000).collect::<String>()))
                .collect();
            self.batch(serde_json::json!({ "params": params }));
        }
        Ok(())
    }

    fn log_metrics(&mut self, step: usize, m: &StepMetrics) -> Result<()> {
        let mut values = vec![
            ("loss", m.loss),
            ("lr", m.lr),
            ("grad_norm", m.grad_norm),
            ("tokens_per_s", m.tokens_per_s),
        ];
        if let Some(e) = m.eval_loss {
            values.push(("eval_loss", e));
        }
        self.batch(Self::metrics(step, &values));
        Ok(())
    }

    fn log_values(
        &mut self,
        step: usize,
        values: &std::collections::BTreeMap<String, f64>,
    ) -> Result<()> {
        let pairs: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        self.batch(Self::metrics(step, &pairs));
        Ok(())
    }

    fn log_artifact(&mut self, path: &Path) -> Result<()> {
        // The run folder keeps the artifact; the tag says where. A store that keeps
        // artifacts gets a content-addressed copy, up to MAX_UPLOAD in all.
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let tag = KeyValue::new(
            format!("ferrolab.artifact.{name}"),
            path.display().to_string(),
        );
        self.batch(serde_json::json!({ "tags": [tag] }));
        if let Some(base) = &self.artifact_base {
            if let Err(e) = upload(&*self.backend, base, &name, path) {
                log::warn!(
                    "tracking: {e:#}; the run folder still has {}",
                    path.display()
                );
            }
        }
        Ok(())
    }

    fn finish(&mut self, status: RunStatus) -> Result<()> {
        if let Some(run_id) = &self.run_id {
            let status = match status {
                RunStatus::Finished => "FINISHED",
                RunStatus::Interrupted => "KILLED",
                RunStatus::Diverged => "FAILED",
            };
            let body = serde_json::json!({
                "run_id": run_id,
                "status": status,
                "end_time": chrono::Utc::now().timestamp_millis(),
            });
            if let Err(e) = self.backend.call("POST", "runs/update", body) {
                log::warn!("tracking: {e:#}; the run folder still has everything");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that only says its name.
    struct Named(&'static str);

    impl Backend for Named {
        fn call(&self, _: &str, _: &str, _: serde_json::Value) -> Result<serde_json::Value> {
            Ok(serde_json::Value::Null)
        }
        fn describe(&self) -> String {
            self.0.to_string()
        }
        fn put_artifact(&self, _: &str, _: &[u8]) -> Result<()> {
            Ok(())
        }
    }

    fn target(tracking: &Tracking) -> Option<String> {
        tracking.backend().map(|b| b.describe())
    }

    #[test]
    fn connect_moves_runs_and_disconnect_brings_them_back() {
        // Without a connection, runs go to $FERROLAB_TRACKING_URI when it is set.
        let fallback = match std::env::var("FERROLAB_TRACKING_URI") {
            Ok(uri) if !uri.trim().is_empty() => uri.trim_end_matches('/').to_string(),
            _ => "local".to_string(),
        };
        let tracking = Tracking::new(Some(Arc::new(Named("local"))));
        assert_eq!(target(&tracking), Some(fallback.clone()));
        tracking.connect(Some(Arc::new(Named("server"))));
        assert_eq!(target(&tracking), Some("server".to_string()));
        // Two kernels (two handles) do not share a connection.
        let other = Tracking::new(None);
        assert_ne!(target(&other), Some("server".to_string()));
        tracking.connect(None);
        assert_eq!(target(&tracking), Some(fallback));
    }
}
