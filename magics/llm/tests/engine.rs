//! The engine on tiny random models: cache, training ops, adapters, merging, and a
//! fine-tune that must learn a completion exactly.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use ferrolab_llm::generate::Sampling;
use ferrolab_llm::lora::LoraConfig;
use ferrolab_llm::model::{KvCache, Mode};
use ferrolab_llm::tracker::{LocalOnly, RunStatus};
use ferrolab_llm::train::{self, TrainConfig};
use ferrolab_llm::{tiny, Engine};
use std::path::Path;

fn tiny_engine(dir: &Path, seed: u64) -> Result<Engine> {
    tiny::write(dir, seed)?;
    Engine::load(dir.to_str().unwrap_or_default(), &Device::Cpu, DType::F32)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn batched_decoding_matches_one_sequence_at_a_time() -> Result<()> {
    // Three sequences of different lengths, decoded together, must give each the
    // logits it gets alone: the server's continuous batching relies on it.
    let dir = tempfile::tempdir()?;
    let engine = tiny_engine(dir.path(), 5)?;
    let prompts = ["a", "a longer prompt", "mid size"];
    let mut caches = Vec::new();
    let mut alone = Vec::new();
    for prompt in prompts {
        let ids = engine.tokenizer.encode(prompt)?;
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let mut cache = KvCache::default();
        engine.model.forward_last(&input, &mut cache)?;
        let mut solo = cache.clone();
        let next = Tensor::new(&[7u32], &Device::Cpu)?.unsqueeze(0)?;
        alone.push(engine.model.forward_last(&next, &mut solo)?.squeeze(0)?);
        caches.push(cache);
    }
    let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
    let batched = engine.model.decode_batch(&[7, 7, 7], &mut refs)?;
    for (i, solo) in alone.iter().enumerate() {
        let diff = max_abs_diff(&batched.get(i)?, solo)?;
        assert!(diff < 1e-4, "sequence {i}: {diff}");
    }
    // The caches grew by one position each, so the next step continues them.
    let lengths: Vec<usize> = caches.iter().map(|c| c.len()).collect();
    let expected: Vec<usize> = prompts
        .iter()
        .map(|p| Ok(engine.tokenizer.encode(p)?.len() + 1))
        .collect::<Result<_>>()?;
    assert_eq!(lengths, expected);
    Ok(())
}

#[test]
fn q4_1_weights_decode_from_their_4bit_blocks() -> Result<()> {
    // A model whose projections are Q4_1 values, as a Q4_1 GGUF file loads: each
    // takes the 4-bit layout, the embedding (LM head) int8; the logits move only
    // by the rounding of the activations.
    let dir = tempfile::tempdir()?;
    tiny::write(dir.path(), 11)?;
    let file = dir.path().join("model.safetensors");
    let mut weights = candle_core::safetensors::load(&file, &Device::Cpu)?;
    for (name, tensor) in weights.iter_mut() {
        if name.ends_with("_proj.weight") {
            let values = ferrolab_llm::q4::round_trip(&tensor.flatten_all()?.to_vec1::<f32>()?);
            *tensor = Tensor::from_vec(values, tensor.dims(), &Device::Cpu)?;
        }
    }
    candle_core::safetensors::save(&weights, &file)?;
    let engine = Engine::load(
        dir.path().to_str().unwrap_or_default(),
        &Device::Cpu,
        DType::F32,
    )?;
    let mut quantized = engine.clone();
    let layers = tiny::config().num_hidden_layers;
    assert_eq!(
        quantized.quantize_for_decoding()?,
        format!("q4_1 ×{}, q8_0 ×1", 7 * layers)
    );
    let (err, scale) = logits_error(&engine, &quantized, "four-bit weights")?;
    assert!(err / scale < 0.05, "{err} of {scale}");
    assert!(err > 0.0, "the quantized path was not taken");
    Ok(())
}

/// The largest difference between the two engines' last-position logits for
/// `prompt`, and the largest exact logit.
fn logits_error(exact: &Engine, approx: &Engine, prompt: &str) -> Result<(f32, f32)> {
    let ids = exact.tokenizer.encode(prompt)?;
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let expected = exact.model.forward_last(&input, &mut KvCache::default())?;
    let got = approx.model.forward_last(&input, &mut KvCache::default())?;
    let scale = expected.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok((max_abs_diff(&expected, &got)?, scale))
}

#[test]
fn int8_decoding_stays_close_to_f32() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = tiny_engine(dir.path(), 9)?;
    let mut quantized = engine.clone();
    // Random f32 weights are not Q4_1 values: every matrix takes int8.
    let layouts = quantized.quantize_for_decoding()?;
    assert!(
        layouts.starts_with("q8_0 ×") && !layouts.contains(','),
        "{layouts}"
    );
    let (err, scale) = logits_error(&engine, &quantized, "int8 weights")?;
    assert!(err / scale < 0.05, "{err} of {scale}");
    assert!(err > 0.0, "the int8 path was not taken");
    // The clone shares the int8 weights; the original engine is untouched.
    assert_eq!(logits_error(&engine, &engine, "int8 weights")?.0, 0.0);
    Ok(())
}

