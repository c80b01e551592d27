//! `%finetune` / `%%finetune` in the kernel: flags or a TOML body, a live progress
//! display (bar, loss curve, tokens/s, ETA) updated in place, and a summary.

use crate::data::{self, Example};
use crate::generate::Sampling;
use crate::tokenizer::Message;
use crate::tracker::{RunStatus, Tracking};
use crate::train::{self, Event, StepMetrics, TrainConfig};
use crate::Engine;
use ferrolab_magics::Stream;
use ferrolab_magics::{
    escape_html as escape, Display, Invocation, Magic, MagicContext, MagicError, MagicKind,
    MimeBundle, Registry,
};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rows of a table the kernel's data magics loaded, for `--table`.
pub trait TableRows: Send + Sync {
    fn rows(&self, table: &str) -> Result<Vec<Map<String, Value>>, MagicError>;
}

/// Adds `%finetune` (reading `%load`ed tables through `tables` and reporting runs
/// through `tracking`), `%generate` and `%gpu`.
pub fn register(registry: &mut Registry, tables: Arc<dyn TableRows>, tracking: Arc<Tracking>) {
    registry.register(Arc::new(Finetune { tables, tracking }));
    let generate = Arc::new(Generate::default());
    registry.register(generate.clone());
    registry.register(Arc::new(Gpu));
    // Rust cells reach the same loaded models as `%generate`.
    registry.register_call("generate", Arc::new(CellModel::Generate(generate.clone())));
    registry.register_call("chat", Arc::new(CellModel::Chat(generate.clone())));
    registry.register_call("embed", Arc::new(CellModel::Embed(generate)));
}

/// The model calls of the cell API (`ferrolab_cell::generate`, `chat`, `embed`).
enum CellModel {
    Generate(Arc<Generate>),
    Chat(Arc<Generate>),
    Embed(Arc<Generate>),
}

/// Sampling as `%generate`'s flags or a cell's options give it; unset values take
/// [`Sampling::default`]'s.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SamplingOptions {
    max_tokens: Option<usize>,
    temperature: Option<f64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    seed: Option<u64>,
    #[serde(default)]
    stop: Vec<String>,
    adapter: Option<String>,
}

impl SamplingOptions {
    fn sampling(&mut self) -> Sampling {
        let defaults = Sampling::default();
        Sampling {
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            seed: self.seed.unwrap_or(defaults.seed),
            stop: std::mem::take(&mut self.stop),
        }
    }
}

fn cell_arg<T: serde::de::DeserializeOwned>(
    args: &Value,
    name: &str,
    call: &str,
) -> Result<T, MagicError> {
    serde_json::from_value(args.get(name).cloned().unwrap_or(Value::Null))
        .map_err(|e| MagicError::usage(format!("`{call}`: argument `{name}`: {e}")))
}

impl ferrolab_magics::CellCall for CellModel {
    fn call(
        &self,
        args: &Value,
        _cx: &ferrolab_magics::CallContext<'_>,
    ) -> Result<Value, MagicError> {
        let model_error = |e: anyhow::Error| MagicError::new("ModelError", format!("{e:#}"));
        let (name, generate) = match self {
            CellModel::Generate(g) => ("generate", g),
            CellModel::Chat(g) => ("chat", g),
            CellModel::Embed(g) => ("embed", g),
        };
        let model: String = cell_arg(args, "model", name)?;
        if let CellModel::Embed(_) = self {
            let text: String = cell_arg(args, "text", name)?;
            let engine = generate.engine(&model, None)?;
            let embedding = engine.embed(&text).map_err(model_error)?;
            return Ok(serde_json::json!({ "embedding": embedding }));
        }
        let mut options: SamplingOptions = match args.get("options") {
            None | Some(Value::Null) => SamplingOptions::default(),
            Some(_) => cell_arg(args, "options", name)?,
        };
        let engine = generate.engine(&model, options.adapter.as_deref())?;
        let prompt = match self {
            CellModel::Chat(_) => {
                let messages: Vec<Message> = cell_arg::<Vec<CellMessage>>(args, "messages", name)?
                    .into_iter()
                    .map(|m| Message::new(&m.role, &m.content))
                    .collect();
                if messages.is_empty() {
                    return Err(MagicError::usage("`chat` needs at least one message"));
                }
                engine.chat_prompt(&messages).map_err(model_error)?
            }
            _ => cell_arg(args, "prompt", name)?,
        };
        let sampling = options.sampling();
        let generation = engine
            .generate(&prompt, &sampling, |_| {})
            .map_err(model_error)?;
        Ok(serde_json::json!({
            "text": generation.text,
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens.len(),
            "finish_reason": generation.finish_reason,
        }))
    }
}

