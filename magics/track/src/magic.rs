//! The tracking, registry and governance magics.

use crate::client::{self, latest_metrics, pairs, resolve_run};
use crate::lineage;
use crate::render::{value_text, when, Table};
use clap::Parser;
use ferrolab_llm::tracker::{Backend, Http, Tracking};
use ferrolab_magics::svg::{self, Chart, Marks, Series, XScale, XValue};
use ferrolab_magics::{
    escape_html, Invocation, Magic, MagicContext, MagicError, MagicKind, MimeBundle, Registry,
};
use ferrolab_tracking::model::{
    metric_json, AuditLog, AuditRecord, EvaluationRun, ModelVersion, Policy, RegisteredModel,
    Review, Run,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

type Handler =
    fn(&Session, &Invocation, &mut MagicContext<'_>) -> Result<Option<MimeBundle>, MagicError>;

/// What the tracking magics of one kernel share: where runs go (`%track connect`
/// changes it for every family) and the run `%track start` opened.
struct Session {
    tracking: Arc<Tracking>,
    active: Mutex<Option<Active>>,
}

impl Session {
    /// The backend runs go to now.
    fn api(&self) -> Result<Arc<dyn Backend>, MagicError> {
        self.tracking.backend().ok_or_else(|| {
            MagicError::new(
                "TrackingError",
                "no tracking store: set FERROLAB_TRACKING_URI or run %track connect URL",
            )
        })
    }

    /// The active run: its id, name and the backend it was started on.
    fn active(&self) -> Result<(String, String, Arc<dyn Backend>), MagicError> {
        let guard = ferrolab_magics::lock(&self.active);
        guard
            .as_ref()
            .map(|a| (a.run_id.clone(), a.name.clone(), a.backend.clone()))
            .ok_or_else(|| MagicError::usage("no run is active: start one with %track start NAME"))
    }
}

struct TrackMagic {
    name: &'static str,
    summary: &'static str,
    usage: &'static str,
    run: Handler,
    kinds: &'static [MagicKind],
    session: Arc<Session>,
}

impl Magic for TrackMagic {
    fn name(&self) -> &str {
        self.name
    }
    fn summary(&self) -> &str {
        self.summary
    }
    fn usage(&self) -> &str {
        self.usage
    }
    fn kinds(&self) -> &[MagicKind] {
        self.kinds
    }
    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        (self.run)(&self.session, invocation, cx)
    }
}

/// Adds the magics; runs go where `tracking` says (the same handle the other
/// families report through, so `%track connect` moves them all).
pub fn register(registry: &mut Registry, tracking: Arc<Tracking>) {
    let session = Arc::new(Session {
        tracking,
        active: Mutex::new(None),
    });
    let magics = [
        TrackMagic {
            name: "track",
            summary: "log a run by hand; connect to a tracking server",
            usage: TRACK_USAGE,
            run: track,
            kinds: &[MagicKind::Line],
            session: session.clone(),
        },
        TrackMagic {
            name: "runs",
            summary: "a table of tracked runs, filtered with MLflow's syntax",
            usage: RUNS_USAGE,
            run: runs,
            kinds: &[MagicKind::Line],
            session: session.clone(),
        },
        TrackMagic {
            name: "compare",
            summary: "compare runs: differing params and overlaid metric charts",
            usage: COMPARE_USAGE,
            run: compare,
            kinds: &[MagicKind::Line],
            session: session.clone(),
        },
        TrackMagic {
            name: "register",
            summary: "register an adapter as a model version with its lineage and model card",
            usage: REGISTER_USAGE,
            run: register_version,
            kinds: &[MagicKind::Line],
            session: session.clone(),
        },
        TrackMagic {
            name: "link_eval",
            summary: "link a prompt-test run to a model version as its evaluation",
            usage: LINK_USAGE,
            run: link_eval,
            kinds: &[MagicKind::Line],
            session: session.clone(),
        },
        TrackMagic {
            name: "evaluate",
            summary: "have the server run a prompt-test suite on a model version (the evaluation promotion counts)",
            usage: EVALUATE_USAGE,
            run: evaluate,
            kinds: &[MagicKind::Cell],
            session: session.clone(),
        },
        TrackMagic {
            name: "review",
            summary: "approve or reject a model version, with a comment",
            usage: REVIEW_USAGE,
            run: review,
            kinds: &[MagicKind::Line],
            session: session.clone(),
        },
        TrackMagic {
            name: "promote",
            summary: "give a model version an alias (production needs review and evaluation)",
            usage: PROMOTE_USAGE,
            run: promote,
            kinds: &[MagicKind::Line],
            session: session.clone(),
        },
        TrackMagic {
            name: "policy",
            summary: "show or (owners) change the promotion policy",
            usage: POLICY_USAGE,
            run: policy,
            kinds: &[MagicKind::Line],
            session: session.clone(),
        },
        TrackMagic {
            name: "audit",
            summary: "the append-only audit log of a registered model",
            usage: AUDIT_USAGE,
            run: audit,
            kinds: &[MagicKind::Line],
            session: session.clone(),
        },
    ];
    for m in magics {
        registry.register(Arc::new(m));
    }
    registry.register_call("log_param", Arc::new(CellLog::Param(session.clone())));
    registry.register_call("log_metric", Arc::new(CellLog::Metric(session)));
}

/// `ferrolab_cell::log_param` and `log_metric`: into the run `%track start` opened.
enum CellLog {
    Param(Arc<Session>),
    Metric(Arc<Session>),
}

impl ferrolab_magics::CellCall for CellLog {
    fn call(
        &self,
        args: &Value,
        _cx: &ferrolab_magics::CallContext<'_>,
    ) -> Result<Value, MagicError> {
        let (call, session) = match self {
            CellLog::Param(s) => ("log_param", s),
            CellLog::Metric(s) => ("log_metric", s),
        };
        let key = args
            .get("key")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| MagicError::usage(format!("`{call}` needs a non-empty text `key`")))?;
        let (run_id, name, api) = session.active()?;
        let now = chrono::Utc::now().timestamp_millis();
        let (metrics, params) = match self {
            CellLog::Param(_) => {
                let value = args.get("value").and_then(Value::as_str).ok_or_else(|| {
                    MagicError::usage("`log_param` needs a text `value`".to_string())
                })?;
                (vec![], vec![json!({"key": key, "value": value})])
            }
            CellLog::Metric(_) => {
                let value = args
                    .get("value")
                    .and_then(Value::as_f64)
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        MagicError::usage(format!("metric `{key}` needs a finite number `value`"))
                    })?;
                let step = args.get("step").and_then(Value::as_i64).unwrap_or(0);
                (
                    vec![json!({"key": key, "value": value, "timestamp": now, "step": step})],
                    vec![],
                )
            }
        };
        api.call(
            "POST",
            "runs/log-batch",
            json!({"run_id": run_id, "metrics": metrics, "params": params}),
        )
        .map_err(failed)?;
        Ok(json!({ "run_id": run_id, "run_name": name }))
    }
}