#[test]
fn cached_generation_matches_full_recomputation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = tiny_engine(dir.path(), 1)?;
    let ids = engine.tokenizer.encode("hello cache")?;
    let all = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let full = engine.model.forward_last(&all, &mut KvCache::default())?;
    // The same sequence fed in two parts through the cache.
    let mut cache = KvCache::default();
    let split = ids.len() - 3;
    engine
        .model
        .forward_last(&all.narrow(1, 0, split)?, &mut cache)?;
    let mut last = None;
    for i in split..ids.len() {
        last = Some(
            engine
                .model
                .forward_last(&all.narrow(1, i, 1)?, &mut cache)?,
        );
    }
    let last = last.expect("at least one step");
    assert!(max_abs_diff(&full, &last)? < 1e-5);
    Ok(())
}

#[test]
fn training_ops_agree_with_the_fused_inference_kernels() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let engine = tiny_engine(dir.path(), 2)?;
    let ids = engine
        .tokenizer
        .encode("<|im_start|>user\nsame numbers?<|im_end|>")?;
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let infer = engine
        .model
        .hidden(&input, &mut KvCache::default(), &mut Mode::Infer)?;
    let mut no_dropout = |_: &[usize]| -> Result<Option<Tensor>> { Ok(None) };
    let train = engine.model.hidden(
        &input,
        &mut KvCache::default(),
        &mut Mode::Train {
            dropout: &mut no_dropout,
        },
    )?;
    assert!(max_abs_diff(&infer, &train)? < 1e-4);
    Ok(())
}

