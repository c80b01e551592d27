//! Fused training ops for the CPU, each with a hand-written backward pass.
//!
//! Composed from candle ops, RMSNorm is six ops forward and as many backward, each
//! with a buffer of its own; run 61 times per SmolLM2 forward pass, that added up.
//! Other devices use the composed form.

use anyhow::Result;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// `x / sqrt(mean(x²) + eps) · weight` over the last dimension; differentiable in `x`
/// (the weight is frozen).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32 {
        return Ok(x
            .contiguous()?
            .apply_op2(&weight.contiguous()?, RmsNorm { eps })?);
    }
    let x32 = x.to_dtype(DType::F32)?;
    let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x32
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .to_dtype(x.dtype())?;
    Ok(normed.broadcast_mul(weight)?)
}

/// The f32 values of a contiguous CPU tensor, for the fused ops' kernels.
pub(crate) fn slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("fused op needs f32 {what}")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fused op needs a contiguous {what}")
    };
    Ok(&data[start..end])
}

fn inverse_rms(row: &[f32], eps: f64) -> f32 {
    let mean = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (mean + eps as f32).sqrt()
}

struct RmsNorm {
    eps: f64,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "input")?;
        let w = slice(s2, l2, "weight")?;
        let h = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h)
            .zip(x.par_chunks(h))
            .for_each(|(dst, row)| {
                let r = inverse_rms(row, self.eps);
                for ((d, v), w) in dst.iter_mut().zip(row).zip(w) {
                    *d = v * r * w;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        Ok((
            Some(x.apply_op3(w, &grad, RmsNormGrad { eps: self.eps })?),
            None,
        ))
    }
}

/// dx = r · (g·w − n · mean(g·w·n)), with n = x·r and r = 1/rms(x).
struct RmsNormGrad {
    eps: f64,
}

impl CustomOp3 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "rms-norm-train-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "input")?;
        let w = slice(s2, l2, "weight")?;
        let g = slice(s3, l3, "gradient")?;
        let h = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h)
            .zip(x.par_chunks(h).zip(g.par_chunks(h)))
            .for_each(|(dst, (row, grow))| {
                let r = inverse_rms(row, self.eps);
                let dot = row
                    .iter()
                    .zip(grow)
                    .zip(w)
                    .map(|((v, g), w)| v * r * g * w)
                    .sum::<f32>()
                    / h as f32;
                for (((d, v), g), w) in dst.iter_mut().zip(row).zip(grow).zip(w) {
                    *d = r * (g * w - v * r * dot);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_rms_norm_and_gradient_match_the_composed_ones() -> Result<()> {
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (3, 4, 16), &Device::Cpu)?)?;
        let w = Tensor::randn(1f32, 0.3, 16, &Device::Cpu)?;
        let fused = rms_norm(x.as_tensor(), &w, 1e-5)?;
        let var = x.as_tensor().sqr()?.mean_keepdim(D::Minus1)?;
        let composed = x
            .as_tensor()
            .broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .broadcast_mul(&w)?;
        let diff = (&fused - &composed)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        let probe = Tensor::randn(0f32, 1.0, (3, 4, 16), &Device::Cpu)?;
        let g1 = (fused * &probe)?.sum_all()?.backward()?;
        let g2 = (composed * &probe)?.sum_all()?.backward()?;
        let (g1, g2) = (
            g1.get(x.as_tensor()).expect("grad"),
            g2.get(x.as_tensor()).expect("grad"),
        );
        let diff = (g1 - g2)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-4, "{diff}");
        Ok(())
    }
}