fn parse<T: Parser>(invocation: &Invocation, usage: &str) -> Result<T, MagicError> {
    ferrolab_magics::parse_args(&invocation.args, usage)
}

fn failed(e: anyhow::Error) -> MagicError {
    let text = format!("{e:#}");
    if text.contains("PERMISSION_DENIED") {
        MagicError::new("PolicyError", text)
    } else {
        MagicError::new("TrackingError", text)
    }
}

fn bundle(text: String, html: String) -> Option<MimeBundle> {
    Some(MimeBundle::text(text).with("text/html", html))
}

// ------------------------------------------------------------------ %track

const TRACK_USAGE: &str = "%track start NAME [--experiment EXP] [--tag KEY=VALUE]...
%track log KEY=VALUE... [--step N]      numbers are metrics, anything else a param
%track params KEY=VALUE...             params (write-once, as in MLflow)
%track tag KEY=VALUE...
%track end [--status FINISHED|FAILED|KILLED]
%track connect [URL] [--token-env VAR] report to a collaboration server (default URL:
                                       $FERROLAB_TRACKING_URI; token: $VAR, else
                                       $FERROLAB_TRACKING_TOKEN or $MLFLOW_TRACKING_TOKEN)
%track disconnect                      back to $FERROLAB_TRACKING_URI or the local store
%track status                          where runs go, as whom, and the active run

Runs go to the server %track connect chose, else to $FERROLAB_TRACKING_URI (token in
$FERROLAB_TRACKING_TOKEN or $MLFLOW_TRACKING_TOKEN), else to the local store
.ferrolab/tracking/ ($FERROLAB_TRACKING_DIR). %finetune, %%prompt_test and %serve report
to the same place. A run started here is tagged with the notebook and cell.";

#[derive(Parser)]
#[command(name = "%track", no_binary_name = true, disable_help_flag = true)]
enum TrackLine {
    Start {
        name: String,
        #[arg(long, default_value = "Default")]
        experiment: String,
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    Log {
        #[arg(required = true)]
        pairs: Vec<String>,
        #[arg(long)]
        step: Option<i64>,
    },
    Params {
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    Tag {
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    End {
        #[arg(long, default_value = "FINISHED")]
        status: String,
    },
    Connect {
        url: Option<String>,
        #[arg(long)]
        token_env: Option<String>,
    },
    Disconnect,
    Status,
}

struct Active {
    run_id: String,
    name: String,
    backend: Arc<dyn Backend>,
}

fn split_pairs(pairs: &[String]) -> Result<Vec<(String, String)>, MagicError> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| {
                    MagicError::usage(format!("'{p}' is not KEY=VALUE\n\n{TRACK_USAGE}"))
                })
        })
        .collect()
}

/// Logs KEY=VALUE pairs to the active run as its `section` ("params" or "tags");
/// returns how many and the run's name.
fn log_pairs(s: &Session, pairs: &[String], section: &str) -> Result<(usize, String), MagicError> {
    let (run_id, name, api) = s.active()?;
    let entries: Vec<Value> = split_pairs(pairs)?
        .into_iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    let n = entries.len();
    api.call(
        "POST",
        "runs/log-batch",
        json!({"run_id": run_id, section: entries}),
    )
    .map_err(failed)?;
    Ok((n, name))
}

fn whoami(api: &dyn Backend) -> anyhow::Result<(String, String)> {
    let me = api.call("POST", "ferrolab/whoami", json!({}))?;
    Ok((
        me["name"].as_str().unwrap_or_default().to_string(),
        me["role"].as_str().unwrap_or_default().to_string(),
    ))
}

