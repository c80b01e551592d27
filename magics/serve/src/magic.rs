//! `%serve`, `%monitor` and `%feedback`: the server from the notebook.

use crate::cli::ServeArgs;
use crate::store::{MinuteStats, Store};
use crate::{dataset, log_path, Handle};
use clap::Parser;
use ferrolab_llm::tracker::Tracking;
use ferrolab_magics::svg::{self, Chart, Marks, Series, XScale, XValue};
use ferrolab_magics::{
    escape_html as escape, Display, Invocation, Magic, MagicContext, MagicError, MagicKind,
    MimeBundle, Registry,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The servers this kernel started, by name. They stop with the kernel.
#[derive(Default)]
pub struct Servers {
    running: Mutex<BTreeMap<String, Handle>>,
    /// Each server's run in the tracking store (experiment `deployments`).
    deployments: Mutex<BTreeMap<String, crate::deployment::Deployment>>,
}

impl Servers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Handle>> {
        ferrolab_magics::lock(&self.running)
    }

    /// The request log of a server: one this kernel runs, else the named folder.
    fn log_of(&self, name: &str) -> PathBuf {
        self.lock()
            .get(name)
            .map(|h| h.log.clone())
            .unwrap_or_else(|| log_path(name))
    }

    fn open_log(&self, name: &str) -> Result<Store, MagicError> {
        let path = self.log_of(name);
        if !path.exists() {
            let known: Vec<String> = self.lock().keys().cloned().collect();
            return Err(MagicError::new(
                "NoSuchServer",
                format!(
                    "no server named '{name}' has a request log ({}); running here: {}",
                    path.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        Store::open(&path).map_err(|e| MagicError::new("RequestLogError", format!("{e:#}")))
    }
}

/// Adds `%serve` (each server tracked as a deployment run through `tracking`),
/// `%monitor` and `%feedback`.
pub fn register(registry: &mut Registry, tracking: Arc<Tracking>) -> Arc<Servers> {
    let servers = Arc::new(Servers::default());
    registry.register(Arc::new(Serve(servers.clone(), tracking)));
    registry.register(Arc::new(Monitor(servers.clone())));
    registry.register(Arc::new(FeedbackMagic(servers.clone())));
    servers
}

#[derive(Parser)]
#[command(name = "%serve", no_binary_name = true, disable_help_flag = true)]
struct ServeLine {
    #[command(flatten)]
    args: ServeArgs,
}

const SERVE_USAGE: &str =
    "%serve MODEL [--adapter NAME=DIR]... [--bind ADDR] [--max-batch N] [--max-queue N]
       [--api-key KEY] [--max-tokens N] [--device D] [--model-name NAME] [--name NAME]
%serve list
%serve stop NAME
%serve logs NAME [-n N]

Starts an OpenAI-compatible server (the same as `ferrolab serve`) in the background
and shows its URL: /v1/models, /v1/completions, /v1/chat/completions (streaming),
/v1/embeddings, /v1/feedback, /metrics, /health, /openapi.json. Adapters are served
as their own model names. NAME (default: the model's name) names the server and its
request log ($FERROLAB_HOME/serve/NAME/requests.sqlite). The default address is
127.0.0.1:8000; --bind 127.0.0.1:0 picks a free port.
`list` shows the servers this kernel runs, `stop` stops one (requests in flight are
answered first), `logs` shows its last N requests (default 20).
Servers stop when the kernel shuts down.";

struct Serve(Arc<Servers>, Arc<Tracking>);

impl Magic for Serve {
    fn name(&self) -> &str {
        "serve"
    }

    fn summary(&self) -> &str {
        "serve a model and adapters over an OpenAI-compatible API in the background"
    }

    fn usage(&self) -> &str {
        SERVE_USAGE
    }

    fn kinds(&self) -> &[MagicKind] {
        &[MagicKind::Line]
    }

    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let args = &invocation.args;
        match args.first().map(String::as_str) {
            None => Err(MagicError::usage(
                "%serve needs a model (e.g. %serve smollm2), or list, stop NAME, logs NAME",
            )),
            Some("list") => Ok(Some(self.list())),
            Some("stop") => {
                let name = args
                    .get(1)
                    .ok_or_else(|| MagicError::usage("%serve stop needs the server's name"))?;
                let handle = self.0.lock().remove(name).ok_or_else(|| {
                    MagicError::new(
                        "NoSuchServer",
                        format!("no server named '{name}' runs in this kernel; see %serve list"),
                    )
                })?;
                let url = handle.url.clone();
                let stopped = handle.stop();
                let deployment = ferrolab_magics::lock(&self.0.deployments).remove(name);
                if let Some(d) = deployment {
                    d.finish();
                }
                stopped.map_err(|e| MagicError::new("ServeError", format!("{e:#}")))?;
                Ok(Some(MimeBundle::text(format!(
                    "stopped server '{name}' ({url})"
                ))))
            }
            Some("logs") => {
                let name = args
                    .get(1)
                    .ok_or_else(|| MagicError::usage("%serve logs needs the server's name"))?;
                let n = match args.get(2).map(String::as_str) {
                    None => 20,
                    Some("-n") | Some("--n") => args
                        .get(3)
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| MagicError::usage("-n needs a number of requests"))?,
                    Some(other) => {
                        return Err(MagicError::usage(format!(
                            "unexpected '{other}'; use %serve logs NAME [-n N]"
                        )))
                    }
                };
                let store = self.0.open_log(name)?;
                Ok(Some(logs_bundle(&store, name, n)?))
            }
            Some(_) => self.start(args, cx.host.current_cell()),
        }
    }
}

impl Serve {
    fn start(&self, args: &[String], cell: Option<&str>) -> Result<Option<MimeBundle>, MagicError> {
        let line: ServeLine = ferrolab_magics::parse_args(args, SERVE_USAGE)?;
        let config = line
            .args
            .config()
            .map_err(|e| MagicError::usage(format!("{e:#}")))?;
        if self.0.lock().contains_key(&config.name) {
            return Err(MagicError::new(
                "ServerRunning",
                format!(
                    "a server named '{}' already runs in this kernel; %serve stop {} first, or pass --name",
                    config.name, config.name
                ),
            ));
        }
        let handle =
            crate::spawn(config).map_err(|e| MagicError::new("ServeError", format!("{e:#}")))?;
        let mut text = format!(
            "serving {} as '{}' at {}/v1 (models: {}); request log {}",
            handle.config.model,
            handle.name,
            handle.url,
            handle.models.join(", "),
            handle.log.display()
        );
        if let Some(backend) = self.1.backend() {
            let where_ = backend.describe();
            let started = Store::open(&handle.log).and_then(|log| {
                crate::deployment::Deployment::start(
                    backend,
                    &handle.config,
                    &handle.url,
                    &handle.models,
                    log,
                    cell,
                )
            });
            match started {
                Ok(d) => {
                    text.push_str(&format!(
                        "; tracked as run {} in experiment 'deployments' at {where_}",
                        d.run_id
                    ));
                    ferrolab_magics::lock(&self.0.deployments).insert(handle.name.clone(), d);
                }
                Err(e) => text.push_str(&format!(
                    "; not tracked ({e:#}); the request log has everything"
                )),
            }
        }
        let html = format!(
            "<div>serving <b>{}</b> as <code>{}</code> at <a href=\"{url}/v1/models\" target=\"_blank\">{url}/v1</a> \
             · models: {} · <a href=\"{url}/metrics\" target=\"_blank\">metrics</a> · \
             <a href=\"{url}/openapi.json\" target=\"_blank\">OpenAPI</a></div>",
            escape(&handle.config.model),
            escape(&handle.name),
            escape(&handle.models.join(", ")),
            url = escape(&handle.url),
        );
        let data = json!({"name": handle.name, "url": handle.url, "models": handle.models, "log": handle.log});
        self.0.lock().insert(handle.name.clone(), handle);
        Ok(Some(
            MimeBundle::text(text)
                .with("text/html", html)
                .with_data("serve", data),
        ))
    }

    fn list(&self) -> MimeBundle {
        let servers = self.0.lock();
        if servers.is_empty() {
            return MimeBundle::text("no servers run in this kernel; start one with %serve MODEL");
        }
        let rows: Vec<Vec<String>> = servers
            .values()
            .map(|h| {
                vec![
                    h.name.clone(),
                    format!("{}/v1", h.url),
                    h.models.join(", "),
                    if h.is_running() { "running" } else { "stopped" }.to_string(),
                    h.log.display().to_string(),
                ]
            })
            .collect();
        table_bundle(&["name", "url", "models", "state", "request log"], &rows)
    }
}

fn cut(text: &str, max: usize) -> String {
    let flat = text.replace('\n', "⏎");
    if flat.chars().count() <= max {
        return flat;
    }
    flat.chars().take(max).collect::<String>() + "…"
}

fn logs_bundle(store: &Store, name: &str, n: usize) -> Result<MimeBundle, MagicError> {
    let records = store
        .recent(n)
        .map_err(|e| MagicError::new("RequestLogError", format!("{e:#}")))?;
    if records.is_empty() {
        return Ok(MimeBundle::text(format!(
            "server '{name}' has logged no requests yet"
        )));
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                chrono::DateTime::from_timestamp(r.created as i64, 0)
                    .map(|t| t.format("%H:%M:%S").to_string())
                    .unwrap_or_default(),
                r.id.clone(),
                r.endpoint.clone(),
                r.model.clone(),
                r.status.to_string(),
                format!("{} + {}", r.prompt_tokens, r.completion_tokens),
                format!("{:.3}", r.latency_s),
                cut(&r.prompt, 40),
                cut(r.error.as_deref().unwrap_or(&r.completion), 60),
            ]
        })
        .collect();
    Ok(table_bundle(
        &[
            "time",
            "id",
            "endpoint",
            "model",
            "status",
            "tokens",
            "latency s",
            "prompt",
            "completion / error",
        ],
        &rows,
    ))
}

fn table_bundle(header: &[&str], rows: &[Vec<String>]) -> MimeBundle {
    let text = std::iter::once(header.join(" | "))
        .chain(rows.iter().map(|r| r.join(" | ")))
        .collect::<Vec<_>>()
        .join("\n");
    let html = format!(
        "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
        header
            .iter()
            .map(|h| format!("<th style=\"text-align:left\">{}</th>", escape(h)))
            .collect::<String>(),
        rows.iter()
            .map(|r| format!(
                "<tr>{}</tr>",
                r.iter()
                    .map(|c| format!("<td style=\"text-align:left\">{}</td>", escape(c)))
                    .collect::<String>()
            ))
            .collect::<String>()
    );
    MimeBundle::text(text).with("text/html", html)
}

const MONITOR_USAGE: &str = "%monitor NAME [--minutes M] [--watch SECONDS]

A dashboard of a server's request log: requests per minute, p50 and p95 latency,
time to first token, generated tokens/s, error rate and mean human feedback per
minute over the last M minutes (default 60), as charts (Vega-Lite with a static
SVG copy). --watch refreshes it every 2 seconds for that many seconds (interrupt
the cell to stop early). NAME is a server started with %serve or `ferrolab serve
--name NAME`.";

struct Monitor(Arc<Servers>);

impl Magic for Monitor {
    fn name(&self) -> &str {
        "monitor"
    }

    fn summary(&self) -> &str {
        "dashboard of a server: traffic, latency, tokens/s, errors, feedback"
    }

    fn usage(&self) -> &str {
        MONITOR_USAGE
    }

    fn kinds(&self) -> &[MagicKind] {
        &[MagicKind::Line]
    }

    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let mut name = None;
        let mut minutes = 60i64;
        let mut watch = 0u64;
        let args = &invocation.args;
        let mut i = 0;
        while i < args.len() {
            let number = |i: usize, flag: &str| -> Result<u64, MagicError> {
                args.get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| MagicError::usage(format!("{flag} needs a whole number")))
            };
            match args[i].as_str() {
                "--minutes" => {
                    minutes = number(i, "--minutes")?.max(1) as i64;
                    i += 1;
                }
                "--watch" => {
                    watch = number(i, "--watch")?;
                    i += 1;
                }
                flag if flag.starts_with("--") => {
                    return Err(MagicError::usage(format!(
                        "unknown flag {flag}; see %monitor?"
                    )))
                }
                word if name.is_none() => name = Some(word.to_string()),
                word => {
                    return Err(MagicError::usage(format!(
                        "unexpected '{word}'; %monitor takes one server name"
                    )))
                }
            }
            i += 1;
        }
        let name = name.ok_or_else(|| MagicError::usage("%monitor needs a server's name"))?;
        let store = self.0.open_log(&name)?;
        let draw = || -> Result<MimeBundle, MagicError> {
            let stats = store
                .minutes(minutes)
                .map_err(|e| MagicError::new("RequestLogError", format!("{e:#}")))?;
            Ok(dashboard(&name, minutes, &stats))
        };
        if watch == 0 {
            return draw().map(Some);
        }
        let display = Display::show(cx.out, draw()?);
        let end = Instant::now() + Duration::from_secs(watch);
        'watching: while Instant::now() < end {
            let next = Instant::now() + Duration::from_secs(2);
            while Instant::now() < next.min(end) {
                if cx.host.interrupted() {
                    break 'watching;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            display.update(cx.out, draw()?);
        }
        display.update(cx.out, draw()?);
        Ok(None)
    }
}

