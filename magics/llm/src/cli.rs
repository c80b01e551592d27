//! `ferrolab model ...`: find a model and run it from the terminal.

use crate::generate::Sampling;
use crate::tokenizer::Message;
use crate::tracker::{RunStatus, Tracking};
use crate::train::{self, Event, TrainConfig};
use crate::{device, load, Engine};
use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Print the path of a model (`smollm2`, a .gguf file or a model folder).
    Path {
        /// The model name or path.
        model: String,
    },
    /// Generate a continuation of a prompt, streamed to stdout.
    Generate(GenerateArgs),
    /// Write a tiny random model (a Hugging Face folder) for tests and experiments.
    Tiny {
        /// The folder to write.
        dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Args)]
pub struct FinetuneArgs {
    /// The run's TOML config (the keys of `%%finetune`).
    pub config: PathBuf,
    /// Continue from the last checkpoint of the run folder.
    #[arg(long)]
    pub resume: bool,
    /// Override the number of steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the run folder.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// `ferrolab finetune CONFIG.toml`: a run with a progress bar on stderr. `stop` is
/// polled between steps (Ctrl-C).
pub fn finetune(args: FinetuneArgs, stop: &dyn Fn() -> bool, tracking: &Tracking) -> Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let mut config = TrainConfig::from_toml(&text)?;
    // Relative paths in the file are relative to the file.
    let base = args
        .config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for path in [&mut config.data, &mut config.eval_data, &mut config.output]
        .into_iter()
        .flatten()
    {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    }
    if config.output.is_none() {
        config.output = Some(base.join(config.run_dir()));
    }
    config.resume |= args.resume;
    if let Some(steps) = args.steps {
        config.steps = Some(steps);
    }
    if let Some(output) = args.output {
        config.output = Some(output);
    }
    let mut stderr = std::io::stderr();
    let mut total = 0;
    let mut observer = |event: Event| match event {
        Event::Started {
            run_dir,
            total_steps,
            resumed_from,
            train_examples,
            eval_examples,
            device,
        } => {
            total = total_steps;
            let _ =
                writeln!(
                stderr,
                "run {} · {train_examples} training / {eval_examples} eval examples · {device}{}",
                run_dir.display(),
                resumed_from.map(|s| format!(" · resuming after step {s}")).unwrap_or_default()
            );
        }
        Event::Step { metrics, eta_s, .. } => {
            let _ = write!(
                stderr,
                "\rstep {}/{} {} loss {:.4}{} · {:.1} tokens/s · ETA {:.0}s   ",
                metrics.step,
                total,
                train::progress_bar(metrics.step, total),
                metrics.loss,
                metrics
                    .eval_loss
                    .map(|e| format!(" eval {e:.4}"))
                    .unwrap_or_default(),
                metrics.tokens_per_s,
                eta_s
            );
            let _ = stderr.flush();
        }
        Event::Checkpoint { .. } => {}
        Event::Note(note) => {
            let _ = writeln!(stderr, "\n{note}");
        }
    };
    let mut tracker = tracking.tracker("finetune", None);
    let report = train::run(&config, None, &mut *tracker, &mut observer, stop)?;
    eprintln!();
    println!("{}", serde_json::to_string_pretty(&report)?);
    match report.status {
        RunStatus::Finished => Ok(()),
        _ => anyhow::bail!("{}", report.message),
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    /// The model name or path.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
    /// A PEFT LoRA adapter folder to apply.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The prompt.
    pub prompt: String,
    /// Treat the prompt as a user message and apply the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, or q8: decode with quantized copies of the weights on the CPU (the
    /// file's 4-bit blocks where it has them, int8 otherwise), as `ferrolab serve`
    /// does by default.
    #[arg(long, default_value = "f32")]
    pub weights: String,
    /// Print one JSON object: prompt and completion token ids, text, finish reason,
    /// and the logits of the prompt's last position.
    #[arg(long)]
    pub json: bool,
}

/// `ferrolab gpu [--json]`.
pub fn gpu(json: bool) -> Result<()> {
    let report = crate::gpu::report();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.text());
    }
    Ok(())
}

pub fn run(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Path { model } => {
            println!("{}", load::resolve(&model)?.display());
            Ok(())
        }
        ModelCommand::Generate(args) => generate(args),
        ModelCommand::Tiny { dir, seed } => {
            crate::tiny::write(&dir, seed)?;
            println!("{}", dir.display());
            Ok(())
        }
    }
}

fn generate(args: GenerateArgs) -> Result<()> {
    let device = device(&args.device)?;
    let mut engine = Engine::load(&args.model, &device, DType::F32)?;
    match args.weights.as_str() {
        "f32" => {}
        "q8" => {
            engine.quantize_for_decoding()?;
        }
        other => anyhow::bail!("--weights takes f32 or q8, not '{other}'"),
    }
    if let Some(adapter) = &args.adapter {
        engine.load_adapter(adapter)?;
    }
    let prompt = if args.chat {
        engine.chat_prompt(&[Message::new("user", &args.prompt)])?
    } else {
        args.prompt.clone()
    };
    let sampling = Sampling {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        stop: args.stop.clone(),
    };
    if args.json {
        let ids = engine.tokenizer.encode(&prompt)?;
        let input = Tensor::new(ids.as_slice(), &device)?.unsqueeze(0)?;
        let logits: Vec<f32> = engine
            .model
            .forward_last(&input, &mut Default::default())?
            .squeeze(0)?
            .to_vec1()?;
        let generation = engine.generate(&prompt, &sampling, |_| {})?;
        let out = serde_json::json!({
            "prompt": prompt,
            "prompt_ids": ids,
            "completion_ids": generation.completion_tokens,
            "text": generation.text,
            "finish_reason": generation.finish_reason,
            "last_logits": logits,
        });
        println!("{out}");
    } else {
        let mut stdout = std::io::stdout();
        engine.generate(&prompt, &sampling, |piece| {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        })?;
        println!();
    }
    Ok(())
}