fn track(
    s: &Session,
    invocation: &Invocation,
    cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let line: TrackLine = parse(invocation, TRACK_USAGE)?;
    let now = chrono::Utc::now().timestamp_millis();
    match line {
        TrackLine::Start {
            name,
            experiment,
            tags,
        } => {
            if let Ok((id, running, _)) = s.active() {
                return Err(MagicError::usage(format!(
                    "run '{running}' ({id}) is still active: end it with %track end first"
                )));
            }
            let api = s.api()?;
            let exp = client::experiment_id(&*api, &experiment, true).map_err(failed)?;
            let mut tag_list: Vec<Value> = split_pairs(&tags)?
                .into_iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            tag_list.extend(
                ferrolab_llm::tracker::source_tags(cx.host.current_cell())
                    .iter()
                    .map(|t| json!(t)),
            );
            let created = api
                .call(
                    "POST",
                    "runs/create",
                    json!({"experiment_id": exp, "run_name": name, "start_time": now, "tags": tag_list}),
                )
                .map_err(failed)?;
            let run_id = client::read::<Run>(&created, "run")
                .map_err(failed)?
                .info
                .run_id;
            let text = format!(
                "run '{name}' ({run_id}) started in experiment '{experiment}' at {}",
                api.describe()
            );
            *ferrolab_magics::lock(&s.active) = Some(Active {
                run_id,
                name,
                backend: api,
            });
            Ok(Some(MimeBundle::text(text)))
        }
        TrackLine::Log { pairs, step } => {
            let (run_id, name, api) = s.active()?;
            let mut metrics = Vec::new();
            let mut params = Vec::new();
            for (k, v) in split_pairs(&pairs)? {
                match v.trim().parse::<f64>() {
                    Ok(x) => metrics.push(
                        json!({"key": k, "value": x, "timestamp": now, "step": step.unwrap_or(0)}),
                    ),
                    Err(_) => params.push(json!({"key": k, "value": v})),
                }
            }
            let (m, p) = (metrics.len(), params.len());
            api.call(
                "POST",
                "runs/log-batch",
                json!({"run_id": run_id, "metrics": metrics, "params": params}),
            )
            .map_err(failed)?;
            Ok(Some(MimeBundle::text(format!(
                "logged {m} metric(s) and {p} param(s) to '{name}'"
            ))))
        }
        TrackLine::Params { pairs } => {
            let (n, name) = log_pairs(s, &pairs, "params")?;
            Ok(Some(MimeBundle::text(format!(
                "logged {n} param(s) to '{name}'"
            ))))
        }
        TrackLine::Tag { pairs } => {
            let (n, name) = log_pairs(s, &pairs, "tags")?;
            Ok(Some(MimeBundle::text(format!(
                "tagged '{name}' with {n} tag(s)"
            ))))
        }
        TrackLine::End { status } => {
            let status = status.to_ascii_uppercase();
            if !["FINISHED", "FAILED", "KILLED"].contains(&status.as_str()) {
                return Err(MagicError::usage(format!(
                    "--status is FINISHED, FAILED or KILLED, not '{status}'"
                )));
            }
            let (run_id, name, api) = s.active()?;
            api.call(
                "POST",
                "runs/update",
                json!({"run_id": run_id, "status": status, "end_time": now}),
            )
            .map_err(failed)?;
            *ferrolab_magics::lock(&s.active) = None;
            Ok(Some(MimeBundle::text(format!(
                "run '{name}' ({run_id}) ended: {status}"
            ))))
        }
        TrackLine::Connect { url, token_env } => {
            let url = url
                .or_else(|| std::env::var("FERROLAB_TRACKING_URI").ok().filter(|u| !u.trim().is_empty()))
                .ok_or_else(|| MagicError::usage(format!(
                    "%track connect needs the server's URL (or FERROLAB_TRACKING_URI set)\n\n{TRACK_USAGE}"
                )))?;
            let token = match &token_env {
                Some(var) => Some(std::env::var(var).ok().filter(|t| !t.is_empty()).ok_or_else(|| {
                    MagicError::usage(format!("--token-env {var}: the variable is not set in the kernel's environment"))
                })?),
                None => ferrolab_llm::tracker::env_token(),
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(MagicError::usage(format!(
                    "'{url}' is not a URL: give the collaboration server's base URL, like http://127.0.0.1:7878"
                )));
            }
            let http: Arc<dyn Backend> = Arc::new(Http::new(&url, token));
            let (name, role) = whoami(&*http).map_err(failed)?;
            s.tracking.connect(Some(http));
            Ok(Some(MimeBundle::text(format!(
                "tracking to {url} as {name} ({role})"
            ))))
        }
        TrackLine::Disconnect => {
            s.tracking.connect(None);
            let api = s.api()?;
            Ok(Some(MimeBundle::text(format!(
                "tracking to {}",
                api.describe()
            ))))
        }
        TrackLine::Status => {
            let api = s.api()?;
            let who = whoami(&*api)
                .map(|(n, r)| format!("{n} ({r})"))
                .unwrap_or_else(|e| format!("unknown: {e:#}"));
            let run = s
                .active()
                .map(|(id, name, _)| format!("'{name}' ({id})"))
                .unwrap_or_else(|_| "none".to_string());
            Ok(Some(MimeBundle::text(format!(
                "tracking to {} as {who}\nactive run: {run}",
                api.describe()
            ))))
        }
    }
}

// ------------------------------------------------------------------ %runs

const RUNS_USAGE: &str = "%runs [EXPERIMENT] [--filter EXPR] [--order-by TERM]... [--max N]

A table of runs, newest first: name, id, experiment, status, start, author, params and
latest metrics. EXPERIMENT names one experiment (default: all). --filter takes MLflow's
syntax: metrics.loss < 1 and params.lr = '0.01' and tags.team = 'nlp' and
attributes.status = 'FINISHED'. --order-by: metrics.loss ASC, attributes.start_time DESC.";

