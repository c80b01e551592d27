//! The model engine: a Llama-family decoder on candle, its tokenizer and chat
//! template, generation with a KV cache, and LoRA adapters in PEFT's layout.
//!
//! ```no_run
//! use ferrolab_llm::{Engine, generate::Sampling, tokenizer::Message};
//! # fn main() -> anyhow::Result<()> {
//! let engine = Engine::load("smollm2", &candle_core::Device::Cpu, candle_core::DType::F32)?;
//! let prompt = engine.chat_prompt(&[Message::new("user", "What is the capital of France?")])?;
//! let answer = engine.generate(&prompt, &Sampling::greedy(32), |_| {})?;
//! println!("{}", answer.text);
//! # Ok(()) }
//! ```

pub mod cli;
pub mod config;
pub mod data;
pub mod generate;
pub mod gpu;
pub mod load;
pub mod lora;
pub mod loss;
pub mod magic;
pub mod matmul;
pub mod model;
pub mod ops;
pub mod q4;
pub mod q8;
pub mod tiny;
pub mod tokenizer;
pub mod tracker;
pub mod train;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use load::BaseModel;
use lora::LoraConfig;
use model::Model;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizer::{Message, TextTokenizer};

/// A model ready to run: decoder, tokenizer, and the LoRA adapter attached, if any.
/// Cloning shares the weights (candle tensors are reference-counted).
#[derive(Clone)]
pub struct Engine {
    pub model: Model,
    pub tokenizer: TextTokenizer,
    /// The file or folder the base model came from.
    pub source: PathBuf,
    /// The name the user gave (`smollm2`, a path).
    pub name: String,
    pub lora: Option<LoraConfig>,
}

impl Engine {
    /// Loads `model` (`smollm2`, a `.gguf` file, or a Hugging Face folder).
    pub fn load(model: &str, device: &Device, dtype: DType) -> Result<Self> {
        let path = load::resolve(model)?;
        let base = BaseModel::load(&path, device, dtype)?;
        let mut engine = Engine::from_base(base)?;
        engine.name = model.to_string();
        Ok(engine)
    }

    pub fn from_base(base: BaseModel) -> Result<Self> {
        let model = Model::new(&base.config, &base.weights)?;
        Ok(Engine {
            model,
            tokenizer: base.tokenizer,
            name: base.source.display().to_string(),
            source: base.source,
            lora: None,
        })
    }

    /// Decodes with quantized copies of the weights on the CPU: the file's 4-bit
    /// blocks where they hold the weights exactly, int8 otherwise (see
    /// [`Model::quantize_for_decoding`]); `ferrolab serve` does this by default.
    /// Returns a line saying how many matrices took each layout ("q4_1 ×210,
    /// q8_0 ×1"), empty where nothing was quantized (GPU, bf16).
    pub fn quantize_for_decoding(&mut self) -> Result<String> {
        let counts = self.model.quantize_for_decoding()?;
        Ok(counts
            .iter()
            .map(|(layout, n)| format!("{layout} ×{n}"))
            .collect::<Vec<_>>()
            .join(", "))
    }