#[derive(serde::Deserialize)]
struct CellMessage {
    role: String,
    content: String,
}

/// `%gpu`: CUDA devices, their memory and utilisation, or why there are none.
pub struct Gpu;

impl Magic for Gpu {
    fn name(&self) -> &str {
        "gpu"
    }

    fn summary(&self) -> &str {
        "list CUDA devices with memory and utilisation"
    }

    fn usage(&self) -> &str {
        "%gpu\n\nLists the CUDA devices (name, compute capability, memory used and total,\nutilisation), or says \"no CUDA device found\" and why. Fine-tuning and\ngeneration pick the first device when --device is auto and this build has CUDA."
    }

    fn kinds(&self) -> &[MagicKind] {
        &[MagicKind::Line]
    }

    fn run(
        &self,
        invocation: &Invocation,
        _cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        if let Some(extra) = invocation.args.first() {
            return Err(MagicError::usage(format!(
                "%gpu takes no arguments, got '{extra}'"
            )));
        }
        let report = crate::gpu::report();
        Ok(Some(MimeBundle::text(report.text()).with_data(
            "gpu",
            serde_json::to_value(&report).unwrap_or(Value::Null),
        )))
    }
}

/// `%generate`: a completion from a model (and adapter), streamed as it is produced.
/// Loaded models are kept, so later calls start at once.
#[derive(Default)]
pub struct Generate {
    /// Base models by name (adapters are read afresh: a rerun rewrites them).
    engines: Mutex<HashMap<String, Arc<Engine>>>,
}

const GENERATE_USAGE: &str = "\
%generate [--model smollm2] [--adapter DIR] [--chat] [--max-tokens 128]
          [--temperature 0] [--top-k 0] [--top-p 1] [--seed 0] [--stop TEXT] PROMPT
%%generate [flags]
  <PROMPT on the following lines>

Generates a continuation of PROMPT, streamed to the cell's output. --chat wraps the
prompt as a user message in the model's chat template. --adapter applies a PEFT LoRA
adapter (for example <run folder>/adapter from %finetune). Greedy unless
--temperature is above 0.";

/// `%generate`'s flags; the sampling defaults are [`Sampling::default`]'s.
#[derive(clap::Parser)]
#[command(name = "%generate", no_binary_name = true, disable_help_flag = true)]
struct GenerateLine {
    #[arg(long, default_value = "smollm2")]
    model: String,
    #[arg(long)]
    adapter: Option<String>,
    #[arg(long)]
    chat: bool,
    #[arg(long)]
    max_tokens: Option<usize>,
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    stop: Vec<String>,
    /// The prompt, in the line form.
    prompt: Vec<String>,
}

impl Magic for Generate {
    fn name(&self) -> &str {
        "generate"
    }

    fn summary(&self) -> &str {
        "generate text with a model (and a LoRA adapter), streamed"
    }

    fn usage(&self) -> &str {
        GENERATE_USAGE
    }