#[derive(Parser)]
#[command(name = "%runs", no_binary_name = true, disable_help_flag = true)]
struct RunsLine {
    experiment: Option<String>,
    #[arg(long, default_value = "")]
    filter: String,
    #[arg(long = "order-by")]
    order_by: Vec<String>,
    #[arg(long, default_value_t = 100)]
    max: usize,
}

fn runs(
    s: &Session,
    invocation: &Invocation,
    _cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let line: RunsLine = parse(invocation, RUNS_USAGE)?;
    let api = s.api()?;
    let all = client::experiments(&*api).map_err(failed)?;
    let names: BTreeMap<String, String> = all
        .iter()
        .map(|e| (e.experiment_id.clone(), e.name.clone()))
        .collect();
    let ids: Vec<String> = match &line.experiment {
        Some(name) => vec![client::experiment_id(&*api, name, false).map_err(failed)?],
        None => all.iter().map(|e| e.experiment_id.clone()).collect(),
    };
    let found =
        client::search_runs(&*api, &ids, &line.filter, &line.order_by, line.max).map_err(failed)?;
    if found.is_empty() {
        return Ok(Some(MimeBundle::text(format!(
            "no runs{} at {}",
            if line.filter.is_empty() {
                String::new()
            } else {
                format!(" match '{}'", line.filter)
            },
            api.describe()
        ))));
    }
    // Params that tell runs apart come first; those equal in every run are hidden
    // when there are several runs.
    let mut param_values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut metric_keys = BTreeSet::new();
    for r in &found {
        for (k, v) in pairs(&r.data.params) {
            param_values.entry(k).or_default().insert(v);
        }
        metric_keys.extend(r.data.metrics.iter().map(|m| m.key.clone()));
    }
    let varies = |k: &String| {
        param_values[k].len() > 1
            || found
                .iter()
                .any(|r| !r.data.params.iter().any(|p| &p.key == k))
    };
    let all_keys: Vec<String> = param_values.keys().cloned().collect();
    let mut param_keys: Vec<String> = all_keys.iter().filter(|k| varies(k)).cloned().collect();
    let hidden = if found.len() > 1 {
        all_keys.len() - param_keys.len()
    } else {
        0
    };
    if found.len() == 1 {
        param_keys = all_keys;
    }
    param_keys.truncate(8);
    let metric_keys: Vec<String> = metric_keys.into_iter().take(8).collect();
    let mut headers: Vec<String> = ["run", "id", "experiment", "status", "started", "author"]
        .map(String::from)
        .to_vec();
    headers.extend(param_keys.iter().map(|k| format!("params.{k}")));
    headers.extend(metric_keys.iter().map(|k| format!("metrics.{k}")));
    let mut table = Table::new(headers);
    for r in &found {
        let info = &r.info;
        let params = pairs(&r.data.params);
        let metrics = latest_metrics(r);
        let mut row = vec![
            info.run_name.clone(),
            info.run_id.chars().take(8).collect(),
            names.get(&info.experiment_id).cloned().unwrap_or_default(),
            info.status.clone(),
            when(Some(info.start_time)),
            r.data
                .tag("ferrolab.author")
                .map_or_else(|| info.user_id.clone(), str::to_string),
        ];
        row.extend(
            param_keys
                .iter()
                .map(|k| params.get(k).cloned().unwrap_or_default()),
        );
        row.extend(metric_keys.iter().map(|k| {
            metrics
                .get(k)
                .map(|v| value_text(&metric_json(*v)))
                .unwrap_or_default()
        }));
        table.push(row, info.status == "FAILED");
    }
    let mut title = format!("{} run(s) at {}", found.len(), api.describe());
    if hidden > 0 {
        title.push_str(&format!("; {hidden} param(s) equal in every run not shown"));
    }
    Ok(bundle(
        format!("{title}\n{}", table.text()),
        format!("<div><p>{}</p>{}</div>", escape_html(&title), table.html()),
    ))
}

// ------------------------------------------------------------------ %compare

const COMPARE_USAGE: &str = "%compare RUN RUN [RUN...] [--metric KEY]...

Compares runs (ids, id prefixes of 6+ characters, or names): a table of params with the
ones that differ marked and first, the latest value of each metric, and for each metric
(or each --metric) a chart of its history with one line per run.";

#[derive(Parser)]
#[command(name = "%compare", no_binary_name = true, disable_help_flag = true)]
struct CompareLine {
    #[arg(num_args = 2.., required = true)]
    runs: Vec<String>,
    #[arg(long = "metric")]
    metrics: Vec<String>,
}

