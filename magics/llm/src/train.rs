//! LoRA fine-tuning: AdamW on the adapter alone, warmup then cosine or linear decay,
//! gradient accumulation and clipping, loss on completion tokens only, held-out eval
//! loss, checkpoints that a run resumes from after a crash, and a run folder holding
//! the config, the metrics of every step and the outputs.
//!
//! A run is reproducible: the data order, LoRA initialisation and dropout masks all
//! derive from the seed and the step number, so a run resumed from a checkpoint
//! continues exactly as the uninterrupted run would have.

use crate::data::{self, Example, Tokenized};
use crate::lora::{LoraConfig, SeededRng, Target};
use crate::model::{KvCache, Mode};
pub use crate::tracker::StepMetrics;
use crate::tracker::{RunStatus, Tracker};
use crate::{device, write_atomically, Engine};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Linear warmup, then cosine decay to 0.
    Cosine,
    /// Linear warmup, then linear decay to 0.
    Linear,
    /// Linear warmup, then constant.
    Constant,
}

/// Everything a run needs; the keys of `%%finetune`'s TOML and of `ferrolab finetune CONFIG.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `smollm2`, a .gguf file, or a Hugging Face model folder.
    pub model: String,
    /// JSONL with `prompt`/`completion` or `messages` per line.
    pub data: Option<PathBuf>,
    /// A table loaded with `%load` (in the kernel only).
    pub table: Option<String>,
    /// Held-out examples; without it, `eval_fraction` of `data` is held out.
    pub eval_data: Option<PathBuf>,
    pub eval_fraction: f64,
    /// The run folder; default `runs/<name>`.
    pub output: Option<PathBuf>,
    /// Run name; default `finetune-<date>-<time>`.
    pub name: Option<String>,
    /// Continue from the last checkpoint in the run folder.
    pub resume: bool,
    /// Replace a run already in the output folder (without it, that is an error).
    pub overwrite: bool,
    pub r: usize,
    pub alpha: f64,
    pub dropout: f32,
    /// q, k, v, o, gate, up, down.
    pub targets: Vec<String>,
    /// Optimizer steps; default: `epochs` over the data.
    pub steps: Option<usize>,
    pub epochs: f64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Longer examples are cut to this many tokens.
    pub max_length: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub schedule: Schedule,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 turns clipping off).
    pub max_grad_norm: f64,
    /// Evaluate every N steps (and at the end); 0 only at the end.
    pub eval_every: usize,
    /// Write a checkpoint every N steps (and at the end).
    pub checkpoint_every: usize,
    /// How many checkpoints to keep.
    pub keep_checkpoints: usize,
    pub seed: u64,
    /// cpu, cuda, cuda:N or auto.
    pub device: String,
    /// f32, bf16 or auto (bf16 on CUDA, f32 on the CPU).
    pub dtype: String,
    /// Also write the base model with the adapter merged in (`merged/`).
    pub merge: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: "smollm2".into(),
            data: None,
            table: None,
            eval_data: None,
            eval_fraction: 0.1,
            output: None,
            name: None,
            resume: false,
            overwrite: false,
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec!["q".into(), "v".into()],
            steps: None,
            epochs: 1.0,
            batch_size: 4,
            grad_accum: 1,
            max_length: 512,
            lr: 2e-4,
            warmup_steps: 0,
            schedule: Schedule::Cosine,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            eval_every: 0,
            checkpoint_every: 50,
            keep_checkpoints: 2,
            seed: 42,
            device: "auto".into(),
            dtype: "auto".into(),
            merge: false,
        }
    }
}

