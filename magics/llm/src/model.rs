//! The Llama-family decoder: RMSNorm, rotary embeddings, grouped-query attention,
//! SwiGLU, tied or untied embeddings, optional q/k/v biases (Qwen2), and LoRA on any
//! of its seven projections.
//!
//! One forward pass serves generation (with a KV cache, using candle's fused kernels)
//! and training (differentiable ops, dropout). Base weights are frozen: they are
//! plain tensors multiplied through [`frozen_matmul`], whose backward pass computes
//! the gradient for the activations only, so a LoRA step never pays for (or stores)
//! gradients of the 135M base parameters.

use crate::config::Config;
use crate::lora::{LoraConfig, LoraLayer, Target};
use crate::matmul::{frozen_matmul, matmul};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use std::collections::HashMap;

/// How a forward pass runs.
pub enum Mode<'a> {
    /// Generation and evaluation: fused kernels, no dropout.
    Infer,
    /// A batched decode step ([`Model::decode_batch`]): as `Infer`, and int8
    /// weights for any number of rows when the model has them.
    Decode,
    /// Training: differentiable ops; LoRA dropout draws from `dropout`.
    Train {
        dropout: &'a mut dyn FnMut(&[usize]) -> Result<Option<Tensor>>,
    },
}

impl Mode<'_> {
    fn training(&self) -> bool {
        matches!(self, Mode::Train { .. })
    }
}

/// A projection: frozen weight `[out, in]`, optional bias, optional LoRA pair.
#[derive(Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
    pub lora: Option<LoraLayer>,
    /// The weight in quantized blocks, for decoding on the CPU
    /// ([`Model::quantize_for_decoding`]).
    q8: Option<std::sync::Arc<DecodeWeights>>,
}

/// A frozen weight as decoding reads it.
pub enum DecodeWeights {
    /// The model file's own 4-bit blocks (`q4.rs`): the weights exactly.
    Q4_1(crate::q4::Q4Matrix),
    /// int8 blocks (`q8.rs`), for weights that are not Q4_1 values.
    Q8(crate::q8::Q8Matrix),
}

impl DecodeWeights {
    /// The Q4_1 layout when it holds `weights` exactly, else int8; `None` when the
    /// columns are not a multiple of 32 (f32 stays).
    pub fn new(weights: &[f32], rows: usize, cols: usize) -> Option<DecodeWeights> {
        crate::q4::Q4Matrix::from_rows(weights, rows, cols)
            .map(DecodeWeights::Q4_1)
            .or_else(|| crate::q8::Q8Matrix::from_rows(weights, rows, cols).map(DecodeWeights::Q8))
    }

    /// The matrix as the parallel driver sees it, whichever its layout.
    fn as_rows(&self) -> &dyn crate::q8::Rows {
        match self {
            DecodeWeights::Q4_1(q) => q,
            DecodeWeights::Q8(q) => q,
        }
    }

    pub fn rows(&self) -> usize {
        self.as_rows().rows()
    }

    pub fn cols(&self) -> usize {
        self.as_rows().cols()
    }

    /// `x` is `[n, cols]` row-major; returns `x · Wᵀ`, `[n, rows]`.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        Self::matmul_many(&[self], x, n).remove(0)
    }

    /// `x · Wᵀ` for several matrices of the same input width in one pass: the
    /// input is quantized once and the rows of all of them are shared out between
    /// the threads together (one hand-off instead of one per matrix). The results
    /// are those of [`DecodeWeights::matmul`] on each, bit for bit.
    pub fn matmul_many(parts: &[&DecodeWeights], x: &[f32], n: usize) -> Vec<Vec<f32>> {
        let Some(first) = parts.first() else {
            return Vec::new();
        };
        let x = crate::q8::Activations::new(x, n, first.cols());
        let parts: Vec<&dyn crate::q8::Rows> = parts.iter().map(|p| p.as_rows()).collect();
        crate::q8::par_products(&parts, &x)
    }

    /// The layout's name, as `ferrolab serve` reports it.
    pub fn layout(&self) -> &'static str {
        match self {
            DecodeWeights::Q4_1(_) => "q4_1",
            DecodeWeights::Q8(_) => "q8_0",
        }
    }
}