    fn kinds(&self) -> &[MagicKind] {
        &[MagicKind::Line, MagicKind::Cell]
    }

    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let line: GenerateLine = ferrolab_magics::parse_args(&invocation.args, GENERATE_USAGE)?;
        let sampling = SamplingOptions {
            max_tokens: line.max_tokens,
            temperature: line.temperature,
            top_k: line.top_k,
            top_p: line.top_p,
            seed: line.seed,
            stop: line.stop,
            adapter: None,
        }
        .sampling();
        let (model, adapter, chat, words) = (line.model, line.adapter, line.chat, line.prompt);
        let prompt = match invocation.kind {
            MagicKind::Cell => invocation.body.trim_end_matches('\n').to_string(),
            MagicKind::Line => words.join(" "),
        };
        if prompt.trim().is_empty() {
            return Err(MagicError::usage("no prompt given; see %generate?"));
        }
        let engine = self.engine(&model, adapter.as_deref())?;
        let prompt = if chat {
            engine
                .chat_prompt(&[Message::new("user", &prompt)])
                .map_err(|e| MagicError::new("ModelError", format!("{e:#}")))?
        } else {
            prompt
        };
        let out = &mut *cx.out;
        let generation = engine
            .generate(&prompt, &sampling, |piece| {
                out.stream(Stream::Stdout, piece)
            })
            .map_err(|e| MagicError::new("ModelError", format!("{e:#}")))?;
        out.stream(Stream::Stdout, "\n");
        let json = serde_json::json!({
            "text": generation.text,
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens.len(),
            "finish_reason": generation.finish_reason,
        });
        Ok(Some(
            MimeBundle::text(format!("{:?}", generation.text)).with_data("generation", json),
        ))
    }
}

impl Generate {
    fn engine(&self, model: &str, adapter: Option<&str>) -> Result<Arc<Engine>, MagicError> {
        let key = model.to_string();
        let mut engines = self
            .engines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if adapter.is_none() {
            if let Some(engine) = engines.get(&key) {
                return Ok(engine.clone());
            }
        }
        let load = || -> anyhow::Result<Engine> {
            let mut engine = Engine::load(model, &crate::device("auto")?, candle_core::DType::F32)?;
            if let Some(adapter) = adapter {
                engine.load_adapter(std::path::Path::new(adapter))?;
            }
            Ok(engine)
        };
        let engine = Arc::new(load().map_err(|e| MagicError::new("ModelError", format!("{e:#}")))?);
        if adapter.is_none() {
            engines.insert(key, engine.clone());
        }
        Ok(engine)
    }
}

pub struct Finetune {
    tables: Arc<dyn TableRows>,
    tracking: Arc<Tracking>,
}

const USAGE: &str = "\
%finetune --data FILE.jsonl [--model smollm2] [--steps N] [--r 8] [--targets q,v] ...
%%finetune [--resume]
  <TOML body: model = \"smollm2\", data = \"train.jsonl\", steps = 100, ...>

LoRA fine-tuning with a live progress bar and loss curve. Every setting is a flag
(dashes) or a TOML key (underscores):
  model (smollm2 | FILE.gguf | HF folder)   data (JSONL: prompt/completion or messages)
  table (a table loaded with %load)         eval_data, eval_fraction (0.1)
  output (run folder, default runs/<name>)  name, resume, overwrite
  r (8), alpha (16), dropout (0), targets (q,v; also k,o,gate,up,down)
  steps, epochs (1), batch_size (4), grad_accum (1), max_length (512)
  lr (2e-4), warmup_steps (0), schedule (cosine | linear | constant)
  weight_decay (0), max_grad_norm (1), eval_every (0 = at the end)
  checkpoint_every (50), keep_checkpoints (2), seed (42)
  device (auto | cpu | cuda | cuda:N), dtype (auto | f32 | bf16), merge
Interrupting the cell writes a checkpoint; run again with --resume to continue.
The adapter is saved in PEFT's layout in <run folder>/adapter.";

impl Magic for Finetune {
    fn name(&self) -> &str {
        "finetune"
    }

    fn summary(&self) -> &str {
        "LoRA fine-tuning with live progress; adapters in PEFT's layout"
    }

    fn usage(&self) -> &str {
        USAGE
    }

    fn kinds(&self) -> &[MagicKind] {
        &[MagicKind::Line, MagicKind::Cell]
    }

    fn run(
        &self,
        invocation: &Invocation,
        cx: &mut MagicContext<'_>,
    ) -> Result<Option<MimeBundle>, MagicError> {
        let config = config_from(invocation)?;
        let examples = match &config.table {
            Some(table) => {
                let rows = self.tables.rows(table)?;
                Some(
                    data::from_rows(&rows, table)
                        .map_err(|e| MagicError::new("DatasetError", format!("{e:#}")))?,
                )
            }
            None => None,
        };
        run_with_display(&config, examples, &self.tracking, cx)
    }
}