impl TrainConfig {
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("the fine-tuning config is not valid: {e}"))
    }

    pub fn lora(&self) -> Result<LoraConfig> {
        let targets = Target::parse_list(&self.targets.join(","))?;
        let lora = LoraConfig {
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            targets,
        };
        lora.validate()?;
        Ok(lora)
    }

    pub fn validate(&self) -> Result<()> {
        self.lora()?;
        let positive = [
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
            ("max_length", self.max_length),
            ("keep_checkpoints", self.keep_checkpoints),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            bail!("{name} must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("lr must be a positive number, got {}", self.lr);
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            bail!(
                "eval_fraction must be in [0, 1), got {}",
                self.eval_fraction
            );
        }
        if self.steps == Some(0) || self.epochs <= 0.0 {
            bail!("steps and epochs must be positive");
        }
        if self.data.is_none() && self.table.is_none() {
            bail!("no training data: set `data` to a JSONL file (or `table` to a table loaded with %load)");
        }
        Ok(())
    }

    /// The run folder.
    pub fn run_dir(&self) -> PathBuf {
        if let Some(output) = &self.output {
            return output.clone();
        }
        let name = self.name.clone().unwrap_or_else(|| {
            format!("finetune-{}", chrono::Local::now().format("%Y%m%d-%H%M%S"))
        });
        PathBuf::from("runs").join(name)
    }
}

/// The learning rate for optimizer step `step` (0-based), as transformers computes it.
pub fn learning_rate(config: &TrainConfig, step: usize, total: usize) -> f64 {
    let warmup = config.warmup_steps;
    if step < warmup {
        return config.lr * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    let factor = match config.schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => (1.0 - progress).max(0.0),
        Schedule::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
    };
    config.lr * factor
}

/// `[#####.....]`: a text progress bar 30 characters wide.
pub fn progress_bar(step: usize, total: usize) -> String {
    let filled = (step * 30 / total.max(1)).min(30);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(30 - filled))
}

/// What a run tells whoever watches it.
pub enum Event<'a> {
    Started {
        run_dir: &'a Path,
        total_steps: usize,
        resumed_from: Option<usize>,
        train_examples: usize,
        eval_examples: usize,
        device: String,
    },
    Step {
        metrics: &'a StepMetrics,
        total_steps: usize,
        eta_s: f64,
    },
    Checkpoint {
        step: usize,
        path: &'a Path,
    },
    Note(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_dir: PathBuf,
    pub status: RunStatus,
    pub steps_done: usize,
    pub total_steps: usize,
    pub final_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    pub adapter: Option<PathBuf>,
    pub merged: Option<PathBuf>,
    pub tokens_per_s: f64,
    /// Peak resident memory of the process, in MiB.
    pub peak_rss_mib: Option<f64>,
    pub message: String,
}

/// AdamW as PyTorch defines it, with its state saved in checkpoints.
struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: usize,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    fn new(vars: &[(String, Var)], weight_decay: f64) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(AdamW {
            m: vars
                .iter()
                .map(|(_, v)| zeros(v))
                .collect::<candle_core::Result<_>>()?,
            v: vars
                .iter()
                .map(|(_, v)| zeros(v))
                .collect::<candle_core::Result<_>>()?,
            t: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    fn step(&mut self, vars: &[(String, Var)], grads: &[Tensor], lr: f64) -> Result<()> {
        self.t += 1;
        let c1 = 1.0 - self.beta1.powi(self.t as i32);
        let c2 = 1.0 - self.beta2.powi(self.t as i32);
        for (i, ((_, var), grad)) in vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * self.beta1)? + (grad * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?;
            let p = var.as_tensor();
            let p = (p * (1.0 - lr * self.weight_decay))?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.eps)?)?;
            var.set(&(p - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    fn save(&self, vars: &[(String, Var)], path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (i, (name, _)) in vars.iter().enumerate() {
            tensors.insert(format!("m.{name}"), self.m[i].clone());
            tensors.insert(format!("v.{name}"), self.v[i].clone());
        }
        write_atomically(path, |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(Into::into)
        })
    }

    fn load(
        &mut self,
        vars: &[(String, Var)],
        path: &Path,
        t: usize,
        device: &Device,
    ) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|e| anyhow::anyhow!("cannot read optimizer state {} ({e})", path.display()))?;
        for (i, (name, _)) in vars.iter().enumerate() {
            self.m[i] = tensors
                .get(&format!("m.{name}"))
                .cloned()
                .with_context(|| format!("optimizer state lacks m.{name}"))?;
            self.v[i] = tensors
                .get(&format!("v.{name}"))
                .cloned()
                .with_context(|| format!("optimizer state lacks v.{name}"))?;
        }
        self.t = t;
        Ok(())
    }
}

/// The checkpoint folder's state file; written last, so its presence marks the
/// checkpoint complete.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    total_steps: usize,
    optimizer_t: usize,
}

