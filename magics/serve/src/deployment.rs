//! A `%serve` deployment as a tracked run (experiment `deployments`): the config as
//! params, the URL and models as tags, and each minute's traffic — requests, errors,
//! latency, throughput and mean human feedback — as metric series stepped by the
//! minute, reported while it serves and once more when it stops. The request log
//! stays the record; a tracking server that cannot be reached costs warnings.

use crate::store::{MinuteStats, Store};
use crate::ServeConfig;
use ferrolab_llm::tracker::{Backend, KeyValue, Run};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the reporter looks for finished minutes.
const EVERY: Duration = Duration::from_secs(15);

pub struct Deployment {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub run_id: String,
}

impl Deployment {
    /// Starts reporting the server `config` serving at `url`, logging to `log`,
    /// started by the notebook cell `cell` when one did.
    pub fn start(
        backend: Arc<dyn Backend>,
        config: &ServeConfig,
        url: &str,
        models: &[String],
        log: Store,
        cell: Option<&str>,
    ) -> anyhow::Result<Deployment> {
        let experiment = ferrolab_llm::tracker::experiment_id(&*backend, "deployments")?;
        let mut tags = vec![
            KeyValue::new("ferrolab.url", format!("{url}/v1")),
            KeyValue::new("ferrolab.models", models.join(", ")),
            KeyValue::new("ferrolab.request_log", log.path().display().to_string()),
        ];
        tags.extend(ferrolab_llm::tracker::source_tags(cell));
        let started = chrono::Utc::now().timestamp_millis();
        let created = backend.call(
            "POST",
            "runs/create",
            json!({"experiment_id": experiment, "run_name": config.name, "start_time": started, "tags": tags}),
        )?;
        let run_id = ferrolab_llm::tracker::read::<Run>(&created, "run")?
            .info
            .run_id;
        let mut params = vec![
            json!({"key": "model", "value": config.model}),
            json!({"key": "bind", "value": config.bind}),
            json!({"key": "max_batch", "value": config.max_batch.to_string()}),
            json!({"key": "max_queue", "value": config.max_queue.to_string()}),
            json!({"key": "device", "value": config.device}),
            json!({"key": "weights", "value": config.weights}),
        ];
        for (name, dir) in &config.adapters {
            params.push(
                json!({"key": format!("adapter.{name}"), "value": dir.display().to_string()}),
            );
        }
        backend.call(
            "POST",
            "runs/log-batch",
            json!({"run_id": run_id, "params": params}),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, run_id, backend) = (stop.clone(), run_id.clone(), backend.clone());
            std::thread::Builder::new()
                .name(format!("deployment-{}", config.name))
                .spawn(move || report(&*backend, &run_id, &log, started / 1000, &stop))?
        };
        Ok(Deployment {
            stop,
            thread: Some(thread),
            run_id,
        })
    }

    /// Reports the last minutes and marks the run finished.
    pub fn finish(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// A minute's figures as MLflow metrics at step = minutes since the epoch.
fn minute_metrics(m: &MinuteStats) -> Vec<Value> {
    let step = m.minute / 60;
    let at = m.minute * 1000;
    let mut out = vec![
        ("requests", Some(m.requests as f64)),
        ("errors", Some(m.errors as f64)),
        ("p50_latency_s", m.p50_latency_s),
        ("p95_latency_s", m.p95_latency_s),
        ("mean_ttft_s", m.mean_ttft_s),
        ("tokens_per_s", m.tokens_per_s),
        ("mean_feedback", m.mean_score),
    ];
    out.retain(|(_, v)| v.is_some_and(f64::is_finite));
    out.into_iter()
        .map(|(k, v)| json!({"key": k, "value": v, "timestamp": at, "step": step}))
        .collect()
}

fn report(backend: &dyn Backend, run_id: &str, log: &Store, started_s: i64, stop: &AtomicBool) {
    // Minutes already reported in full; the current one is reported again at the end.
    let mut done_until = started_s / 60 * 60;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let now_s = chrono::Utc::now().timestamp();
        let current = now_s / 60 * 60;
        let span = ((now_s - done_until) / 60 + 2).max(1);
        match log.minutes(span) {
            Ok(minutes) => {
                let fresh: Vec<&MinuteStats> = minutes
                    .iter()
                    .filter(|m| m.minute >= done_until && (stopping || m.minute < current))
                    .collect();
                let metrics: Vec<Value> = fresh.iter().flat_map(|m| minute_metrics(m)).collect();
                for chunk in metrics.chunks(1000) {
                    if let Err(e) = backend.call(
                        "POST",
                        "runs/log-batch",
                        json!({"run_id": run_id, "metrics": chunk}),
                    ) {
                        log::warn!(
                            "deployment tracking: {e:#}; the request log still has everything"
                        );
                    }
                }
                if !stopping {
                    done_until = done_until.max(current);
                }
            }
            Err(e) => log::warn!("deployment tracking: cannot read the request log: {e:#}"),
        }
        if stopping {
            let body = json!({"run_id": run_id, "status": "FINISHED", "end_time": chrono::Utc::now().timestamp_millis()});
            if let Err(e) = backend.call("POST", "runs/update", body) {
                log::warn!("deployment tracking: {e:#}");
            }
            return;
        }
        let mut waited = Duration::ZERO;
        while waited < EVERY && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            waited += Duration::from_millis(200);
        }
    }
}