/// Prompts of at most this many tokens use the int8 weights; longer ones use f32
/// matrix products. Decode steps always use them, whatever the batch, so that a
/// sequence's tokens do not depend on which others share its steps.
pub const Q8_MAX_ROWS: usize = 32;

impl Linear {
    fn new(weight: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Linear {
            weight_t: weight.t()?,
            bias,
            lora: None,
            q8: None,
        })
    }

    pub fn weight(&self) -> Result<Tensor> {
        Ok(self.weight_t.t()?)
    }

    pub fn out_features(&self) -> usize {
        self.weight_t.dims()[1]
    }

    pub fn in_features(&self) -> usize {
        self.weight_t.dims()[0]
    }

    /// The quantized weights when `mode` and `x` (`[n, in]`) decode through them.
    fn quantized(&self, x: &Tensor, mode: &Mode) -> Result<Option<&DecodeWeights>> {
        Ok(match &self.q8 {
            Some(q)
                if matches!(mode, Mode::Decode)
                    || (matches!(mode, Mode::Infer) && x.dim(0)? <= Q8_MAX_ROWS) =>
            {
                Some(q)
            }
            _ => None,
        })
    }

    /// `x`: `[n, in]` → `[n, out]`.
    fn forward(&self, x: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let y = match self.quantized(x, mode)? {
            Some(q) => {
                let (n, _) = x.dims2()?;
                let data: Vec<f32> = x.flatten_all()?.to_vec1()?;
                Tensor::from_vec(q.matmul(&data, n), (n, q.rows()), x.device())?
            }
            None => frozen_matmul(x, &self.weight_t)?,
        };
        self.finish(x, y, mode)
    }

    /// Several projections of the same `x`, quantized ones in one pass
    /// ([`DecodeWeights::matmul_many`]); the same results as `forward` on each.
    fn forward_many<const N: usize>(
        parts: [&Linear; N],
        x: &Tensor,
        mode: &mut Mode,
    ) -> Result<[Tensor; N]> {
        let mut quantized = Vec::with_capacity(N);
        for part in parts {
            match part.quantized(x, mode)? {
                Some(q) => quantized.push(q),
                None => break,
            }
        }
        if quantized.len() < N {
            let mut out = Vec::with_capacity(N);
            for part in parts {
                out.push(part.forward(x, mode)?);
            }
            return out
                .try_into()
                .map_err(|_| anyhow::anyhow!("{N} projections"));
        }
        let (n, _) = x.dims2()?;
        let data: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let ys = DecodeWeights::matmul_many(&quantized, &data, n);
        let mut out = Vec::with_capacity(N);
        for ((part, q), y) in parts.iter().zip(&quantized).zip(ys) {
            let y = Tensor::from_vec(y, (n, q.rows()), x.device())?;
            out.push(part.finish(x, y, mode)?);
        }
        out.try_into()
            .map_err(|_| anyhow::anyhow!("{N} projections"))
    }

    /// Adds the bias and the LoRA delta to the frozen product `y` of `x`.
    fn finish(&self, x: &Tensor, mut y: Tensor, mode: &mut Mode) -> Result<Tensor> {
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        if let Some(lora) = &self.lora {
            let x = match mode {
                Mode::Train { dropout } if lora.dropout > 0.0 => match dropout(x.dims())? {
                    Some(mask) => x.broadcast_mul(&mask)?,
                    None => x.clone(),
                },
                _ => x.clone(),
            };
            y = (y + lora.delta(&x)?)?;
        }
        Ok(y)
    }
}

#[derive(Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

#[derive(Clone)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

#[derive(Clone)]
struct Block {
    input_norm: Tensor,
    attention: Attention,
    post_norm: Tensor,
    mlp: Mlp,
}

/// The keys and values of earlier positions, one pair per layer.
#[derive(Default, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dims()[2])
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone)]
pub struct Model {
    pub config: Config,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    /// `[positions, head_dim]`, both halves (training's differentiable rotary).
    cos: Tensor,
    sin: Tensor,
    /// `[positions, head_dim / 2]` (candle's fused rotary kernel).
    cos_half: Tensor,
    sin_half: Tensor,
    device: Device,
    dtype: DType,
}

