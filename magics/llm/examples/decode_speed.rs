//! Single-stream decoding speed of a model in each weight layout, through the
//! server's decode step (`Model::decode_batch`), greedy:
//! `cargo run -p ferrolab-llm --example decode_speed -- MODEL [TOKENS [LAYOUT]]`.
//! Prints tokens/s for the f32 weights, int8 copies of all of them, and the default
//! choice (the file's 4-bit blocks where it has them, int8 otherwise).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use ferrolab_llm::model::{DecodeWeights, KvCache};
use ferrolab_llm::Engine;
use std::time::Instant;

fn main() -> Result<()> {
    // As `ferrolab serve` does: candle reads /proc/cpuinfo per op without it.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var(
            "RAYON_NUM_THREADS",
            candle_core::utils::get_num_threads().to_string(),
        );
    }
    let mut args = std::env::args().skip(1);
    let model = args.next().context("usage: decode_speed MODEL [TOKENS]")?;
    let tokens: usize = match args.next() {
        Some(n) => n.parse().context("TOKENS is a number")?,
        None => 128,
    };
    let only = args.next();
    let base = Engine::load(&model, &Device::Cpu, DType::F32)?;
    let int8 = |w: &[f32], r: usize, c: usize| {
        ferrolab_llm::q8::Q8Matrix::from_rows(w, r, c).map(DecodeWeights::Q8)
    };
    let pool = rayon::ThreadPoolBuilder::new().build()?;
    for layout in ["f32", "int8", "default"] {
        if only.as_deref().is_some_and(|o| o != layout) {
            continue;
        }
        let mut engine = base.clone();
        let layouts = match layout {
            "int8" => engine.model.quantize_for_decoding_with(int8)?,
            "default" => engine.model.quantize_for_decoding()?,
            _ => Vec::new(),
        };
        // Twice: the first run warms the caches and the allocator.
        for round in 0..2 {
            let (rate, text) = pool.install(|| decode(&engine, tokens))?;
            if round == 1 {
                println!("{layout:8} {rate:6.1} tokens/s  {layouts:?}  {text:?}");
            }
        }
    }
    Ok(())
}

fn decode(engine: &Engine, tokens: usize) -> Result<(f64, String)> {
    let prompt = engine.tokenizer.encode("Once upon a time")?;
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let mut cache = KvCache::default();
    let logits = engine.model.forward_last(&input, &mut cache)?;
    let mut next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
    let mut out = vec![next];
    let start = Instant::now();
    for _ in 1..tokens {
        let logits = engine.model.decode_batch(&[next], &mut [&mut cache])?;
        next = logits.get(0)?.argmax(0)?.to_scalar::<u32>()?;
        out.push(next);
    }
    let rate = (tokens - 1) as f64 / start.elapsed().as_secs_f64();
    let text: String = engine
        .tokenizer
        .decode(&out, true)?
        .chars()
        .take(40)
        .collect();
    Ok((rate, text))
}
