//! Fused training ops for the CPU, each with a hand-written backward pass.
//!
//! Composed from candle ops, RMSNorm is six ops forward and as many backward, each
//! with a buffer of its own; run 61 times per SmolLM2 forward pass, that added up.
//! The same goes for the rotary embedding (six ops), the attention's scaled, causally
//! masked softmax (eight ops on the largest activations of the pass) and SwiGLU
//! (silu's backward alone is eight ops), whose buffers the backward pass also kept
//! alive. Other devices use the composed form.

use anyhow::Result;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// `x / sqrt(mean(x²) + eps) · weight` over the last dimension; differentiable in `x`
/// (the weight is frozen).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if fusable(x) && fusable(weight) {
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

/// Whether the fused CPU kernels apply to `x`.
pub fn fusable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Softmax over the last dimension of `scale · x`, where in each `[queries, keys]`
/// matrix query `i` sees keys `j <= i + keys - queries` only (the causal mask; the
/// others get probability 0). `x`: f32 on the CPU, at least two dimensions.
pub fn causal_softmax(x: &Tensor, scale: f64) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(CausalSoftmax {
        scale: scale as f32,
    })?)
}

/// The `[queries, keys]` matrices of a causal softmax: query `i` sees the keys
/// `j <= i + keys - queries`.
#[derive(Clone, Copy)]
struct Causal {
    queries: usize,
    keys: usize,
}

impl Causal {
    fn of(shape: &Shape) -> candle_core::Result<Causal> {
        let dims = shape.dims();
        if dims.len() < 2 {
            candle_core::bail!("causal softmax needs [.., queries, keys], got {shape:?}")
        }
        let (queries, keys) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        if keys < queries {
            candle_core::bail!(
                "causal softmax needs at least as many keys as queries, got {shape:?}"
            )
        }
        Ok(Causal { queries, keys })
    }

    /// How many keys row `row` (counted over all the matrices) may see.
    fn visible(self, row: usize) -> usize {
        row % self.queries + self.keys - self.queries + 1
    }
}

struct CausalSoftmax {
    scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "scores")?;
        let causal = Causal::of(l.shape())?;
        let keys = causal.keys.max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(keys)
            .zip(x.par_chunks(keys))
            .enumerate()
            .for_each(|(r, (dst, row))| {
                let n = causal.visible(r);
                let max = row[..n].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let mut sum = 0f32;
                for (d, &v) in dst[..n].iter_mut().zip(&row[..n]) {
                    *d = ((v - max) * self.scale).exp();
                    sum += *d;
                }
                let inv = 1.0 / sum;
                for d in &mut dst[..n] {
                    *d *= inv;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(y.apply_op2(
            &grad.contiguous()?,
            CausalSoftmaxGrad { scale: self.scale },
        )?))
    }
}