fn run_with_display(
    config: &TrainConfig,
    examples: Option<Vec<Example>>,
    tracking: &Tracking,
    cx: &mut MagicContext<'_>,
) -> Result<Option<MimeBundle>, MagicError> {
    let mut progress = Progress::default();
    let mut display: Option<Display> = None;
    let mut last_draw = Instant::now() - Duration::from_secs(10);
    let host = &*cx.host;
    let stop = || host.interrupted();
    let out = &mut *cx.out;
    let mut observer = |event: Event| {
        let redraw = match event {
            Event::Started {
                run_dir,
                total_steps,
                resumed_from,
                train_examples,
                eval_examples,
                device,
            } => {
                progress.total = total_steps;
                progress.step = resumed_from.unwrap_or(0);
                progress.header =
                    format!(
                    "{} · {train_examples} training / {eval_examples} eval examples · {device}{}",
                    run_dir.display(),
                    resumed_from.map(|s| format!(" · resumed at step {s}")).unwrap_or_default()
                );
                true
            }
            Event::Step { metrics, eta_s, .. } => {
                progress.step = metrics.step;
                progress.eta_s = eta_s;
                progress.history.push(metrics.clone());
                metrics.step == progress.total || last_draw.elapsed() >= Duration::from_millis(500)
            }
            Event::Checkpoint { step, path } => {
                progress.note = format!("checkpoint at step {step}: {}", path.display());
                false
            }
            Event::Note(note) => {
                progress.note = note;
                true
            }
        };
        if redraw {
            last_draw = Instant::now();
            let bundle = progress.bundle();
            match &display {
                Some(d) => d.update(out, bundle),
                None => display = Some(Display::show(out, bundle)),
            }
        }
    };
    let mut tracker = tracking.tracker("finetune", host.current_cell());
    let report = train::run(config, examples, &mut *tracker, &mut observer, &stop)
        .map_err(|e| MagicError::new("FinetuneError", format!("{e:#}")))?;
    if let Some(d) = &display {
        d.update(out, progress.bundle());
    }
    match report.status {
        RunStatus::Finished => {}
        RunStatus::Interrupted => return Err(MagicError::new("KeyboardInterrupt", report.message)),
        RunStatus::Diverged => return Err(MagicError::new("TrainingDiverged", report.message)),
    }
    let mut rows = vec![
        ("run folder", report.run_dir.display().to_string()),
        ("steps", format!("{}", report.steps_done)),
        (
            "final train loss",
            report
                .final_loss
                .map(|l| format!("{l:.4}"))
                .unwrap_or_default(),
        ),
        (
            "eval loss",
            report
                .eval_loss
                .map(|l| format!("{l:.4}"))
                .unwrap_or_else(|| "no eval examples".into()),
        ),
        ("tokens/s", format!("{:.1}", report.tokens_per_s)),
    ];
    if let Some(adapter) = &report.adapter {
        rows.push(("adapter (PEFT)", adapter.display().to_string()));
    }
    if let Some(merged) = &report.merged {
        rows.push(("merged model", merged.display().to_string()));
    }
    let text = rows
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let html = format!(
        "<table class=\"ferrolab-finetune\">{}</table>",
        rows.iter()
            .map(|(k, v)| format!("<tr><th style=\"text-align:left\">{}</th><td style=\"text-align:left\">{}</td></tr>", escape(k), escape(v)))
            .collect::<String>()
    );
    Ok(Some(
        MimeBundle::text(text).with("text/html", html).with_data(
            "finetune-report",
            serde_json::to_value(&report).unwrap_or(Value::Null),
        ),
    ))
}

/// A `%finetune` invocation to a config: the TOML body first, then the flags.
pub fn config_from(invocation: &Invocation) -> Result<TrainConfig, MagicError> {
    let mut table = match invocation.kind {
        MagicKind::Cell if !invocation.body.trim().is_empty() => invocation
            .body
            .parse::<toml::Table>()
            .map_err(|e| MagicError::usage(format!("the cell body is not valid TOML: {e}")))?,
        _ => toml::Table::new(),
    };
    apply_flags(&mut table, &invocation.args)?;
    let config: TrainConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| MagicError::usage(format!("{e}")))?;
    config
        .validate()
        .map_err(|e| MagicError::usage(format!("{e:#}")))?;
    Ok(config)
}

