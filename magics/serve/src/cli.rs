//! `ferrolab serve` and `ferrolab feedback export`.

use crate::{dataset, default_model_name, log_path, store::Store, ServeConfig};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// `smollm2`, a .gguf file or a model folder.
    pub model: String,
    /// Serve a PEFT LoRA adapter as model NAME (repeatable).
    #[arg(long = "adapter", value_name = "NAME=DIR")]
    pub adapters: Vec<String>,
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: String,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Requests that may wait for a place; more get 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Require `Authorization: Bearer KEY` on /v1 routes (or set FERROLAB_API_KEY).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The largest max_tokens a request may ask for (default: the model's context).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// q8: decode with quantized copies of the weights (CPU; the file's own 4-bit
    /// blocks where it has them, int8 otherwise); f32: the weights as loaded.
    #[arg(long, default_value = "q8")]
    pub weights: String,
    /// The name requests use for the base model (default: from MODEL).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Names the request log: $FERROLAB_HOME/serve/NAME/requests.sqlite.
    #[arg(long)]
    pub name: Option<String>,
    /// The request log file (overrides --name's location).
    #[arg(long)]
    pub log: Option<PathBuf>,
}

/// `NAME=DIR` → (name, dir).
pub fn parse_adapter(spec: &str) -> Result<(String, PathBuf)> {
    match spec.split_once('=') {
        Some((name, dir)) if !name.trim().is_empty() && !dir.trim().is_empty() => {
            Ok((name.trim().to_string(), PathBuf::from(dir.trim())))
        }
        _ => {
            bail!("--adapter takes NAME=DIR (a model name and a PEFT adapter folder), got '{spec}'")
        }
    }
}

impl ServeArgs {
    pub fn config(&self) -> Result<ServeConfig> {
        let model_name = self.model_name.clone();
        let name = self.name.clone().unwrap_or_else(|| {
            model_name
                .clone()
                .unwrap_or_else(|| default_model_name(&self.model))
        });
        Ok(ServeConfig {
            model: self.model.clone(),
            model_name,
            adapters: self
                .adapters
                .iter()
                .map(|a| parse_adapter(a))
                .collect::<Result<_>>()?,
            bind: self.bind.clone(),
            max_batch: self.max_batch,
            max_queue: self.max_queue,
            api_key: self
                .api_key
                .clone()
                .or_else(|| std::env::var("FERROLAB_API_KEY").ok())
                .filter(|k| !k.is_empty()),
            max_tokens: self.max_tokens,
            device: self.device.clone(),
            weights: self.weights.clone(),
            name,
            log: self.log.clone(),
        })
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    // candle looks up its thread count on every CPU op, and without
    // RAYON_NUM_THREADS that reads /proc/cpuinfo (about 5% of a busy server's
    // time). Fix it once, to candle's own choice, before any thread starts.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var(
            "RAYON_NUM_THREADS",
            candle_core::utils::get_num_threads().to_string(),
        );
    }
    crate::run(&args.config()?)
}

#[derive(Subcommand, Debug)]
pub enum FeedbackCommand {
    /// Write well-rated completions as a JSONL dataset for fine-tuning.
    Export {
        /// The server's name (its request log), as given to --name or %serve.
        name: String,
        /// Keep completions whose mean score is at least this.
        #[arg(long, default_value_t = 1.0)]
        min_score: f64,
        #[arg(long)]
        out: PathBuf,
        /// Read this request log instead of the named server's.
        #[arg(long)]
        log: Option<PathBuf>,
    },
}

pub fn feedback(command: FeedbackCommand) -> Result<()> {
    match command {
        FeedbackCommand::Export {
            name,
            min_score,
            out,
            log,
        } => {
            let path = log.unwrap_or_else(|| log_path(&name));
            if !path.exists() {
                bail!(
                    "no request log for server '{name}' at {}; serve with --name {name} first",
                    path.display()
                );
            }
            let store = Store::open(&path)?;
            let done = dataset::export(&store, min_score, &out)?;
            println!(
                "{} completions with mean score >= {min_score} written to {} ({} chats)",
                done.rows,
                out.display(),
                done.chat_rows
            );
            Ok(())
        }
    }
}