impl Model {
    /// Builds the decoder from Hugging Face-named weights.
    pub fn new(config: &Config, weights: &HashMap<String, Tensor>) -> Result<Self> {
        let get = |name: &str| -> Result<Tensor> {
            weights
                .get(name)
                .cloned()
                .with_context(|| format!("missing tensor {name}"))
        };
        let embed = get("model.embed_tokens.weight")?;
        let device = embed.device().clone();
        let dtype = embed.dtype();
        let linear = |name: &str| -> Result<Linear> {
            Linear::new(
                &get(&format!("{name}.weight"))?,
                weights.get(&format!("{name}.bias")).cloned(),
            )
        };
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            blocks.push(Block {
                input_norm: get(&format!("{p}.input_layernorm.weight"))?,
                post_norm: get(&format!("{p}.post_attention_layernorm.weight"))?,
                attention: Attention {
                    q: linear(&format!("{p}.self_attn.q_proj"))?,
                    k: linear(&format!("{p}.self_attn.k_proj"))?,
                    v: linear(&format!("{p}.self_attn.v_proj"))?,
                    o: linear(&format!("{p}.self_attn.o_proj"))?,
                },
                mlp: Mlp {
                    gate: linear(&format!("{p}.mlp.gate_proj"))?,
                    up: linear(&format!("{p}.mlp.up_proj"))?,
                    down: linear(&format!("{p}.mlp.down_proj"))?,
                },
            });
        }
        let lm_head = if config.tie_word_embeddings {
            Linear::new(&embed, None)?
        } else {
            Linear::new(&get("lm_head.weight")?, None)?
        };
        let (cos, sin) = rope_tables(config, &device, dtype)?;
        let half = config.head_dim() / 2;
        let cos_half = cos.narrow(1, 0, half)?.contiguous()?;
        let sin_half = sin.narrow(1, 0, half)?.contiguous()?;
        Ok(Model {
            cos_half,
            sin_half,
            config: config.clone(),
            embed,
            blocks,
            norm: get("model.norm.weight")?,
            lm_head,
            cos,
            sin,
            device,
            dtype,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Keeps a quantized copy of every projection and of the LM head for decoding:
    /// the file's own 4-bit blocks where the weights are Q4_1 values (see `q4.rs`;
    /// no error added, about 6× less memory traffic per token than f32), int8 blocks
    /// otherwise (`q8.rs`; about 4× less, at an error of about 1e-3 relative on the
    /// logits). Training and long prompts still use the f32 weights. Only for f32
    /// models on the CPU; elsewhere it does nothing. Returns how many matrices took
    /// each layout.
    pub fn quantize_for_decoding(&mut self) -> Result<Vec<(&'static str, usize)>> {
        self.quantize_for_decoding_with(DecodeWeights::new)
    }

    /// [`Model::quantize_for_decoding`] with the layout of each `[rows, cols]`
    /// weight chosen by `choose` (benchmarks compare the layouts with it).
    pub fn quantize_for_decoding_with(
        &mut self,
        choose: impl Fn(&[f32], usize, usize) -> Option<DecodeWeights>,
    ) -> Result<Vec<(&'static str, usize)>> {
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        if !self.device.is_cpu() || self.dtype != DType::F32 {
            return Ok(counts);
        }
        let mut quantize = |linear: &mut Linear| -> Result<()> {
            let weight = linear.weight_t.t()?.contiguous()?;
            let (rows, cols) = weight.dims2()?;
            let data: Vec<f32> = weight.flatten_all()?.to_vec1()?;
            linear.q8 = choose(&data, rows, cols).map(std::sync::Arc::new);
            let layout = linear.q8.as_ref().map_or("f32", |q| q.layout());
            match counts.iter_mut().find(|(name, _)| *name == layout) {
                Some((_, n)) => *n += 1,
                None => counts.push((layout, 1)),
            }
            Ok(())
        };
        for block in &mut self.blocks {
            for linear in [
                &mut block.attention.q,
                &mut block.attention.k,
                &mut block.attention.v,
                &mut block.attention.o,
                &mut block.mlp.gate,
                &mut block.mlp.up,
                &mut block.mlp.down,
            ] {
                quantize(linear)?;
            }
        }
        quantize(&mut self.lm_head)?;
        Ok(counts)
    }

    /// Every projection a LoRA target names, with its PEFT module path.
    pub fn projections_mut(&mut self) -> Vec<(String, Target, &mut Linear)> {
        let mut out = Vec::new();
        for (i, block) in self.blocks.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &mut block.attention;
            let m = &mut block.mlp;
            out.push((format!("{p}.self_attn.q_proj"), Target::Q, &mut a.q));
            out.push((format!("{p}.self_attn.k_proj"), Target::K, &mut a.k));
            out.push((format!("{p}.self_attn.v_proj"), Target::V, &mut a.v));
            out.push((format!("{p}.self_attn.o_proj"), Target::O, &mut a.o));
            out.push((format!("{p}.mlp.gate_proj"), Target::Gate, &mut m.gate));
            out.push((format!("{p}.mlp.up_proj"), Target::Up, &mut m.up));
            out.push((format!("{p}.mlp.down_proj"), Target::Down, &mut m.down));
        }
        out
    }

    /// Attaches fresh LoRA pairs to the projections `config` targets; returns their
    /// PEFT module paths.
    pub fn attach_lora(&mut self, config: &LoraConfig, seed: u64) -> Result<Vec<String>> {
        let mut rng = crate::lora::seeded(seed);
        let device = self.device.clone();
        let mut attached = Vec::new();
        for (path, target, linear) in self.projections_mut() {
            if config.targets.contains(&target) {
                linear.lora = Some(LoraLayer::init(
                    config,
                    linear.in_features(),
                    linear.out_features(),
                    &device,
                    &mut rng,
                )?);
                attached.push(path);
            }
        }
        Ok(attached)
    }

    /// Every weight under its Hugging Face name, LoRA updates merged in.
    pub fn merged_weights(&mut self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        out.insert(
            "model.embed_tokens.weight".to_string(),
            self.embed.contiguous()?,
        );
        out.insert("model.norm.weight".to_string(), self.norm.contiguous()?);
        if !self.config.tie_word_embeddings {
            out.insert(
                "lm_head.weight".to_string(),
                self.lm_head.weight()?.contiguous()?,
            );
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.insert(
                format!("{p}.input_layernorm.weight"),
                block.input_norm.contiguous()?,
            );
            out.insert(
                format!("{p}.post_attention_layernorm.weight"),
                block.post_norm.contiguous()?,
            );
        }
        for (path, _, linear) in self.projections_mut() {
            let mut weight = linear.weight()?.contiguous()?;
            if let Some(lora) = &linear.lora {
                weight = (weight.to_dtype(DType::F32)? + lora.merged_delta()?)?
                    .to_dtype(weight.dtype())?;
            }
            out.insert(format!("{path}.weight"), weight);
            if let Some(bias) = &linear.bias {
                out.insert(format!("{path}.bias"), bias.contiguous()?);
            }
        }
        Ok(out)
    }

    /// Logits for the last position of each sequence: `ids` is `[batch, seq]`;
    /// `cache` holds earlier positions and grows by `seq`.
    pub fn forward_last(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.hidden(ids, cache, &mut Mode::Infer)?;
        let (b, t, h) = hidden.dims3()?;
        let last = hidden.narrow(1, t - 1, 1)?.reshape((b, h))?;
        self.lm_head
            .forward(&last, &mut Mode::Infer)?
            .to_dtype(DType::F32)
            .map_err(Into::into)
    }

    /// One decode step for several sequences at once: `tokens[i]` continues the
    /// sequence whose earlier positions are in `caches[i]` (each may have its own
    /// length). The projections and the MLP see all of them as one `[batch, hidden]`
    /// matrix, so the weights are read once per step, not once per sequence;
    /// attention reads each sequence's own cache. Returns logits `[batch, vocab]` (f32).
    pub fn decode_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let b = tokens.len();
        if b != caches.len() {
            bail!("{b} tokens but {} caches", caches.len());
        }
        let c = &self.config;
        for cache in caches.iter_mut() {
            if cache.len() + 1 > c.max_position_embeddings {
                bail!(
                    "sequence of {} tokens is longer than the model's context of {}",
                    cache.len() + 1,
                    c.max_position_embeddings
                );
            }
            if cache.layers.len() != self.blocks.len() {
                cache.layers = vec![None; self.blocks.len()];
            }
        }
        let offsets: Vec<usize> = caches.iter().map(|c| c.len()).collect();
        let head_dim = c.head_dim();
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let mode = &mut Mode::Decode;
        for (layer, block) in self.blocks.iter().enumerate() {
            let residual = x.clone();
            let normed = self.rms_norm(&x, &block.input_norm, mode)?;
            let a = &block.attention;
            let [q, k, v] = Linear::forward_many([&a.q, &a.k, &a.v], &normed, mode)?;
            let mut outs = Vec::with_capacity(b);
            for (i, cache) in caches.iter_mut().enumerate() {
                let heads = |t: &Tensor, n: usize| -> Result<Tensor> {
                    Ok(t.narrow(0, i, 1)?.reshape((1, n, 1, head_dim))?)
                };
                let cos = self.cos_half.narrow(0, offsets[i], 1)?;
                let sin = self.sin_half.narrow(0, offsets[i], 1)?;
                let qi =
                    candle_nn::rotary_emb::rope(&heads(&q, c.num_attention_heads)?, &cos, &sin)?;
                let ki =
                    candle_nn::rotary_emb::rope(&heads(&k, c.num_key_value_heads)?, &cos, &sin)?;
                let vi = heads(&v, c.num_key_value_heads)?;
                let slot = &mut cache.layers[layer];
                let (ki, vi) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &ki], 2)?, Tensor::cat(&[&pv, &vi], 2)?),
                    None => (ki, vi),
                };
                *slot = Some((ki.clone(), vi.clone()));
                outs.push(
                    self.attend(&qi, &ki, &vi)?
                        .reshape((1, c.num_attention_heads * head_dim))?,
                );
            }
            let out = Tensor::cat(&outs, 0)?;
            x = (residual + a.o.forward(&out, mode)?)?;
            let residual = x.clone();
            let normed = self.rms_norm(&x, &block.post_norm, mode)?;
            let m = &block.mlp;
            let [gate, up] = Linear::forward_many([&m.gate, &m.up], &normed, mode)?;
            x = (residual + m.down.forward(&(gate.silu()? * up)?, mode)?)?;
        }
        let x = self.rms_norm(&x, &self.norm, mode)?;
        Ok(self.lm_head.forward(&x, mode)?.to_dtype(DType::F32)?)
    }

    /// Attention of one query position `q` `[1, heads, 1, d]` over `k`, `v`
    /// `[1, kv_heads, s, d]`, no mask. The query heads that share a key/value head
    /// are stacked as rows (`[1, kv_heads, groups, d]`), so the cache is read in
    /// place instead of being repeated `groups` times.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let groups = c.num_attention_heads / c.num_key_value_heads;
        let d = c.head_dim();
        let q = q.reshape((1, c.num_key_value_heads, groups, d))?;
        let scale = 1.0 / (d as f64).sqrt();
        let scores = (matmul(&q, &k.t()?)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
            .to_dtype(self.dtype)?;
        Ok(matmul(&probs, v)?)
    }

    /// Final hidden states `[batch, seq, hidden]` (after the last norm).
    pub fn hidden(&self, ids: &Tensor, cache: &mut KvCache, mode: &mut Mode) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let offset = cache.len();
        if offset + t > self.config.max_position_embeddings {
            bail!(
                "sequence of {} tokens is longer than the model's context of {}",
                offset + t,
                self.config.max_position_embeddings
            );
        }
        if cache.layers.len() != self.blocks.len() {
            cache.layers = vec![None; self.blocks.len()];
        }
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            b,
            t,
            self.config.hidden_size,
        ))?;
        let (cos, sin) = if mode.training() {
            (
                self.cos.narrow(0, offset, t)?,
                self.sin.narrow(0, offset, t)?,
            )
        } else {
            (
                self.cos_half.narrow(0, offset, t)?,
                self.sin_half.narrow(0, offset, t)?,
            )
        };
        let mask = causal_mask(t, offset, &self.device, self.dtype)?;
        for (block, slot) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let residual = x.clone();
            let normed = self.rms_norm(&x, &block.input_norm, mode)?;
            let attn = self.attention(block, &normed, &cos, &sin, mask.as_ref(), slot, mode)?;
            x = (residual + attn)?;
            let residual = x.clone();
            let normed = self.rms_norm(&x, &block.post_norm, mode)?;
            let flat = normed.reshape((b * t, self.config.hidden_size))?;
            let m = &block.mlp;
            let [gate, up] = Linear::forward_many([&m.gate, &m.up], &flat, mode)?;
            let activated = if mode.training() && crate::ops::fusable(&gate) {
                crate::ops::swiglu(&gate, &up)?
            } else {
                (gate.silu()? * up)?
            };
            let mlp = m.down.forward(&activated, mode)?;
            x = (residual + mlp.reshape((b, t, self.config.hidden_size))?)?;
        }
        self.rms_norm(&x, &self.norm, mode)
    }

    /// Logits `[n, vocab]` for hidden states `[n, hidden]`.
    pub fn logits(&self, hidden: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        self.lm_head.forward(hidden, mode)
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor, mode: &Mode) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps;
        if mode.training() {
            crate::ops::rms_norm(x, weight, eps)
        } else {
            Ok(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                weight,
                eps as f32,
            )?)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        block: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        slot: &mut Option<(Tensor, Tensor)>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, h) = x.dims3()?;
        let head_dim = c.head_dim();
        let flat = x.reshape((b * t, h))?;
        let a = &block.attention;
        let [q, k, v] = Linear::forward_many([&a.q, &a.k, &a.v], &flat, mode)?;
        let q = q
            .reshape((b, t, c.num_attention_heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = k
            .reshape((b, t, c.num_key_value_heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = v
            .reshape((b, t, c.num_key_value_heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let fused = mode.training() && crate::ops::fusable(&q);
        let (q, k) = if fused {
            (
                crate::ops::rope(&q, cos, sin)?,
                crate::ops::rope(&k, cos, sin)?,
            )
        } else if mode.training() {
            (rope_slow(&q, cos, sin)?, rope_slow(&k, cos, sin)?)
        } else {
            (
                candle_nn::rotary_emb::rope(&q, cos, sin)?,
                candle_nn::rotary_emb::rope(&k, cos, sin)?,
            )
        };
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        if !mode.training() {
            *slot = Some((k.clone(), v.clone()));
        }
        let groups = c.num_attention_heads / c.num_key_value_heads;
        let k = repeat_kv(&k, groups)?;
        let v = repeat_kv(&v, groups)?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        if fused {
            // The mask is the causal one (`causal_mask`), which the fused op applies.
            let probs = crate::ops::causal_softmax(&matmul(&q, &k.t()?)?, scale)?;
            return self.attention_output(block, &probs, &v, (b, t, h), mode);
        }
        let mut scores = (matmul(&q, &k.t()?)? * scale)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = if mode.training() {
            candle_nn::ops::softmax(&scores.to_dtype(DType::F32)?, D::Minus1)?
                .to_dtype(self.dtype)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(self.dtype)?
        };
        self.attention_output(block, &probs, &v, (b, t, h), mode)
    }

    /// `probs · v`, heads joined again, through the output projection.
    fn attention_output(
        &self,
        block: &Block,
        probs: &Tensor,
        v: &Tensor,
        (b, t, h): (usize, usize, usize),
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let c = &self.config;
        let out = matmul(probs, v)?
            .transpose(1, 2)?
            .reshape((b * t, c.num_attention_heads * c.head_dim()))?;
        Ok(block.attention.o.forward(&out, mode)?.reshape((b, t, h))?)
    }
}

/// Hugging Face's rotary embedding (`rotate_half`), from differentiable ops.
fn rope_slow(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, heads, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, heads, groups, t, d))?
        .reshape((b, heads * groups, t, d))?)
}

/// `[max_positions, head_dim]` cos and sin tables, both halves repeated (HF layout).
fn rope_tables(config: &Config, device: &Device, dtype: DType) -> Result<(Tensor, Tensor)> {
    let d = config.head_dim();
    let inv: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / (config.rope_theta.powf(2.0 * i as f64 / d as f64)) as f32)
        .collect();
    let positions = config.max_position_embeddings;
    let inv = Tensor::from_vec(inv, (1, d / 2), device)?;
    let pos = Tensor::arange(0u32, positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?;
    let freqs = pos.matmul(&inv)?;
    let freqs = Tensor::cat(&[&freqs, &freqs], 1)?;
    Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
}

/// `[t, offset + t]`: 0 where a position may look, -inf after it. None for one token.
fn causal_mask(t: usize, offset: usize, device: &Device, dtype: DType) -> Result<Option<Tensor>> {
    if t == 1 {
        return Ok(None);
    }
    let total = offset + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > i + offset {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Some(
        Tensor::from_vec(mask, (t, total), device)?.to_dtype(dtype)?,
    ))
}