    /// An embedding of `ids`: the final hidden states (after the last norm),
    /// mean-pooled over the positions.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            bail!("cannot embed an empty input");
        }
        let input = Tensor::new(ids, self.model.device())?.unsqueeze(0)?;
        let hidden = self.model.hidden(
            &input,
            &mut model::KvCache::default(),
            &mut model::Mode::Infer,
        )?;
        Ok(hidden
            .mean(1)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    }

    /// An embedding of `text` (see [`Engine::embed_ids`]).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>> {
        self.embed_ids(&self.tokenizer.encode(text)?)
    }

    /// The prompt text for a conversation, from the model's chat template, ending
    /// where the assistant's answer starts.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<String> {
        self.tokenizer.apply_chat_template(messages, true)
    }

    /// Attaches fresh, trainable LoRA pairs.
    pub fn attach_lora(&mut self, config: &LoraConfig, seed: u64) -> Result<Vec<String>> {
        config.validate()?;
        let modules = self.model.attach_lora(config, seed)?;
        self.lora = Some(config.clone());
        Ok(modules)
    }

    /// The trainable tensors by PEFT name, in a stable order.
    pub fn lora_vars(&mut self) -> Vec<(String, candle_core::Var)> {
        let mut vars = Vec::new();
        for (module, _, linear) in self.model.projections_mut() {
            if let Some(lora) = &linear.lora {
                let (a, b) = lora::peft_names(&module);
                vars.push((a, lora.a.clone()));
                vars.push((b, lora.b.clone()));
            }
        }
        vars
    }

    /// Writes the adapter in PEFT's layout into `dir`.
    pub fn save_adapter(&mut self, dir: &Path) -> Result<()> {
        let config = self.lora.clone().context("no LoRA adapter is attached")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tensors: HashMap<String, Tensor> = self
            .lora_vars()
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect();
        let weights = dir.join("adapter_model.safetensors");
        write_atomically(&weights, |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(Into::into)
        })?;
        let config_json = serde_json::to_string_pretty(&lora::peft_config(&config, &self.name))?;
        write_atomically(&dir.join("adapter_config.json"), |tmp| {
            std::fs::write(tmp, &config_json).map_err(Into::into)
        })?;
        Ok(())
    }

    /// Attaches the PEFT adapter saved in `dir`.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        let config = lora::read_peft_config(dir)?;
        self.attach_lora(&config, 0)?;
        self.load_adapter_weights(dir)
    }

    /// A second engine on the same base weights with the PEFT adapter in `dir`
    /// attached (this one is unchanged): how a server holds several adapters.
    pub fn with_adapter(&self, dir: &Path) -> Result<Engine> {
        if self.lora.is_some() {
            bail!("this engine already has an adapter; start from the base model");
        }
        let mut engine = self.clone();
        engine.load_adapter(dir)?;
        Ok(engine)
    }

    /// Sets the attached adapter's tensors from the PEFT adapter saved in `dir`.
    pub fn load_adapter_weights(&mut self, dir: &Path) -> Result<()> {
        let tensors = lora::read_peft_tensors(dir, self.model.device())?;
        let mut found = 0;
        for (name, var) in self.lora_vars() {
            let tensor = tensors.get(&name).with_context(|| {
                format!(
                    "{}: the adapter has no tensor {name}; it was trained for another model",
                    dir.display()
                )
            })?;
            if tensor.dims() != var.dims() {
                bail!(
                    "{}: tensor {name} has shape {:?}, this model needs {:?}; the adapter was trained for another model",
                    dir.display(),
                    tensor.dims(),
                    var.dims()
                );
            }
            var.set(&tensor.to_dtype(DType::F32)?)?;
            found += 1;
        }
        if found == 0 {
            bail!(
                "{}: the adapter matched no module of this model",
                dir.display()
            );
        }
        Ok(())
    }
}

impl Engine {
    /// Writes the base model with the adapter merged in, as a Hugging Face folder
    /// (`config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`).
    pub fn save_merged(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tensors = self.model.merged_weights()?;
        write_atomically(&dir.join("model.safetensors"), |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(Into::into)
        })?;
        let config = serde_json::to_string_pretty(&self.model.config.to_hf_json())?;
        std::fs::write(dir.join("config.json"), config)?;
        self.tokenizer.save(dir)?;
        Ok(())
    }
}

/// Picks a device: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when there is one).
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(device) = Device::new_cuda(0) {
                    return Ok(device);
                }
            }
            Ok(Device::Cpu)
        }
        _ => {
            let index = match name {
                "cuda" | "gpu" => 0,
                other => other
                    .strip_prefix("cuda:")
                    .and_then(|i| i.parse().ok())
                    .with_context(|| {
                        format!("unknown device '{other}'; use cpu, cuda, cuda:N or auto")
                    })?,
            };
            if !candle_core::utils::cuda_is_available() {
                bail!("device '{name}' asked for, but this build of ferrolab has no CUDA support (build with --features cuda); use --device cpu");
            }
            Device::new_cuda(index).with_context(|| format!("no CUDA device {index} found"))
        }
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    write(&tmp).with_context(|| format!("cannot write {}", path.display()))?;
    if let Ok(file) = std::fs::File::open(&tmp) {
        let _ = file.sync_all();
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
