//! Tiny random models for tests: a Llama-shaped decoder of a few thousand parameters
//! with a byte-level tokenizer (one token per byte, ChatML special tokens), written as
//! a Hugging Face folder that ferrolab and transformers both load.

use crate::config::Config;
use crate::tokenizer::byte_alphabet;
use anyhow::{anyhow, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, Tokenizer};

pub const SPECIAL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

pub fn config() -> Config {
    Config {
        architecture: "llama".into(),
        vocab_size: 256 + SPECIAL.len(),
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 256,
        tie_word_embeddings: true,
        attention_bias: false,
    }
}

/// Writes a tiny random model into `dir`: projections drawn from N(0, 0.02²),
/// embeddings from N(0, 1), with `seed`.
pub fn write(dir: &Path, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = config();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 0.02).map_err(|e| anyhow!("{e}"))?;
    let mut random = |shape: (usize, usize)| -> Result<Tensor> {
        let data: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| normal.sample(&mut rng))
            .collect();
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    };
    let h = config.hidden_size;
    let kv = config.num_key_value_heads * config.head_dim();
    let ones = Tensor::ones(h, DType::F32, &Device::Cpu)?;
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    // Tied embeddings of N(0, 1), as torch's nn.Embedding starts: at 0.02 the final
    // RMSNorm would cap every logit near ±0.6 and little could be learned.
    let embed = (random((config.vocab_size, h))? * 50.0)?;
    weights.insert("model.embed_tokens.weight".into(), embed);
    weights.insert("model.norm.weight".into(), ones.clone());
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        weights.insert(format!("{p}.input_layernorm.weight"), ones.clone());
        weights.insert(format!("{p}.post_attention_layernorm.weight"), ones.clone());
        weights.insert(format!("{p}.self_attn.q_proj.weight"), random((h, h))?);
        weights.insert(format!("{p}.self_attn.k_proj.weight"), random((kv, h))?);
        weights.insert(format!("{p}.self_attn.v_proj.weight"), random((kv, h))?);
        weights.insert(format!("{p}.self_attn.o_proj.weight"), random((h, h))?);
        weights.insert(
            format!("{p}.mlp.gate_proj.weight"),
            random((config.intermediate_size, h))?,
        );
        weights.insert(
            format!("{p}.mlp.up_proj.weight"),
            random((config.intermediate_size, h))?,
        );
        weights.insert(
            format!("{p}.mlp.down_proj.weight"),
            random((h, config.intermediate_size))?,
        );
    }
    candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config.to_hf_json())?,
    )?;

    let alphabet = byte_alphabet();
    let vocab: tokenizers::models::bpe::Vocab = alphabet
        .iter()
        .enumerate()
        .map(|(b, c)| (c.to_string(), b as u32))
        .chain(
            SPECIAL
                .iter()
                .enumerate()
                .map(|(i, s)| (s.to_string(), 256 + i as u32)),
        )
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, Vec::new())
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(
        tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true),
    ));
    tokenizer.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    tokenizer
        .add_special_tokens(
            SPECIAL
                .iter()
                .map(|s| AddedToken::from(*s, true))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| anyhow!("{e}"))?;
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow!("{e}"))?;
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": false,
        "chat_template": CHATML,
    });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tokenizer_config)?,
    )?;
    Ok(())
}