fn compare(
    s: &Session,
    invocation: &Invocation,
    _cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let line: CompareLine = parse(invocation, COMPARE_USAGE)?;
    let api = s.api()?;
    let runs: Vec<Run> = line
        .runs
        .iter()
        .map(|r| resolve_run(&*api, r))
        .collect::<anyhow::Result<_>>()
        .map_err(failed)?;
    let labels: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{} ({})",
                r.info.run_name,
                &r.info.run_id[..r.info.run_id.len().min(8)]
            )
        })
        .collect();
    let params: Vec<BTreeMap<String, String>> =
        runs.iter().map(|r| pairs(&r.data.params)).collect();
    let metrics: Vec<BTreeMap<String, Value>> = runs
        .iter()
        .map(|r| {
            latest_metrics(r)
                .into_iter()
                .map(|(k, v)| (k, metric_json(v)))
                .collect()
        })
        .collect();
    let keys: BTreeSet<&String> = params.iter().flat_map(|p| p.keys()).collect();
    let mut headers = vec!["param".to_string()];
    headers.extend(labels.iter().cloned());
    let mut differing = Table::new(headers.clone());
    let mut same = Vec::new();
    for key in keys {
        let values: Vec<String> = params
            .iter()
            .map(|p| p.get(key).cloned().unwrap_or_else(|| "—".into()))
            .collect();
        let differs = values.iter().any(|v| v != &values[0]);
        let mut row = vec![key.clone()];
        row.extend(values);
        if differs {
            differing.push(row, true);
        } else {
            same.push(row);
        }
    }
    let differ_count = differing.rows.len();
    for row in same {
        differing.push(row, false);
    }
    let metric_keys: BTreeSet<&String> = metrics.iter().flat_map(|m| m.keys()).collect();
    let mut mheaders = vec!["metric (latest)".to_string()];
    mheaders.extend(labels.iter().cloned());
    let mut latest = Table::new(mheaders);
    for key in &metric_keys {
        let mut row = vec![(*key).clone()];
        row.extend(
            metrics
                .iter()
                .map(|m| m.get(*key).map(value_text).unwrap_or_else(|| "—".into())),
        );
        latest.push(row, false);
    }
    let charted: Vec<String> = if line.metrics.is_empty() {
        metric_keys.iter().map(|k| (*k).clone()).take(6).collect()
    } else {
        line.metrics.clone()
    };
    let mut charts = String::new();
    for key in &charted {
        let mut series = Vec::new();
        for (run, label) in runs.iter().zip(&labels) {
            let history = client::metric_history(&*api, &run.info.run_id, key).map_err(failed)?;
            if history.is_empty() {
                continue;
            }
            series.push(Series {
                name: Some(label.clone()),
                x: history
                    .iter()
                    .map(|(s, _)| XValue::Num(*s as f64))
                    .collect(),
                y: history.iter().map(|(_, v)| *v).collect(),
            });
        }
        if series.is_empty() {
            if !line.metrics.is_empty() {
                return Err(MagicError::new(
                    "TrackingError",
                    format!("none of the runs logged the metric '{key}'"),
                ));
            }
            continue;
        }
        let chart = Chart {
            title: key.clone(),
            x_label: "step".into(),
            y_label: key.clone(),
            x_scale: XScale::Linear,
            marks: Marks::Points { line: true, series },
            color_label: Some("run".into()),
        };
        charts.push_str(&format!(
            "<div style=\"display:inline-block\">{}</div>",
            svg::render(&chart, 420.0, 240.0)
        ));
    }
    let summary = format!(
        "{} runs compared: {differ_count} param(s) differ, {} metric(s)",
        runs.len(),
        metric_keys.len()
    );
    Ok(bundle(
        format!("{summary}\n\n{}\n\n{}", differing.text(), latest.text()),
        format!(
            "<div><p>{}</p>{}<br>{}<div>{charts}</div></div>",
            escape_html(&summary),
            differing.html(),
            latest.html()
        ),
    ))
}

// ------------------------------------------------------------------ registry

/// A version number as given, or the newest version for `latest`.
fn version_of(api: &dyn Backend, name: &str, version: &str) -> Result<String, MagicError> {
    if !version.eq_ignore_ascii_case("latest") {
        return Ok(version.to_string());
    }
    let model: RegisteredModel = api
        .call("GET", "registered-models/get", json!({"name": name}))
        .and_then(|reply| client::read(&reply, "registered_model"))
        .map_err(failed)?;
    model
        .latest_versions
        .first()
        .map(|v| v.version.clone())
        .ok_or_else(|| {
            MagicError::new(
                "TrackingError",
                format!("'{name}' has no versions yet; %register one"),
            )
        })
}

const REGISTER_USAGE: &str =
    "%register NAME --adapter DIR [--run RUN] [--eval RUN]... [--description TEXT]

Registers the LoRA adapter in DIR as a new version of the model NAME (created when new),
with its lineage — the adapter's and the base model's content hashes, the training data
and its hash, the training config — the training run (RUN, or the fine-tuning run whose
folder holds DIR), evaluation runs (--eval, prompt-test runs), and a model card written
from them. The version's author is you; someone else must approve it (%review) before
it can be promoted to a protected alias (%promote).";

#[derive(Parser)]
#[command(name = "%register", no_binary_name = true, disable_help_flag = true)]
struct RegisterLine {
    name: String,
    #[arg(long)]
    adapter: PathBuf,
    #[arg(long)]
    run: Option<String>,
    #[arg(long = "eval")]
    evals: Vec<String>,
    #[arg(long)]
    description: Option<String>,
}

/// The fine-tuning run that wrote `run_dir`, found by its `ferrolab.run_dir` tag
/// among the `finetune` experiment's runs.
fn training_run_for(api: &dyn Backend, run_dir: &std::path::Path) -> Option<Run> {
    let target = std::fs::canonicalize(run_dir).ok()?;
    // Fine-tuning runs are filed under `finetune` (see `%finetune`).
    let finetune = ferrolab_llm::tracker::find_experiment(api, "finetune").ok()??;
    let runs = client::search_runs(api, &[finetune], "", &[], 50_000).ok()?;
    runs.into_iter().find(|r| {
        r.data
            .tag("ferrolab.run_dir")
            .and_then(|p| std::fs::canonicalize(p).ok())
            .as_deref()
            == Some(target.as_path())
    })
}