/// dx = scale · y · (dy − Σ dy·y) over the visible keys (y is 0 elsewhere).
struct CausalSoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for CausalSoftmaxGrad {
    fn name(&self) -> &'static str {
        "causal-softmax-train-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = slice(s1, l1, "probabilities")?;
        let g = slice(s2, l2, "gradient")?;
        let causal = Causal::of(l1.shape())?;
        let keys = causal.keys.max(1);
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(keys)
            .zip(y.par_chunks(keys).zip(g.par_chunks(keys)))
            .enumerate()
            .for_each(|(r, (dst, (yr, gr)))| {
                let n = causal.visible(r);
                let dot: f32 = yr[..n].iter().zip(&gr[..n]).map(|(y, g)| y * g).sum();
                for ((d, y), g) in dst[..n].iter_mut().zip(&yr[..n]).zip(&gr[..n]) {
                    *d = self.scale * y * (g - dot);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Hugging Face's rotary embedding `x·cos + rotate_half(x)·sin` over the last
/// dimension of `x` `[.., positions, head_dim]`, with `cos` and `sin` `[positions,
/// head_dim]`. f32 on the CPU.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rope { backward: false },
    )?)
}

/// Forward: `y_j = x_j·cos_j + r_j·sin_j` with `r = (−x₂, x₁)` (the halves of a head).
/// Backward (the transpose of that map): `dx_j = dy_j·cos_j + (dy·sin)₂ⱼ` for the first
/// half and `dy_j·cos_j − (dy·sin)₁ⱼ` for the second.
struct Rope {
    backward: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        if self.backward {
            "rope-train-grad"
        } else {
            "rope-train"
        }
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
        let cos = slice(s2, l2, "cos")?;
        let sin = slice(s3, l3, "sin")?;
        let dims = l1.shape().dims();
        if dims.len() < 2 || l2.shape() != l3.shape() {
            candle_core::bail!("rope needs [.., positions, head_dim] and tables of one shape")
        }
        let (positions, d) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        if d % 2 != 0 || l2.shape().dims() != [positions, d] {
            candle_core::bail!(
                "rope: input {:?} does not fit tables {:?}",
                l1.shape(),
                l2.shape()
            )
        }
        let h = d / 2;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .enumerate()
            .for_each(|(r, (dst, row))| {
                let p = r % positions;
                let (c, s) = (&cos[p * d..(p + 1) * d], &sin[p * d..(p + 1) * d]);
                for j in 0..h {
                    let (a, b) = (row[j], row[j + h]);
                    if self.backward {
                        dst[j] = a * c[j] + b * s[j + h];
                        dst[j + h] = b * c[j + h] - a * s[j];
                    } else {
                        dst[j] = a * c[j] - b * s[j];
                        dst[j + h] = b * c[j + h] + a * s[j + h];
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad
            .contiguous()?
            .apply_op3(cos, sin, Rope { backward: true })?;
        Ok((Some(dx), None, None))
    }
}

/// SwiGLU's `silu(gate) · up`, differentiable in both. f32 on the CPU, one shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok(gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)?)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = slice(s1, l1, "gate")?;
        let u = slice(s2, l2, "up")?;
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "swiglu: gate {:?} and up {:?} differ",
                l1.shape(),
                l2.shape()
            )
        }
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(4096)
            .zip(g.par_chunks(4096).zip(u.par_chunks(4096)))
            .for_each(|(dst, (g, u))| {
                for ((d, &g), &u) in dst.iter_mut().zip(g).zip(u) {
                    *d = g * sigmoid(g) * u;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // Both gradients from one pass (one sigmoid per element), stacked as [2, ..].
        let both = gate.apply_op3(up, &grad.contiguous()?, SwiGluGrad)?;
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

/// d gate = dy · up · s · (1 + gate · (1 − s)) and d up = dy · gate · s, s = σ(gate),
/// stacked as `[2, ..]` (d gate first).
struct SwiGluGrad;

impl CustomOp3 for SwiGluGrad {
    fn name(&self) -> &'static str {
        "swiglu-train-grad"
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
        let g = slice(s1, l1, "gate")?;
        let u = slice(s2, l2, "up")?;
        let dy = slice(s3, l3, "gradient")?;
        let n = g.len();
        let mut out = vec![0f32; 2 * n];
        let (d_gate, d_up) = out.split_at_mut(n);
        d_gate
            .par_chunks_mut(4096)
            .zip(d_up.par_chunks_mut(4096))
            .zip(
                g.par_chunks(4096)
                    .zip(u.par_chunks(4096).zip(dy.par_chunks(4096))),
            )
            .for_each(|((dg, du), (g, (u, dy)))| {
                for (((dg, du), &g), (&u, &dy)) in
                    dg.iter_mut().zip(du).zip(g).zip(u.iter().zip(dy))
                {
                    let s = sigmoid(g);
                    *dg = dy * u * s * (1.0 + g * (1.0 - s));
                    *du = dy * g * s;
                }
            });
        let mut dims = vec![2];
        dims.extend_from_slice(l1.shape().dims());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
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

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
    }

    /// The fused op against its composed form: values, and the gradient of a random
    /// projection of the output with respect to the input.
    fn same_values_and_gradients(
        x: &Var,
        fused: Tensor,
        composed: Tensor,
        tolerance: f32,
    ) -> Result<()> {
        let diff = max_diff(&fused, &composed)?;
        assert!(diff < tolerance, "values differ by {diff}");
        let probe = Tensor::randn(0f32, 1.0, fused.shape(), &Device::Cpu)?;
        let g1 = (fused * &probe)?.sum_all()?.backward()?;
        let g2 = (composed * &probe)?.sum_all()?.backward()?;
        let (g1, g2) = (
            g1.get(x.as_tensor()).expect("grad"),
            g2.get(x.as_tensor()).expect("grad"),
        );
        let diff = max_diff(g1, g2)?;
        assert!(diff < tolerance, "gradients differ by {diff}");
        Ok(())
    }

    #[test]
    fn fused_causal_softmax_and_gradient_match_the_composed_ones() -> Result<()> {
        // Seven keys for five queries: a cache of two positions before them.
        for (queries, keys) in [(5, 5), (5, 7), (1, 4)] {
            let x = Var::from_tensor(&Tensor::randn(
                0f32,
                3.0,
                (2, 3, queries, keys),
                &Device::Cpu,
            )?)?;
            let scale = 0.125;
            let fused = causal_softmax(x.as_tensor(), scale)?;
            let offset = keys - queries;
            let mask: Vec<f32> = (0..queries)
                .flat_map(|i| {
                    (0..keys).map(move |j| {
                        if j > i + offset {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (queries, keys), &Device::Cpu)?;
            let composed = candle_nn::ops::softmax(
                &(x.as_tensor() * scale)?.broadcast_add(&mask)?,
                D::Minus1,
            )?;
            same_values_and_gradients(&x, fused, composed, 1e-5)?;
        }
        Ok(())
    }

    #[test]
    fn fused_rope_and_gradient_match_the_composed_ones() -> Result<()> {
        let (positions, d) = (6, 8);
        let x = Var::from_tensor(&Tensor::randn(
            0f32,
            1.0,
            (2, 3, positions, d),
            &Device::Cpu,
        )?)?;
        // Tables whose halves differ, so that a kernel mixing up the halves fails.
        let cos = Tensor::randn(0f32, 1.0, (positions, d), &Device::Cpu)?;
        let sin = Tensor::randn(0f32, 1.0, (positions, d), &Device::Cpu)?;
        let fused = rope(x.as_tensor(), &cos, &sin)?;
        let x1 = x.as_tensor().narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.as_tensor().narrow(D::Minus1, d / 2, d / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        let composed = (x.as_tensor().broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?;
        same_values_and_gradients(&x, fused, composed, 1e-5)
    }

    #[test]
    fn fused_swiglu_and_gradients_match_the_composed_ones() -> Result<()> {
        let gate = Var::from_tensor(&Tensor::randn(0f32, 2.0, (3, 5000), &Device::Cpu)?)?;
        let up = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5000), &Device::Cpu)?)?;
        let fused = swiglu(gate.as_tensor(), up.as_tensor())?;
        let composed = (gate.as_tensor().silu()? * up.as_tensor())?;
        assert!(max_diff(&fused, &composed)? < 1e-5);
        let probe = Tensor::randn(0f32, 1.0, (3, 5000), &Device::Cpu)?;
        let g1 = (fused * &probe)?.sum_all()?.backward()?;
        let g2 = (composed * &probe)?.sum_all()?.backward()?;
        for var in [&gate, &up] {
            let (a, b) = (
                g1.get(var.as_tensor()).expect("grad"),
                g2.get(var.as_tensor()).expect("grad"),
            );
            let diff = max_diff(a, b)?;
            assert!(diff < 1e-4, "gradients differ by {diff}");
        }
        Ok(())
    }

    #[test]
    fn fused_ops_refuse_shapes_they_cannot_handle() -> Result<()> {
        let x = Tensor::zeros((2, 5, 3), DType::F32, &Device::Cpu)?;
        let error = causal_softmax(&x, 1.0)
            .expect_err("more queries than keys")
            .to_string();
        assert!(error.contains("at least as many keys"), "{error}");
        let tables = Tensor::zeros((4, 5), DType::F32, &Device::Cpu)?;
        let x = Tensor::zeros((2, 4, 5), DType::F32, &Device::Cpu)?;
        let error = rope(&x, &tables, &tables)
            .expect_err("odd head")
            .to_string();
        assert!(error.contains("does not fit"), "{error}");
        Ok(())
    }

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