/// Flags the TOML keys take; the type decides how a flag's text is read.
enum Kind {
    Text,
    Int,
    Float,
    Bool,
    List,
}

fn kind(key: &str) -> Option<Kind> {
    Some(match key {
        "model" | "data" | "table" | "eval_data" | "output" | "name" | "schedule" | "device"
        | "dtype" => Kind::Text,
        "r" | "steps" | "batch_size" | "grad_accum" | "max_length" | "warmup_steps"
        | "eval_every" | "checkpoint_every" | "keep_checkpoints" | "seed" => Kind::Int,
        "alpha" | "dropout" | "epochs" | "lr" | "weight_decay" | "max_grad_norm"
        | "eval_fraction" => Kind::Float,
        "resume" | "merge" | "overwrite" => Kind::Bool,
        "targets" => Kind::List,
        _ => return None,
    })
}

fn apply_flags(table: &mut toml::Table, args: &[String]) -> Result<(), MagicError> {
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(MagicError::usage(format!(
                "unexpected argument '{arg}'; settings are flags like --data FILE"
            )));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let key = name.replace('-', "_");
        let kind = kind(&key)
            .ok_or_else(|| MagicError::usage(format!("unknown flag --{name}; see %finetune?")))?;
        let value = match (kind, inline) {
            (Kind::Bool, None) => toml::Value::Boolean(true),
            (kind, inline) => {
                let text = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| MagicError::usage(format!("--{name} needs a value")))?
                    }
                };
                let bad =
                    |what: &str| MagicError::usage(format!("--{name} needs {what}, got '{text}'"));
                match kind {
                    Kind::Text => toml::Value::String(text.clone()),
                    Kind::Int => {
                        toml::Value::Integer(text.parse().map_err(|_| bad("a whole number"))?)
                    }
                    Kind::Float => toml::Value::Float(text.parse().map_err(|_| bad("a number"))?),
                    Kind::Bool => {
                        toml::Value::Boolean(text.parse().map_err(|_| bad("true or false"))?)
                    }
                    Kind::List => toml::Value::Array(
                        text.split(',')
                            .filter(|s| !s.is_empty())
                            .map(|s| toml::Value::String(s.trim().to_string()))
                            .collect(),
                    ),
                }
            }
        };
        table.insert(key, value);
        i += 1;
    }
    Ok(())
}

/// What the live display shows.
#[derive(Default)]
struct Progress {
    header: String,
    note: String,
    step: usize,
    total: usize,
    eta_s: f64,
    history: Vec<StepMetrics>,
}

impl Progress {
    fn bundle(&self) -> MimeBundle {
        let last = self.history.last();
        let bar = train::progress_bar(self.step, self.total);
        let eval = self.history.iter().rev().find_map(|m| m.eval_loss);
        let figures = match last {
            Some(m) => format!(
                "loss {:.4}{} · lr {:.2e} · {:.1} tokens/s · ETA {}",
                m.loss,
                eval.map(|e| format!(" · eval {e:.4}")).unwrap_or_default(),
                m.lr,
                m.tokens_per_s,
                duration(self.eta_s)
            ),
            None => "loading the model…".to_string(),
        };
        let text = format!(
            "{}\nstep {}/{} {bar} {figures}{}",
            self.header,
            self.step,
            self.total,
            if self.note.is_empty() {
                String::new()
            } else {
                format!("\n{}", self.note)
            }
        );
        let html = format!(
            "<div class=\"ferrolab-progress\"><div>{}</div>\
             <div><progress value=\"{}\" max=\"{}\" style=\"width:24em\"></progress> step {} / {} · {}</div>{}<div>{}</div></div>",
            escape(&self.header),
            self.step,
            self.total.max(1),
            self.step,
            self.total,
            escape(&figures),
            loss_svg(&self.history),
            escape(&self.note),
        );
        let json = serde_json::json!({
            "step": self.step,
            "total_steps": self.total,
            "eta_s": self.eta_s,
            "loss": last.map(|m| m.loss),
            "eval_loss": eval,
            "tokens_per_s": last.map(|m| m.tokens_per_s),
        });
        MimeBundle::text(text)
            .with("text/html", html)
            .with_data("finetune", json)
    }
}

fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".into();
    }
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The train loss (line) and eval loss (dots) per step.
fn loss_svg(history: &[StepMetrics]) -> String {
    if history.len() < 2 {
        return String::new();
    }
    let (w, h, pad) = (480.0, 160.0, 36.0);
    let first = history[0].step as f64;
    let last = history[history.len() - 1].step as f64;
    let values = history
        .iter()
        .map(|m| m.loss)
        .chain(history.iter().filter_map(|m| m.eval_loss));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x = |step: usize| pad + (step as f64 - first) / (last - first).max(1.0) * (w - 2.0 * pad);
    let y = |v: f64| h - pad / 2.0 - (v - lo) / span * (h - pad);
    let points: String = history
        .iter()
        .map(|m| format!("{:.1},{:.1} ", x(m.step), y(m.loss)))
        .collect();
    let evals: String = history
        .iter()
        .filter_map(|m| {
            m.eval_loss.map(|e| {
                format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#d62728\"/>",
                    x(m.step),
                    y(e)
                )
            })
        })
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"loss curve\">\
         <text x=\"2\" y=\"{:.1}\" font-size=\"10\">{hi:.3}</text><text x=\"2\" y=\"{:.1}\" font-size=\"10\">{lo:.3}</text>\
         <text x=\"{pad}\" y=\"{h}\" font-size=\"10\">step {first}</text><text x=\"{:.1}\" y=\"{h}\" font-size=\"10\" text-anchor=\"end\">step {last}</text>\
         <polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{points}\"/>{evals}\
         <text x=\"{:.1}\" y=\"12\" font-size=\"10\" text-anchor=\"end\">— train · ● eval</text></svg>",
        y(hi) + 4.0,
        y(lo),
        w - pad,
        w - pad,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_flags_mix_with_prompt_words() {
        let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let line: GenerateLine = ferrolab_magics::parse_args(
            &words("Once upon --max-tokens 8 a --stop . time --chat"),
            GENERATE_USAGE,
        )
        .expect("parses");
        assert_eq!(line.prompt.join(" "), "Once upon a time");
        assert_eq!((line.max_tokens, line.chat), (Some(8), true));
        assert_eq!(
            (line.model.as_str(), line.stop),
            ("smollm2", vec![".".to_string()])
        );
        let error = ferrolab_magics::parse_args::<GenerateLine>(&words("hi --top-k many"), "U")
            .err()
            .expect("a bad number is refused");
        assert!(
            error.evalue.contains("--top-k") && error.evalue.ends_with("U"),
            "{}",
            error.evalue
        );
    }

    fn invocation(kind: MagicKind, args: &[&str], body: &str) -> Invocation {
        Invocation {
            kind,
            name: "finetune".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            raw_args: args.join(" "),
            body: body.into(),
            help: false,
        }
    }

    #[test]
    fn flags_override_the_toml_body() {
        let config = config_from(&invocation(
            MagicKind::Cell,
            &["--steps", "7", "--targets=q,k,v", "--resume"],
            "data = 'train.jsonl'\nsteps = 3\nlr = 1e-3",
        ))
        .unwrap();
        assert_eq!(config.steps, Some(7));
        assert_eq!(config.lr, 1e-3);
        assert!(config.resume);
        assert_eq!(config.targets, vec!["q", "k", "v"]);
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let err = config_from(&invocation(
            MagicKind::Line,
            &["--data", "x.jsonl", "--stpes", "3"],
            "",
        ))
        .unwrap_err();
        assert!(err.evalue.contains("--stpes"), "{}", err.evalue);
        let err = config_from(&invocation(
            MagicKind::Line,
            &["--data", "x.jsonl", "--steps", "many"],
            "",
        ))
        .unwrap_err();
        assert!(err.evalue.contains("whole number"), "{}", err.evalue);
        let err = config_from(&invocation(MagicKind::Line, &["--steps", "3"], "")).unwrap_err();
        assert!(err.evalue.contains("no training data"), "{}", err.evalue);
        let err = config_from(&invocation(
            MagicKind::Line,
            &["--data", "x", "--targets", "qq"],
            "",
        ))
        .unwrap_err();
        assert!(err.evalue.contains("unknown LoRA target"), "{}", err.evalue);
    }
}