fn register_version(
    s: &Session,
    invocation: &Invocation,
    _cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let line: RegisterLine = parse(invocation, REGISTER_USAGE)?;
    let api = s.api()?;
    let lineage = lineage::of_adapter(&line.adapter)
        .map_err(|e| MagicError::new("RegisterError", format!("{e:#}")))?;
    let training = match &line.run {
        Some(run) => Some(resolve_run(&*api, run).map_err(failed)?),
        None => lineage["run_dir"]
            .as_str()
            .and_then(|d| training_run_for(&*api, std::path::Path::new(d))),
    };
    let evaluations: Vec<Run> = line
        .evals
        .iter()
        .map(|r| resolve_run(&*api, r))
        .collect::<anyhow::Result<_>>()
        .map_err(failed)?;
    let (author, _) = whoami(&*api).map_err(failed)?;
    let card = lineage::model_card(
        &line.name,
        &author,
        &lineage,
        training.as_ref(),
        &evaluations,
    );
    match api.call(
        "POST",
        "registered-models/create",
        json!({"name": line.name}),
    ) {
        Ok(_) => {}
        Err(e) if e.to_string().contains("RESOURCE_ALREADY_EXISTS") => {}
        Err(e) => return Err(failed(e)),
    }
    let mut tags = vec![
        json!({"key": "ferrolab.adapter_hash", "value": lineage["adapter"]["hash"]}),
        json!({"key": "ferrolab.base_model", "value": lineage["base_model"]["name"]}),
    ];
    if let Some(h) = lineage["base_model"]["hash"].as_str() {
        tags.push(json!({"key": "ferrolab.base_model_hash", "value": h}));
    }
    if let Some(h) = lineage["dataset"]["hash"].as_str() {
        tags.push(json!({"key": "ferrolab.dataset_hash", "value": h}));
    }
    let created = api
        .call(
            "POST",
            "ferrolab/model-versions/create",
            json!({
                "name": line.name,
                "source": format!("file://{}", lineage["adapter"]["path"].as_str().unwrap_or_default()),
                "run_id": training.as_ref().map(|r| r.info.run_id.as_str()).unwrap_or_default(),
                "description": line.description.clone().unwrap_or_else(|| card.clone()),
                "tags": tags,
                "lineage": lineage,
                "evaluation_runs": evaluations.iter().map(|r| r.info.run_id.as_str()).collect::<Vec<_>>(),
            }),
        )
        .map_err(failed)?;
    let version = client::read::<ModelVersion>(&created, "model_version")
        .map_err(failed)?
        .version;
    let head = format!(
        "registered '{}' version {version} (author {author}){}",
        line.name,
        if training.is_none() {
            "; no training run found — pass --run RUN to link one"
        } else {
            ""
        }
    );
    Ok(Some(MimeBundle::text(format!("{head}\n\n{card}")).with(
        "text/markdown",
        format!("**{}**\n\n{card}", head.replace('\'', "`")),
    )))
}

const LINK_USAGE: &str = "%link_eval NAME VERSION RUN        (VERSION: a number or latest)

Links the prompt-test run RUN (id, id prefix or name) to version VERSION of NAME, so the
version's details show it. The promotion policy does not count it (a client logged its
metrics); it counts evaluations the server ran (%%evaluate).";

#[derive(Parser)]
#[command(name = "%link_eval", no_binary_name = true, disable_help_flag = true)]
struct LinkLine {
    name: String,
    version: String,
    run: String,
}

fn link_eval(
    s: &Session,
    invocation: &Invocation,
    _cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let mut line: LinkLine = parse(invocation, LINK_USAGE)?;
    let api = s.api()?;
    line.version = version_of(&*api, &line.name, &line.version)?;
    let run = resolve_run(&*api, &line.run).map_err(failed)?;
    let linked = api
        .call(
            "POST",
            "ferrolab/model-versions/link-evaluation",
            json!({"name": line.name, "version": line.version, "run_id": run.info.run_id}),
        )
        .map_err(failed)?;
    let linked: Vec<EvaluationRun> = client::read(&linked, "evaluation_runs").map_err(failed)?;
    let rates: Vec<String> = linked
        .iter()
        .map(|e| match e.pass_rate {
            Some(r) => format!("{} ({:.1}%)", e.run_id, r * 100.0),
            None => format!("{} (no pass_rate)", e.run_id),
        })
        .collect();
    Ok(Some(MimeBundle::text(format!(
        "'{}' version {} is evaluated by: {}",
        line.name,
        line.version,
        rates.join(", ")
    ))))
}

const EVALUATE_USAGE: &str = "%%evaluate NAME VERSION      (VERSION: a number or latest)
<a prompt-test suite: promptfoo's YAML, as in %%prompt_test>

Asks the tracking server to run the suite on version VERSION of NAME. The server takes
the adapter that the version's training run uploaded, checks that it is the registered
adapter (its content hash), and runs the suite on it and its base model in a sandbox
with no network; the suite's one provider keeps its label and config, and the model is
always the version's. The result is a run in the `evaluations` experiment, and the only
kind of evaluation the promotion policy counts. Needs a tracking server
(FERROLAB_TRACKING_URI, or %track connect URL).";

/// How long `%%evaluate` waits for the server (which stops an evaluation at 15 minutes).
const EVALUATE_WAIT: std::time::Duration = std::time::Duration::from_secs(16 * 60);