/// Picks the batches of every step: example indices, shuffled per epoch by the seed,
/// so any step's batches can be computed without replaying the steps before it.
struct Batches {
    count: usize,
    seed: u64,
    per_step: usize,
    batch_size: usize,
}

impl Batches {
    fn new(count: usize, config: &TrainConfig) -> Batches {
        Batches {
            count,
            seed: config.seed,
            per_step: config.batch_size * config.grad_accum,
            batch_size: config.batch_size,
        }
    }

    fn epoch(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.count).collect();
        let mut rng = SeededRng::seed_from_u64(
            self.seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch as u64 + 1),
        );
        order.shuffle(&mut rng);
        order
    }

    /// The micro-batches of optimizer step `step` (0-based).
    fn micro_batches(&self, step: usize) -> Vec<Vec<usize>> {
        let start = step * self.per_step;
        let mut epochs: HashMap<usize, Vec<usize>> = HashMap::new();
        let picks: Vec<usize> = (start..start + self.per_step)
            .map(|k| {
                epochs
                    .entry(k / self.count)
                    .or_insert_with(|| self.epoch(k / self.count))[k % self.count]
            })
            .collect();
        picks.chunks(self.batch_size).map(|c| c.to_vec()).collect()
    }
}

/// Right-padded ids `[b, t]`, targets `[n]` and the positions `[n]` whose next token is learned.
fn collate(
    examples: &[&Tokenized],
    pad: u32,
    device: &Device,
) -> Result<(Tensor, Tensor, Vec<u32>, usize)> {
    let width = examples
        .iter()
        .map(|e| e.ids.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let mut ids = Vec::with_capacity(examples.len() * width);
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    let mut tokens = 0;
    for (row, example) in examples.iter().enumerate() {
        tokens += example.ids.len();
        for i in 0..width {
            ids.push(example.ids.get(i).copied().unwrap_or(pad));
            if i + 1 < example.ids.len() && example.learn[i + 1] {
                positions.push((row * width + i) as u32);
                targets.push(example.ids[i + 1]);
            }
        }
    }
    let ids = Tensor::from_vec(ids, (examples.len(), width), device)?;
    let n = positions.len();
    let positions = Tensor::from_vec(positions, n, device)?;
    Ok((ids, positions, targets, tokens))
}

/// Sum of the negative log-likelihoods of the learned tokens, and their count.
fn batch_loss(
    engine: &Engine,
    examples: &[&Tokenized],
    mode: &mut Mode,
) -> Result<(Tensor, usize, usize)> {
    let pad = engine.tokenizer.eos_id().unwrap_or(0);
    let device = engine.model.device().clone();
    let (ids, positions, targets, tokens) = collate(examples, pad, &device)?;
    let n = positions.dims1()?;
    if n == 0 {
        return Ok((Tensor::zeros((), DType::F32, &device)?, 0, tokens));
    }
    let hidden = engine.model.hidden(&ids, &mut KvCache::default(), mode)?;
    let (b, t, h) = hidden.dims3()?;
    let picked = hidden.reshape((b * t, h))?.index_select(&positions, 0)?;
    let logits = engine.model.logits(&picked, mode)?.to_dtype(DType::F32)?;
    let nll = crate::loss::token_nll(&logits, &targets)?.sum_all()?;
    Ok((nll, n, tokens))
}

fn eval_loss(engine: &Engine, examples: &[Tokenized], batch_size: usize) -> Result<Option<f64>> {
    if examples.is_empty() {
        return Ok(None);
    }
    let mut total = 0.0;
    let mut count = 0;
    for chunk in examples.chunks(batch_size) {
        let refs: Vec<&Tokenized> = chunk.iter().collect();
        let (nll, n, _) = batch_loss(engine, &refs, &mut Mode::Infer)?;
        total += nll.to_scalar::<f32>()? as f64;
        count += n;
    }
    Ok((count > 0).then(|| total / count as f64))
}

fn checkpoints(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(run_dir.join("checkpoints"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let step = e
                .file_name()
                .to_str()?
                .strip_prefix("step-")?
                .parse()
                .ok()?;
            let path = e.path();
            path.join("state.json").is_file().then_some((step, path))
        })
        .collect();
    found.sort();
    found
}

/// Fields that must not change when a run is resumed.
fn same_run(old: &TrainConfig, new: &TrainConfig) -> Result<()> {
    let pairs = [
        (
            "model",
            format!("{:?}", old.model),
            format!("{:?}", new.model),
        ),
        ("data", format!("{:?}", old.data), format!("{:?}", new.data)),
        (
            "table",
            format!("{:?}", old.table),
            format!("{:?}", new.table),
        ),
        ("r", old.r.to_string(), new.r.to_string()),
        ("targets", old.targets.join(","), new.targets.join(",")),
        (
            "batch_size",
            old.batch_size.to_string(),
            new.batch_size.to_string(),
        ),
        (
            "grad_accum",
            old.grad_accum.to_string(),
            new.grad_accum.to_string(),
        ),
        ("seed", old.seed.to_string(), new.seed.to_string()),
    ];
    for (name, a, b) in pairs {
        if a != b {
            bail!("cannot resume: this run was started with {name} = {a}, now {name} = {b}; use the same settings or a new output folder");
        }
    }
    Ok(())
}

/// Peak resident memory of this process, in bytes (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs (or resumes) a fine-tuning run. `table_rows` supplies `table` examples;
/// `stop` is polled between steps (an interrupt: checkpoint, then return).
///
/// The run happens on a worker of rayon's pool while the calling thread waits:
/// candle's matrix products and the fused ops split their work with rayon, and each
/// of those thousands of calls per step, made from a thread outside the pool, handed
/// its work over and put the caller to sleep until it was done; from a worker, the
/// caller takes part in the work instead.
pub fn run(
    config: &TrainConfig,
    table_examples: Option<Vec<Example>>,
    tracker: &mut dyn Tracker,
    observer: &mut dyn FnMut(Event),
    stop: &dyn Fn() -> bool,
) -> Result<RunReport> {
    /// Carries the run's arguments to the pool's worker and its result back.
    struct OneThreadAtATime<T>(T);
    // SAFETY: `rayon::scope` blocks the calling thread until the closure has returned,
    // so the values are used by one thread at a time, never concurrently; none of them
    // depends on which thread uses it (no thread-locals, no thread-bound handles).
    unsafe impl<T> Send for OneThreadAtATime<T> {}
    impl<T> OneThreadAtATime<T> {
        fn into_inner(self) -> T {
            self.0
        }
    }
    let job = OneThreadAtATime((config, table_examples, tracker, observer, stop));
    // From outside the pool, `scope` runs its closure on one of the global pool's
    // workers and waits for it.
    rayon::scope(move |_| {
        let (config, table_examples, tracker, observer, stop) = job.into_inner();
        OneThreadAtATime(run_here(config, table_examples, tracker, observer, stop))
    })
    .into_inner()
}

fn run_here(
    config: &TrainConfig,
    table_examples: Option<Vec<Example>>,
    tracker: &mut dyn Tracker,
    observer: &mut dyn FnMut(Event),
    stop: &dyn Fn() -> bool,
) -> Result<RunReport> {
    config.validate()?;
    let run_dir = config.run_dir();
    let lora = config.lora()?;

    // The examples, before anything slow, so a bad line fails at once.
    let mut examples = match (&config.data, table_examples) {
        (_, Some(rows)) => rows,
        (Some(path), None) => data::read_jsonl(path)?,
        (None, None) => bail!(
            "table '{}' was given but no rows were supplied",
            config.table.clone().unwrap_or_default()
        ),
    };
    let device = device(&config.device)?;
    let dtype = match (config.dtype.as_str(), device.is_cuda()) {
        ("auto", true) | ("bf16", _) => DType::BF16,
        ("auto", false) | ("f32", _) => DType::F32,
        (other, _) => bail!("dtype '{other}' is not supported; use f32, bf16 or auto"),
    };

    if config.overwrite && !config.resume && run_dir.join("config.toml").is_file() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("cannot remove the earlier run in {}", run_dir.display()))?;
    }
    let previous = checkpoints(&run_dir);
    if !config.resume && run_dir.join("config.toml").exists() {
        bail!(
            "run folder {} already holds a run; pass --resume to continue it, --overwrite to replace it, or choose another output",
            run_dir.display()
        );
    }
    if config.resume {
        if let Ok(text) = std::fs::read_to_string(run_dir.join("config.toml")) {
            same_run(&TrainConfig::from_toml(&text)?, config)?;
        }
    }
    std::fs::create_dir_all(run_dir.join("checkpoints"))
        .with_context(|| format!("cannot create run folder {}", run_dir.display()))?;
    let config_text = toml::to_string_pretty(config)?;
    write_atomically(&run_dir.join("config.toml"), |tmp| {
        std::fs::write(tmp, &config_text).map_err(Into::into)
    })?;

    let mut engine = Engine::load(&config.model, &device, dtype)?;
    let mut eval_examples: Vec<Example> = match &config.eval_data {
        Some(path) => data::read_jsonl(path)?,
        None => Vec::new(),
    };
    if config.eval_data.is_none() && config.eval_fraction > 0.0 && examples.len() >= 10 {
        let mut rng = SeededRng::seed_from_u64(config.seed);
        examples.shuffle(&mut rng);
        let held = ((examples.len() as f64) * config.eval_fraction)
            .round()
            .max(1.0) as usize;
        eval_examples = examples.split_off(examples.len() - held);
    }
    let tokenize_all = |list: &[Example]| -> Result<(Vec<Tokenized>, usize)> {
        let mut out = Vec::new();
        let mut dropped = 0;
        for example in list {
            let mut t = data::tokenize(example, &engine.tokenizer)?;
            t.ids.truncate(config.max_length);
            t.learn.truncate(config.max_length);
            if t.learned_tokens() == 0 {
                dropped += 1;
            } else {
                out.push(t);
            }
        }
        Ok((out, dropped))
    };
    let (train, dropped) = tokenize_all(&examples)?;
    let (eval, _) = tokenize_all(&eval_examples)?;
    if train.is_empty() {
        bail!(
            "no training example has a completion token within max_length = {}",
            config.max_length
        );
    }
    if dropped > 0 {
        observer(Event::Note(format!(
            "{dropped} example(s) skipped: nothing to learn within max_length = {}",
            config.max_length
        )));
    }

    let per_step = config.batch_size * config.grad_accum;
    let total_steps = config.steps.unwrap_or_else(|| {
        ((train.len() as f64 * config.epochs) / per_step as f64)
            .ceil()
            .max(1.0) as usize
    });
    engine.attach_lora(&lora, config.seed)?;
    let vars = engine.lora_vars();
    let mut optimizer = AdamW::new(&vars, config.weight_decay)?;
    let mut start = 0;
    let mut resumed_from = None;
    if config.resume {
        if let Some((step, path)) = previous.last() {
            let state: CheckpointState =
                serde_json::from_str(&std::fs::read_to_string(path.join("state.json"))?)
                    .with_context(|| format!("{} is damaged", path.join("state.json").display()))?;
            engine.load_adapter_weights(path)?;
            optimizer.load(
                &vars,
                &path.join("optimizer.safetensors"),
                state.optimizer_t,
                &device,
            )?;
            start = *step;
            resumed_from = Some(*step);
        }
    }
    // Metrics after the checkpoint belong to the lost part of a crashed run.
    let metrics_path = run_dir.join("metrics.jsonl");
    let kept: Vec<String> = std::fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter(|line| serde_json::from_str::<StepMetrics>(line).is_ok_and(|m| m.step <= start))
        .map(str::to_string)
        .collect();
    let mut text = kept.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    write_atomically(&metrics_path, |tmp| {
        std::fs::write(tmp, &text).map_err(Into::into)
    })?;
    let mut metrics_file = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)?;

    tracker.start(&run_dir, &serde_json::to_value(config)?)?;
    observer(Event::Started {
        run_dir: &run_dir,
        total_steps,
        resumed_from,
        train_examples: train.len(),
        eval_examples: eval.len(),
        device: format!("{:?} {:?}", device.location(), dtype),
    });

    let batches = Batches::new(train.len(), config);
    let began = Instant::now();
    let mut tokens_seen = 0usize;
    let mut last: Option<StepMetrics> = None;
    let mut last_eval = None;
    let mut status = RunStatus::Finished;
    let mut message = String::new();
    let mut step = start;
    while step < total_steps {
        if stop() {
            status = RunStatus::Interrupted;
            break;
        }
        let micro = batches.micro_batches(step);
        let learned: usize = micro
            .iter()
            .flatten()
            .map(|&i| train[i].learned_tokens())
            .sum::<usize>()
            .max(1);
        let mut grads: Vec<Tensor> = Vec::new();
        let mut loss_sum = 0.0;
        let mut tokens = 0;
        for (m, indices) in micro.iter().enumerate() {
            let refs: Vec<&Tokenized> = indices.iter().map(|&i| &train[i]).collect();
            let mut rng = SeededRng::seed_from_u64(
                config
                    .seed
                    .wrapping_add((step as u64) << 16)
                    .wrapping_add(m as u64 + 1),
            );
            let keep = 1.0 - lora.dropout;
            let mut dropout = |dims: &[usize]| -> Result<Option<Tensor>> {
                let n: usize = dims.iter().product();
                let mask: Vec<f32> = (0..n)
                    .map(|_| {
                        if rng.random::<f32>() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Ok(Some(Tensor::from_vec(mask, dims, &device)?))
            };
            let mut mode = Mode::Train {
                dropout: &mut dropout,
            };
            let (nll, _, t) = batch_loss(&engine, &refs, &mut mode)?;
            tokens += t;
            let loss = (nll / learned as f64)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            let store = loss.backward()?;
            for (i, (_, var)) in vars.iter().enumerate() {
                let g = match store.get(var.as_tensor()) {
                    Some(g) => g.clone(),
                    None => var.as_tensor().zeros_like()?,
                };
                if grads.len() <= i {
                    grads.push(g);
                } else {
                    grads[i] = (&grads[i] + g)?;
                }
            }
        }
        if !loss_sum.is_finite() {
            let kept = checkpoints(&run_dir)
                .last()
                .map(|(s, p)| format!("step {s} ({})", p.display()));
            status = RunStatus::Diverged;
            message = format!(
                "the loss became {loss_sum} at step {}; training stopped and nothing from this step was kept. Last good checkpoint: {}. Lower lr (now {}) or raise warmup_steps.",
                step + 1,
                kept.unwrap_or_else(|| "none".into()),
                config.lr
            );
            break;
        }
        let norm = grads
            .iter()
            .map(|g| g.sqr()?.sum_all()?.to_scalar::<f32>().map(f64::from))
            .sum::<candle_core::Result<f64>>()?
            .sqrt();
        if config.max_grad_norm > 0.0 && norm > config.max_grad_norm {
            let scale = config.max_grad_norm / (norm + 1e-6);
            grads = grads
                .iter()
                .map(|g| g * scale)
                .collect::<candle_core::Result<_>>()?;
        }
        let lr = learning_rate(config, step, total_steps);
        optimizer.step(&vars, &grads, lr)?;
        step += 1;
        tokens_seen += tokens;
        let elapsed = began.elapsed().as_secs_f64();
        let mut metrics = StepMetrics {
            step,
            loss: loss_sum,
            lr,
            grad_norm: norm,
            tokens,
            tokens_per_s: tokens_seen as f64 / elapsed.max(1e-9),
            elapsed_s: elapsed,
            eval_loss: None,
        };
        if step == total_steps || (config.eval_every > 0 && step % config.eval_every == 0) {
            metrics.eval_loss = eval_loss(&engine, &eval, config.batch_size)?;
            last_eval = metrics.eval_loss.or(last_eval);
        }
        writeln!(metrics_file, "{}", serde_json::to_string(&metrics)?)?;
        metrics_file.flush()?;
        tracker.log_metrics(step, &metrics)?;
        let done_here = step - start;
        let eta = elapsed / done_here as f64 * (total_steps - step) as f64;
        observer(Event::Step {
            metrics: &metrics,
            total_steps,
            eta_s: eta,
        });
        last = Some(metrics);
        if step == total_steps || step % config.checkpoint_every.max(1) == 0 {
            let path = save_checkpoint(
                &mut engine,
                &optimizer,
                &vars,
                &run_dir,
                step,
                total_steps,
                config.keep_checkpoints,
            )?;
            observer(Event::Checkpoint { step, path: &path });
        }
    }
    if status == RunStatus::Interrupted
        && step > start
        && checkpoints(&run_dir).last().map(|c| c.0) != Some(step)
    {
        let path = save_checkpoint(
            &mut engine,
            &optimizer,
            &vars,
            &run_dir,
            step,
            total_steps,
            config.keep_checkpoints,
        )?;
        observer(Event::Checkpoint { step, path: &path });
    }
    let mut adapter = None;
    let mut merged = None;
    if status == RunStatus::Finished {
        let dir = run_dir.join("adapter");
        engine.save_adapter(&dir)?;
        tracker.log_artifact(&dir)?;
        adapter = Some(dir);
        if config.merge {
            let dir = run_dir.join("merged");
            engine.save_merged(&dir)?;
            tracker.log_artifact(&dir)?;
            merged = Some(dir);
        }
        message = format!("finished {total_steps} steps");
    } else if status == RunStatus::Interrupted {
        message = format!(
            "interrupted after step {step} of {total_steps}; checkpoint saved, continue with resume = true (--resume)"
        );
    }
    tracker.finish(status)?;
    let report = RunReport {
        tokens_per_s: last.as_ref().map(|m| m.tokens_per_s).unwrap_or(0.0),
        final_loss: last.as_ref().map(|m| m.loss),
        eval_loss: last_eval,
        run_dir: run_dir.clone(),
        status,
        steps_done: step,
        total_steps,
        adapter,
        merged,
        peak_rss_mib: peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
        message,
    };
    let report_json = serde_json::to_string_pretty(&report)?;
    write_atomically(&run_dir.join("report.json"), |tmp| {
        std::fs::write(tmp, &report_json).map_err(Into::into)
    })?;
    Ok(report)
}

fn save_checkpoint(
    engine: &mut Engine,
    optimizer: &AdamW,
    vars: &[(String, Var)],
    run_dir: &Path,
    step: usize,
    total_steps: usize,
    keep: usize,
) -> Result<PathBuf> {
    let path = run_dir.join("checkpoints").join(format!("step-{step:06}"));
    std::fs::create_dir_all(&path)?;
    engine.save_adapter(&path)?;
    optimizer.save(vars, &path.join("optimizer.safetensors"))?;
    let state = serde_json::to_string(&CheckpointState {
        step,
        total_steps,
        optimizer_t: optimizer.t,
    })?;
    write_atomically(&path.join("state.json"), |tmp| {
        std::fs::write(tmp, &state).map_err(Into::into)
    })?;
    let all = checkpoints(run_dir);
    if all.len() > keep {
        for (_, old) in &all[..all.len() - keep] {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_transformers() {
        let config = TrainConfig {
            lr: 1.0,
            warmup_steps: 10,
            ..TrainConfig::default()
        };
        assert_eq!(learning_rate(&config, 0, 110), 0.0);
        assert_eq!(learning_rate(&config, 5, 110), 0.5);
        assert_eq!(learning_rate(&config, 10, 110), 1.0);
        assert!((learning_rate(&config, 60, 110) - 0.5).abs() < 1e-12);
        let linear = TrainConfig {
            schedule: Schedule::Linear,
            ..config
        };
        assert!((learning_rate(&linear, 60, 110) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn batches_cover_every_example_once_per_epoch() {
        let config = TrainConfig {
            batch_size: 2,
            grad_accum: 2,
            ..TrainConfig::default()
        };
        let batches = Batches::new(8, &config);
        let mut seen: Vec<usize> = (0..2)
            .flat_map(|s| batches.micro_batches(s))
            .flatten()
            .collect();
        seen.sort();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
        assert_eq!(
            batches.micro_batches(3),
            Batches::new(8, &config).micro_batches(3)
        );
    }

    #[test]
    fn toml_config_rejects_unknown_keys() {
        let err = TrainConfig::from_toml("modle = 'smollm2'").unwrap_err();
        assert!(err.to_string().contains("modle"), "{err}");
        let ok = TrainConfig::from_toml("data = 'x.jsonl'\nsteps = 10\ntargets = ['q', 'k', 'v']")
            .unwrap();
        assert_eq!(ok.steps, Some(10));
        assert_eq!(ok.lora().unwrap().targets.len(), 3);
    }
}