#[test]
fn adapters_round_trip_and_merge_into_the_same_model() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut engine = tiny_engine(&dir.path().join("base"), 3)?;
    let config = LoraConfig {
        targets: ferrolab_llm::lora::Target::ALL.to_vec(),
        ..LoraConfig::default()
    };
    engine.attach_lora(&config, 5)?;
    // B starts at zero; give it values so the adapter changes the output.
    for (i, (name, var)) in engine.lora_vars().into_iter().enumerate() {
        if name.contains("lora_B") {
            let noise = Tensor::randn(0f32, 0.05, var.dims(), &Device::Cpu)?;
            var.set(&(noise * (1.0 + i as f64 / 100.0))?)?;
        }
    }
    let ids = engine.tokenizer.encode("adapter")?;
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let adapted = engine.model.forward_last(&input, &mut KvCache::default())?;
    let adapter_dir = dir.path().join("adapter");
    engine.save_adapter(&adapter_dir)?;
    let merged_dir = dir.path().join("merged");
    engine.save_merged(&merged_dir)?;

    let config_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        adapter_dir.join("adapter_config.json"),
    )?)?;
    assert_eq!(config_json["peft_type"], "LORA");
    assert_eq!(config_json["r"], 8);
    let tensors = candle_core::safetensors::load(
        adapter_dir.join("adapter_model.safetensors"),
        &Device::Cpu,
    )?;
    assert!(tensors.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    assert!(tensors.contains_key("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    assert_eq!(tensors.len(), 2 * 7 * 2);

    let mut fresh = Engine::load(
        dir.path().join("base").to_str().unwrap_or_default(),
        &Device::Cpu,
        DType::F32,
    )?;
    let base = fresh.model.forward_last(&input, &mut KvCache::default())?;
    assert!(
        max_abs_diff(&base, &adapted)? > 1e-3,
        "the adapter must change the logits"
    );
    fresh.load_adapter(&adapter_dir)?;
    let reloaded = fresh.model.forward_last(&input, &mut KvCache::default())?;
    assert!(max_abs_diff(&reloaded, &adapted)? < 1e-6);

    let merged = Engine::load(
        merged_dir.to_str().unwrap_or_default(),
        &Device::Cpu,
        DType::F32,
    )?;
    let from_merged = merged.model.forward_last(&input, &mut KvCache::default())?;
    assert!(max_abs_diff(&from_merged, &adapted)? < 1e-4);
    Ok(())
}

#[test]
fn a_tiny_model_learns_a_completion_exactly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("tiny");
    tiny::write(&model, 4)?;
    let data = dir.path().join("train.jsonl");
    let lines: Vec<String> = (0..8)
        .map(|_| {
            r#"{"prompt": "Q: the secret word?\nA:", "completion": " ferrolab rocks"}"#.to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n"))?;
    let config = TrainConfig {
        model: model.display().to_string(),
        data: Some(data),
        output: Some(dir.path().join("run")),
        steps: Some(300),
        lr: 1e-2,
        r: 16,
        alpha: 32.0,
        targets: ["q", "k", "v", "o", "gate", "up", "down"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        batch_size: 4,
        eval_fraction: 0.0,
        checkpoint_every: 100,
        device: "cpu".into(),
        ..TrainConfig::default()
    };
    let report = train::run(&config, None, &mut LocalOnly, &mut |_| {}, &|| false)?;
    assert_eq!(report.status, RunStatus::Finished);
    assert_eq!(report.steps_done, 300);
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.path().join("run/metrics.jsonl"))?
            .lines()
            .next()
            .unwrap_or("{}"),
    )?;
    let final_loss = report.final_loss.unwrap_or(f64::NAN);
    assert!(
        final_loss < first["loss"].as_f64().unwrap_or(0.0) / 10.0,
        "loss went from {} to {final_loss}",
        first["loss"]
    );

    let mut engine = Engine::load(model.to_str().unwrap_or_default(), &Device::Cpu, DType::F32)?;
    let before = engine.generate("Q: the secret word?\nA:", &Sampling::greedy(20), |_| {})?;
    assert_ne!(before.text, " ferrolab rocks");
    engine.load_adapter(&report.adapter.expect("adapter saved"))?;
    let after = engine.generate("Q: the secret word?\nA:", &Sampling::greedy(20), |_| {})?;
    assert_eq!(after.text, " ferrolab rocks");
    assert_eq!(
        after.finish_reason,
        ferrolab_llm::generate::FinishReason::Stop
    );
    Ok(())
}

#[test]
fn bad_inputs_get_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let err = Engine::load(
        dir.path().join("missing.gguf").to_str().unwrap_or_default(),
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .expect("a missing model fails");
    assert!(err.to_string().contains("not found"), "{err}");

    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF\x03\x00\x00\x00garbage")?;
    let err = Engine::load(
        corrupt.to_str().unwrap_or_default(),
        &Device::Cpu,
        DType::F32,
    )
    .err()
    .expect("corrupt");
    assert!(
        format!("{err:#}").contains("not a readable GGUF file"),
        "{err:#}"
    );

    let other = dir.path().join("gpt2");
    std::fs::create_dir_all(&other)?;
    std::fs::write(
        other.join("config.json"),
        r#"{"model_type": "gpt2", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}"#,
    )?;
    let err = Engine::load(other.to_str().unwrap_or_default(), &Device::Cpu, DType::F32)
        .err()
        .expect("gpt2");
    assert!(
        format!("{err:#}").contains("architecture 'gpt2' is not supported"),
        "{err:#}"
    );

    let data = dir.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"c\"}\n",
    )?;
    let err = ferrolab_llm::data::read_jsonl(&data).expect_err("bad line");
    assert!(format!("{err:#}").contains("line 3 of"), "{err:#}");
    assert!(
        format!("{err:#}").contains("missing field 'completion'"),
        "{err:#}"
    );
    Ok(())
}