#[derive(Parser)]
#[command(name = "%%evaluate", no_binary_name = true, disable_help_flag = true)]
struct EvaluateLine {
    name: String,
    version: String,
}

fn evaluate(
    s: &Session,
    invocation: &Invocation,
    _cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let mut line: EvaluateLine = parse(invocation, EVALUATE_USAGE)?;
    if invocation.body.trim().is_empty() {
        return Err(MagicError::usage(format!(
            "write the prompt-test suite under the %%evaluate line\n\n{EVALUATE_USAGE}"
        )));
    }
    let api = s.api()?;
    if !api.is_remote() {
        return Err(MagicError::new(
            "TrackingError",
            format!(
                "%%evaluate needs a tracking server: the server runs the suite itself, so that its result is evidence nobody typed in; this kernel logs to the local store {} (set FERROLAB_TRACKING_URI, or %track connect URL)",
                api.describe()
            ),
        ));
    }
    line.version = version_of(&*api, &line.name, &line.version)?;
    let outcome = api
        .call_waiting(
            "POST",
            "ferrolab/model-versions/evaluate",
            json!({"name": line.name, "version": line.version, "suite": invocation.body}),
            EVALUATE_WAIT,
        )
        .map_err(failed)?;
    let rate = outcome["pass_rate"].as_f64().unwrap_or(0.0) * 100.0;
    let count = |key: &str| outcome[key].as_u64().unwrap_or(0);
    let run = outcome["run_id"].as_str().unwrap_or_default();
    let text = format!(
        "the server evaluated '{}' version {}: {} of {} tests passed ({rate:.1}%), {} errors; run {run} in the experiment 'evaluations'",
        line.name,
        line.version,
        count("passed"),
        count("tests"),
        count("errors"),
    );
    let html = format!(
        "<p>The server evaluated <b>{}</b> version {}: <b>{rate:.1}%</b> ({} of {} tests passed, {} errors) &middot; run <code>{}</code></p>",
        escape_html(&line.name),
        escape_html(&line.version),
        count("passed"),
        count("tests"),
        count("errors"),
        escape_html(run),
    );
    Ok(bundle(text, html))
}

const REVIEW_USAGE: &str =
    "%review NAME VERSION --approve|--reject \"COMMENT\"   (VERSION: a number or latest)

Records your review of a model version. Nobody approves a version they registered; a
rejection blocks promotion until the same reviewer approves a later look.";

#[derive(Parser)]
#[command(name = "%review", no_binary_name = true, disable_help_flag = true)]
struct ReviewLine {
    name: String,
    version: String,
    #[arg(long, conflicts_with = "reject")]
    approve: bool,
    #[arg(long)]
    reject: bool,
    #[arg(required = true, num_args = 1..)]
    comment: Vec<String>,
}

fn review(
    s: &Session,
    invocation: &Invocation,
    _cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let line: ReviewLine = parse(invocation, REVIEW_USAGE)?;
    if line.approve == line.reject {
        return Err(MagicError::usage(format!(
            "say --approve or --reject\n\n{REVIEW_USAGE}"
        )));
    }
    let api = s.api()?;
    let version = version_of(&*api, &line.name, &line.version)?;
    let line = ReviewLine { version, ..line };
    let decision = if line.approve { "approve" } else { "reject" };
    let done = api
        .call(
            "POST",
            "ferrolab/reviews/create",
            json!({"name": line.name, "version": line.version, "decision": decision, "comment": line.comment.join(" ")}),
        )
        .map_err(failed)?;
    let r: Review = client::read(&done, "review").map_err(failed)?;
    Ok(Some(MimeBundle::text(format!(
        "{} {} '{}' version {}: {}",
        r.reviewer,
        if line.approve { "approved" } else { "rejected" },
        line.name,
        line.version,
        r.comment
    ))))
}

const PROMOTE_USAGE: &str = "%promote NAME VERSION --alias ALIAS   (VERSION: a number or latest)

Points ALIAS (production, staging, ...) at a model version. A protected alias
(production, unless an owner changed the policy) needs an approval from someone other
than the author, no standing rejection, and a linked prompt-test run whose pass rate
meets the policy; a refusal names every rule that failed.";

#[derive(Parser)]
#[command(name = "%promote", no_binary_name = true, disable_help_flag = true)]
struct PromoteLine {
    name: String,
    version: String,
    #[arg(long)]
    alias: String,
}

fn promote(
    s: &Session,
    invocation: &Invocation,
    _cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let mut line: PromoteLine = parse(invocation, PROMOTE_USAGE)?;
    let api = s.api()?;
    line.version = version_of(&*api, &line.name, &line.version)?;
    api.call(
        "POST",
        "registered-models/alias",
        json!({"name": line.name, "version": line.version, "alias": line.alias}),
    )
    .map_err(failed)?;
    Ok(Some(MimeBundle::text(format!(
        "'{}' version {} is now '{}'",
        line.name, line.version, line.alias
    ))))
}

const AUDIT_USAGE: &str = "%audit NAME

The audit log of the registered model NAME, oldest first: who did what, when, and the
state before and after (registrations, reviews, evaluation links, promotions, policy
changes). No API edits it; the line under the table says whether its hash chain verifies.";

#[derive(Parser)]
#[command(name = "%audit", no_binary_name = true, disable_help_flag = true)]
struct AuditLine {
    name: String,
}

