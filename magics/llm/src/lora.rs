//! LoRA: a low-rank update `scale · B·A` beside a frozen projection, and adapters in
//! PEFT's layout (`adapter_config.json` + `adapter_model.safetensors`, tensors named
//! `base_model.model.<module>.lora_A.weight`), so PEFT loads them unchanged.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub type SeededRng = rand::rngs::StdRng;

pub fn seeded(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

/// A projection LoRA can adapt, by its PEFT module name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    pub fn module(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// `q`, `q_proj`, `gate`, `gate_proj`, …
    pub fn parse(name: &str) -> Result<Target> {
        let short = name.trim().trim_end_matches("_proj");
        Target::ALL
            .into_iter()
            .find(|t| t.module().trim_end_matches("_proj") == short)
            .ok_or_else(|| {
                anyhow!("unknown LoRA target '{name}'; choose from q, k, v, o, gate, up, down")
            })
    }

    pub fn parse_list(list: &str) -> Result<Vec<Target>> {
        let mut targets = Vec::new();
        for name in list.split(',').filter(|s| !s.trim().is_empty()) {
            let t = Target::parse(name)?;
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        if targets.is_empty() {
            bail!("no LoRA targets given; choose from q, k, v, o, gate, up, down");
        }
        Ok(targets)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub targets: Vec<Target>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec![Target::Q, Target::V],
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            bail!("LoRA rank must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("LoRA dropout must be in [0, 1), got {}", self.dropout);
        }
        if self.targets.is_empty() {
            bail!("no LoRA targets given; choose from q, k, v, o, gate, up, down");
        }
        Ok(())
    }
}

/// The trainable pair beside one projection. A and B are kept in f32 whatever the
/// base dtype, so bf16 training still accumulates updates precisely.
#[derive(Clone)]
pub struct LoraLayer {
    /// `[r, in]`
    pub a: Var,
    /// `[out, r]`
    pub b: Var,
    pub scale: f64,
    pub dropout: f32,
}

impl LoraLayer {
    /// PEFT's initialisation: A ~ U(-1/√in, 1/√in) (Kaiming with a = √5), B = 0.
    pub fn init(
        config: &LoraConfig,
        in_features: usize,
        out_features: usize,
        device: &Device,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let bound = 1.0 / (in_features as f32).sqrt();
        let a: Vec<f32> = (0..config.r * in_features)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = Tensor::from_vec(a, (config.r, in_features), device)?;
        let b = Tensor::zeros((out_features, config.r), DType::F32, device)?;
        Ok(LoraLayer {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: config.scale(),
            dropout: config.dropout,
        })
    }

    /// `x`: `[n, in]` → `scale · x·Aᵀ·Bᵀ`: `[n, out]` in `x`'s dtype.
    pub fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let low = x.matmul(&self.a.as_tensor().t()?)?;
        let out = (low.matmul(&self.b.as_tensor().t()?)? * self.scale)?;
        Ok(out.to_dtype(dtype)?)
    }

    /// `scale · B·A`, the update merged into the base weight.
    pub fn merged_delta(&self) -> Result<Tensor> {
        Ok((self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale)?)
    }
}

/// PEFT's `adapter_config.json`.
pub fn peft_config(config: &LoraConfig, base_model: &str) -> serde_json::Value {
    let modules: Vec<&str> = config.targets.iter().map(|t| t.module()).collect();
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": false,
        "use_dora": false,
        "revision": null,
    })
}

/// Reads `adapter_config.json` back into a [`LoraConfig`].
pub fn read_peft_config(dir: &Path) -> Result<LoraConfig> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not an adapter folder: no adapter_config.json",
            dir.display()
        )
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if value["peft_type"].as_str() != Some("LORA") {
        bail!(
            "{}: only LoRA adapters are supported (peft_type is {})",
            path.display(),
            value["peft_type"]
        );
    }
    if value["use_dora"].as_bool() == Some(true) || value["use_rslora"].as_bool() == Some(true) {
        bail!(
            "{}: DoRA and rsLoRA adapters are not supported",
            path.display()
        );
    }
    let r = value["r"]
        .as_u64()
        .context("adapter_config.json has no r")? as usize;
    let alpha = value["lora_alpha"].as_f64().unwrap_or(r as f64);
    let modules = match &value["target_modules"] {
        serde_json::Value::Array(list) => list
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(","),
        serde_json::Value::String(s) => s.clone(),
        _ => bail!("adapter_config.json has no target_modules"),
    };
    let config = LoraConfig {
        r,
        alpha,
        dropout: value["lora_dropout"].as_f64().unwrap_or(0.0) as f32,
        targets: Target::parse_list(&modules)?,
    };
    config.validate()?;
    Ok(config)
}

/// The PEFT tensor names for one module path.
pub fn peft_names(module: &str) -> (String, String) {
    (
        format!("base_model.model.{module}.lora_A.weight"),
        format!("base_model.model.{module}.lora_B.weight"),
    )
}

/// Tensors of `adapter_model.safetensors`, keyed by PEFT name.
pub fn read_peft_tensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join("adapter_model.safetensors");
    candle_core::safetensors::load(&path, device)
        .map_err(|e| anyhow!("cannot read {} ({e})", path.display()))
}
