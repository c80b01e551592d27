//! The shape of a Llama-family decoder, read from a GGUF file's metadata or from a
//! Hugging Face `config.json`.

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Architectures this engine runs. Qwen2 is Llama with q/k/v biases.
pub const SUPPORTED: &[&str] = &["llama", "mistral", "qwen2"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// `llama`, `mistral` or `qwen2`.
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections (Qwen2).
    pub attention_bias: bool,
}

impl Config {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the numbers agree with each other, so a broken file fails here with a
    /// clear message instead of as a shape error deep inside a forward pass.
    pub fn validate(&self) -> Result<()> {
        if !SUPPORTED.contains(&self.architecture.as_str()) {
            bail!(
                "architecture '{}' is not supported; ferrolab runs Llama-family decoders: {}",
                self.architecture,
                SUPPORTED.join(", ")
            );
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            bail!("model config has {name} = 0");
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            bail!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!(
                "head dimension {} is odd; rotary embeddings need it even",
                self.head_dim()
            );
        }
        Ok(())
    }

    /// From GGUF metadata (`{arch}.block_count`, `{arch}.embedding_length`, …).
    pub fn from_gguf(metadata: &HashMap<String, gguf_file::Value>) -> Result<Self> {
        let architecture = metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .context("the GGUF file has no general.architecture")?
            .clone();
        if !SUPPORTED.contains(&architecture.as_str()) {
            bail!(
                "architecture '{architecture}' is not supported; ferrolab runs Llama-family decoders: {}",
                SUPPORTED.join(", ")
            );
        }
        let get = |key: &str| -> Result<&gguf_file::Value> {
            metadata
                .get(&format!("{architecture}.{key}"))
                .with_context(|| format!("the GGUF file has no {architecture}.{key}"))
        };
        let int = |key: &str| -> Result<usize> {
            let v = get(key)?;
            v.to_u32()
                .map(|v| v as usize)
                .or_else(|_| v.to_u64().map(|v| v as usize))
                .or_else(|_| v.to_i32().map(|v| v.max(0) as usize))
                .with_context(|| format!("{architecture}.{key} is not an integer"))
        };
        let float = |key: &str, default: f64| -> f64 {
            get(key)
                .ok()
                .and_then(|v| v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok())
                .unwrap_or(default)
        };
        let num_attention_heads = int("attention.head_count")?;
        let vocab_size = match int("vocab_size") {
            Ok(n) => n,
            Err(_) => metadata
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.to_vec().ok())
                .map(|v| v.len())
                .context("the GGUF file gives neither a vocab_size nor a token list")?,
        };
        let config = Config {
            attention_bias: architecture == "qwen2",
            architecture: architecture.clone(),
            vocab_size,
            hidden_size: int("embedding_length")?,
            intermediate_size: int("feed_forward_length")?,
            num_hidden_layers: int("block_count")?,
            num_attention_heads,
            num_key_value_heads: int("attention.head_count_kv").unwrap_or(num_attention_heads),
            rope_theta: float("rope.freq_base", 10_000.0),
            rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
            max_position_embeddings: int("context_length").unwrap_or(2048),
            // Decided by the presence of `output.weight` once tensors are listed.
            tie_word_embeddings: true,
        };
        Ok(config)
    }

    /// From a Hugging Face `config.json`.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Hf {
            model_type: Option<String>,
            architectures: Option<Vec<String>>,
            vocab_size: usize,
            hidden_size: usize,
            intermediate_size: usize,
            num_hidden_layers: usize,
            num_attention_heads: usize,
            num_key_value_heads: Option<usize>,
            rope_theta: Option<f64>,
            rms_norm_eps: Option<f64>,
            max_position_embeddings: Option<usize>,
            tie_word_embeddings: Option<bool>,
            attention_bias: Option<bool>,
            head_dim: Option<usize>,
        }
        let hf: Hf = serde_json::from_str(text).context("config.json is not a model config")?;
        let architecture = match hf.model_type.as_deref() {
            Some(t) => t.to_string(),
            None => hf
                .architectures
                .as_ref()
                .and_then(|a| a.first())
                .map(|a| a.trim_end_matches("ForCausalLM").to_lowercase())
                .context("config.json names no model_type")?,
        };
        if let Some(head_dim) = hf.head_dim {
            if head_dim * hf.num_attention_heads != hf.hidden_size {
                bail!(
                    "config.json sets head_dim {head_dim} apart from hidden_size / num_attention_heads; \
                     ferrolab does not support that layout"
                );
            }
        }
        let config = Config {
            attention_bias: hf.attention_bias.unwrap_or(architecture == "qwen2"),
            architecture,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    /// The `config.json` transformers reads for this model.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let class = match self.architecture.as_str() {
            "qwen2" => "Qwen2ForCausalLM",
            "mistral" => "MistralForCausalLM",
            _ => "LlamaForCausalLM",
        };
        serde_json::json!({
            "architectures": [class],
            "model_type": self.architecture,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim(),
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        })
    }
}