fn change(entry: &AuditRecord) -> String {
    let after = &entry.after;
    match entry.action.as_str() {
        a if a.starts_with("review.") => {
            format!("\"{}\"", after["comment"].as_str().unwrap_or_default())
        }
        "alias.set" => {
            let before = entry.before["version"]
                .as_str()
                .map(|v| format!(" (was version {v})"))
                .unwrap_or_default();
            format!(
                "{} → version {}{before}",
                after["alias"].as_str().unwrap_or_default(),
                after["version"].as_str().unwrap_or_default()
            )
        }
        "alias.delete" => format!(
            "{} removed",
            entry.before["alias"].as_str().unwrap_or_default()
        ),
        "model_version.create" => format!(
            "source {}, adapter {}",
            after["source"].as_str().unwrap_or_default(),
            after["lineage"]["adapter"]["hash"]
                .as_str()
                .map(|h| &h[..h.len().min(23)])
                .unwrap_or("?")
        ),
        "model_version.link_evaluation" => format!("evaluation runs {}", after),
        "model_version.evaluate" => format!(
            "the server evaluated it: pass rate {}, run {}",
            after["pass_rate"], after["run_id"]
        ),
        "policy.update" => format!("policy {}", after),
        _ => String::new(),
    }
}

fn audit(
    s: &Session,
    invocation: &Invocation,
    _cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let line: AuditLine = parse(invocation, AUDIT_USAGE)?;
    let api = s.api()?;
    api.call("GET", "registered-models/get", json!({"name": line.name}))
        .map_err(failed)?;
    let log: AuditLog = api
        .call("POST", "ferrolab/audit/get", json!({"name": line.name}))
        .and_then(|reply| serde_json::from_value(reply).map_err(anyhow::Error::from))
        .map_err(failed)?;
    let mut table = Table::new(
        ["#", "when", "who", "action", "version", "change"]
            .map(String::from)
            .to_vec(),
    );
    for e in &log.entries {
        table.push(
            vec![
                e.seq.to_string(),
                when(Some(e.timestamp)),
                e.actor.clone(),
                e.action.clone(),
                e.version.clone(),
                change(e),
            ],
            e.action == "alias.set" || e.action.starts_with("review."),
        );
    }
    let verdict = if log.chain_verified {
        "hash chain verified: no entry was changed or removed".to_string()
    } else {
        format!(
            "HASH CHAIN BROKEN at entry {}: the log was changed outside ferrolab",
            log.chain_broken_at
                .map_or_else(|| "?".to_string(), |seq| seq.to_string())
        )
    };
    let title = format!("audit log of '{}': {} entries", line.name, table.rows.len());
    Ok(bundle(
        format!("{title}\n{}\n{verdict}", table.text()),
        format!(
            "<div><p>{}</p>{}<p>{}</p></div>",
            escape_html(&title),
            table.html(),
            escape_html(&verdict)
        ),
    ))
}

const POLICY_USAGE: &str = "%policy
%policy set [--protect ALIAS]... [--min-approvals N] [--require-evaluation true|false]
            [--min-pass-rate RATE]

Shows the promotion policy, or changes it (owners only; recorded in the audit log).
A protected alias (default: production) is given only to a version approved by
--min-approvals people other than its author, with no standing rejection, and, with
--require-evaluation, a linked prompt-test run whose pass_rate is at least RATE (0..1).
--protect replaces the list of protected aliases.";

#[derive(Parser)]
#[command(name = "%policy", no_binary_name = true, disable_help_flag = true)]
enum PolicyLine {
    Set {
        #[arg(long = "protect")]
        protect: Vec<String>,
        #[arg(long)]
        min_approvals: Option<u32>,
        #[arg(long)]
        require_evaluation: Option<bool>,
        #[arg(long)]
        min_pass_rate: Option<f64>,
    },
}

fn policy_text(policy: &Policy) -> String {
    format!(
        "protected aliases: {}\napprovals needed (from people other than the author): {}\nlinked prompt-test run needed: {}{}",
        policy.protected_aliases.join(", "),
        policy.min_approvals,
        if policy.require_evaluation { "yes" } else { "no" },
        if policy.require_evaluation {
            format!(", with a pass rate of at least {:.1}%", policy.min_pass_rate * 100.0)
        } else {
            String::new()
        }
    )
}

fn policy(
    s: &Session,
    invocation: &Invocation,
    _cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let api = s.api()?;
    let current: Policy = api
        .call("POST", "ferrolab/policy/get", json!({}))
        .and_then(|reply| client::read(&reply, "policy"))
        .map_err(failed)?;
    if invocation.args.is_empty() {
        return Ok(Some(MimeBundle::text(policy_text(&current))));
    }
    let PolicyLine::Set {
        protect,
        min_approvals,
        require_evaluation,
        min_pass_rate,
    } = parse(invocation, POLICY_USAGE)?;
    let mut next = current;
    if !protect.is_empty() {
        next.protected_aliases = protect;
    }
    if let Some(n) = min_approvals {
        next.min_approvals = n;
    }
    if let Some(b) = require_evaluation {
        next.require_evaluation = b;
    }
    if let Some(r) = min_pass_rate {
        next.min_pass_rate = r;
    }
    let set: Policy = api
        .call("POST", "ferrolab/policy/set", json!({"policy": next}))
        .and_then(|reply| client::read(&reply, "policy"))
        .map_err(failed)?;
    Ok(Some(MimeBundle::text(format!(
        "policy changed:\n{}",
        policy_text(&set)
    ))))
}