/// The charts of `%monitor`, one per figure, over the minutes with requests.
pub fn dashboard(name: &str, minutes: i64, stats: &[MinuteStats]) -> MimeBundle {
    let total: usize = stats.iter().map(|s| s.requests).sum();
    let errors: usize = stats.iter().map(|s| s.errors).sum();
    let summary = format!(
        "server '{name}', last {minutes} min: {total} requests, {errors} errors ({:.1}%)",
        if total > 0 {
            100.0 * errors as f64 / total as f64
        } else {
            0.0
        }
    );
    if stats.is_empty() {
        return MimeBundle::text(format!("{summary}; nothing to chart yet"));
    }
    let x: Vec<XValue> = stats
        .iter()
        .map(|s| XValue::Num(s.minute as f64 * 1000.0))
        .collect();
    let series = |label: &str, values: Vec<Option<f64>>| -> Option<Series> {
        let (x, y): (Vec<XValue>, Vec<f64>) = x
            .iter()
            .zip(values)
            .filter_map(|(x, v)| v.map(|v| (x.clone(), v)))
            .unzip();
        (!y.is_empty()).then(|| Series {
            name: Some(label.to_string()),
            x,
            y,
        })
    };
    let chart = |title: &str, y_label: &str, lines: Vec<Option<Series>>| -> Option<Chart> {
        let lines: Vec<Series> = lines.into_iter().flatten().collect();
        (!lines.is_empty()).then(|| Chart {
            title: title.to_string(),
            x_label: "minute".into(),
            y_label: y_label.into(),
            x_scale: XScale::Time,
            color_label: (lines.len() > 1).then(|| "series".to_string()),
            marks: Marks::Points {
                line: true,
                series: lines,
            },
        })
    };
    let charts: Vec<Chart> = [
        chart(
            "Requests per minute",
            "requests",
            vec![series(
                "requests",
                stats.iter().map(|s| Some(s.requests as f64)).collect(),
            )],
        ),
        chart(
            "Latency",
            "seconds",
            vec![
                series("p50", stats.iter().map(|s| s.p50_latency_s).collect()),
                series("p95", stats.iter().map(|s| s.p95_latency_s).collect()),
                series(
                    "time to first token",
                    stats.iter().map(|s| s.mean_ttft_s).collect(),
                ),
            ],
        ),
        chart(
            "Generated tokens per second",
            "tokens/s",
            vec![series(
                "tokens/s",
                stats.iter().map(|s| s.tokens_per_s).collect(),
            )],
        ),
        chart(
            "Error rate",
            "% of requests",
            vec![series(
                "errors",
                stats
                    .iter()
                    .map(|s| Some(100.0 * s.errors as f64 / s.requests.max(1) as f64))
                    .collect(),
            )],
        ),
        chart(
            "Mean human feedback",
            "score",
            vec![series(
                "score",
                stats.iter().map(|s| s.mean_score).collect(),
            )],
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let html = format!(
        "<div class=\"ferrolab-monitor\"><div>{}</div><div style=\"display:flex;flex-wrap:wrap\">{}</div></div>",
        escape(&summary),
        charts
            .iter()
            .map(|c| format!("<div>{}</div>", svg::render(c, 420.0, 240.0)))
            .collect::<String>()
    );
    let specs: Vec<Value> = charts
        .iter()
        .map(|c| {
            let mut spec = svg::vega_lite(c);
            if let Some(o) = spec.as_object_mut() {
                o.remove("$schema");
                o.insert("width".into(), json!(360));
                o.insert("height".into(), json!(180));
            }
            spec
        })
        .collect();
    let vega = json!({
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": summary,
        "vconcat": specs,
    });
    let json_stats = serde_json::to_value(stats).unwrap_or(Value::Null);
    MimeBundle::text(format!(
        "{summary}\n{}",
        stats
            .iter()
            .map(|s| format!(
                "{}  {} req  p50 {}  p95 {}  {} tokens/s  score {}",
                chrono::DateTime::from_timestamp(s.minute, 0)
                    .map(|t| t.format("%H:%M").to_string())
                    .unwrap_or_default(),
                s.requests,
                s.p50_latency_s
                    .map(|v| format!("{v:.2}s"))
                    .unwrap_or("-".into()),
                s.p95_latency_s
                    .map(|v| format!("{v:.2}s"))
                    .unwrap_or("-".into()),
                s.tokens_per_s
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or("-".into()),
                s.mean_score
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or("-".into()),
            ))
            .collect::<Vec<_>>()
            .join("\n")
    ))
    .with("text/html", html)
    .with("application/vnd.vegalite.v5+json", vega)
    .with_data(
        "monitor",
        json!({"summary": summary, "minutes": json_stats}),
    )
}

const FEEDBACK_USAGE: &str = "%feedback export NAME --min-score S --out FILE.jsonl

Writes every successful completion of server NAME whose mean human feedback score
(from POST /v1/feedback) is at least S as a JSONL dataset: chats as
{\"messages\": [...]}, completions as {\"prompt\", \"completion\"}. %finetune takes the
file as its data.";

struct FeedbackMagic(Arc<Servers>);

impl Magic for FeedbackMagic {
    fn name(&self) -> &str {
        "feedback"
    }

    fn summary(&self) -> &str {
        "export well-rated completions of a server as a fine-tuning dataset"
    }

    fn usage(&self) -> &str {
        FEEDBACK_USAGE
    }

    fn kinds(&self) -> &[MagicKind] {
        &[MagicKind::Line]
    }

    fn run(
        &self,
        invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let args = &invocation.args;
        if args.first().map(String::as_str) != Some("export") {
            return Err(MagicError::usage(format!(
                "%feedback takes export; usage:\n{FEEDBACK_USAGE}"
            )));
        }
        let mut name = None;
        let mut min_score = None;
        let mut out = None;
        let mut i = 1;
        while i < args.len() {
            match args[i].as_str() {
                "--min-score" => {
                    i += 1;
                    min_score = Some(
                        args.get(i)
                            .and_then(|v| v.parse::<f64>().ok())
                            .ok_or_else(|| MagicError::usage("--min-score needs a number"))?,
                    );
                }
                "--out" => {
                    i += 1;
                    out =
                        Some(PathBuf::from(args.get(i).ok_or_else(|| {
                            MagicError::usage("--out needs a file name")
                        })?));
                }
                flag if flag.starts_with("--") => {
                    return Err(MagicError::usage(format!(
                        "unknown flag {flag}; see %feedback?"
                    )))
                }
                word => name = Some(word.to_string()),
            }
            i += 1;
        }
        let name =
            name.ok_or_else(|| MagicError::usage("%feedback export needs a server's name"))?;
        let min_score =
            min_score.ok_or_else(|| MagicError::usage("%feedback export needs --min-score S"))?;
        let out =
            out.ok_or_else(|| MagicError::usage("%feedback export needs --out FILE.jsonl"))?;
        let store = self.0.open_log(&name)?;
        let done = dataset::export(&store, min_score, &out)
            .map_err(|e| MagicError::new("ExportError", format!("{e:#}")))?;
        let text = format!(
            "{} completions with mean score >= {min_score} written to {} ({} chats, {} prompt/completion pairs)",
            done.rows,
            out.display(),
            done.chat_rows,
            done.rows - done.chat_rows
        );
        Ok(Some(MimeBundle::text(text).with_data(
            "feedback-export",
            json!({"rows": done.rows, "chat_rows": done.chat_rows, "path": out}),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_has_a_chart_per_figure_in_both_views() {
        let stats = vec![
            MinuteStats {
                minute: 1_800_000_000,
                requests: 4,
                errors: 1,
                p50_latency_s: Some(0.5),
                p95_latency_s: Some(1.5),
                mean_ttft_s: Some(0.1),
                tokens_per_s: Some(20.0),
                mean_score: Some(4.5),
            },
            MinuteStats {
                minute: 1_800_000_060,
                requests: 2,
                errors: 0,
                p50_latency_s: Some(0.4),
                p95_latency_s: Some(0.9),
                mean_ttft_s: None,
                tokens_per_s: Some(22.0),
                mean_score: None,
            },
        ];
        let bundle = dashboard("demo", 60, &stats);
        let text = bundle.get("text/plain").unwrap_or("");
        assert!(text.contains("6 requests, 1 errors (16.7%)"), "{text}");
        let html = bundle.get("text/html").unwrap_or("");
        assert_eq!(html.matches("<svg").count(), 5);
        let vega = &bundle.data["application/vnd.vegalite.v5+json"];
        assert_eq!(vega["vconcat"].as_array().map(Vec::len), Some(5));
    }
}
