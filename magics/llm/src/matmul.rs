//! The model's matrix products on the CPU, as custom ops.
//!
//! candle's CPU `matmul` zeroes its output before gemm overwrites every element of
//! it, and runs a batch of small products (attention's: one per sequence and head,
//! 36 of 128×128×64 in a SmolLM2 training step) one after another, each split
//! across every thread. Here the output is not zeroed and small batched products run
//! side by side, one thread each; `perf` put the zeroing at several per cent of a
//! training step and the side-by-side products gained 5% (`docs/benchmarks.md`).
//! [`frozen_matmul`] multiplies by a frozen base weight (no gradient for it, so a
//! LoRA step never computes or stores one); [`matmul`] is attention's product, with
//! both gradients. f32 on the CPU takes this path; other types and devices take
//! candle's own product.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp2, Error, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Batched products of at most this many multiply-adds each run one per thread.
const SMALL: usize = 1 << 22;

/// `lhs @ rhs` (`[.., m, k]` by `[.., k, n]`, the same leading dimensions), with the
/// gradients of both.
pub fn matmul(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    laid_out(lhs)?.apply_op2(&laid_out(rhs)?, Product { frozen: false })
}

/// `x @ w_t` where `w_t` is a frozen weight: the backward pass yields no gradient for
/// it.
pub fn frozen_matmul(x: &Tensor, w_t: &Tensor) -> Result<Tensor> {
    laid_out(x)?.apply_op2(&laid_out(w_t)?, Product { frozen: true })
}

/// `lhs @ rhs` with no backward pass (the gradients' own products).
fn product(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    laid_out(lhs)?.apply_op2_no_bwd(&laid_out(rhs)?, &Product { frozen: true })
}

/// `t` as it is when its leading dimensions step like one batch, else contiguous.
fn laid_out(t: &Tensor) -> Result<Tensor> {
    let l = t.layout();
    let (rows, cols) = match l.dims() {
        [.., r, c] => (*r, *c),
        _ => return Ok(t.clone()),
    };
    if batch_skip(l, rows * cols).is_some() {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// How far apart consecutive matrices of a batch are, or None when the leading
/// dimensions are not laid out as one batch. `per` is one matrix's size.
fn batch_skip(l: &Layout, per: usize) -> Option<usize> {
    if l.is_contiguous() {
        return Some(per);
    }
    let (stride, dims) = (l.stride(), l.dims());
    match stride.get(..stride.len().checked_sub(2)?)? {
        [s1, s] if *s1 == s * dims[1] => Some(*s),
        [_, s] if dims[0] == 1 => Some(*s),
        [s, _] if dims[1] == 1 => Some(*s),
        [s] => Some(*s),
        [] => Some(per),
        _ => None,
    }
}

/// (batch, m, n, k) of `[.., m, k] @ [.., k, n]`.
fn bmnk(l1: &Layout, l2: &Layout) -> Result<(usize, usize, usize, usize)> {
    let (d1, d2) = (l1.dims(), l2.dims());
    let rank = d1.len();
    if rank < 2
        || d2.len() != rank
        || d1[..rank - 2] != d2[..rank - 2]
        || d1[rank - 1] != d2[rank - 2]
    {
        return Err(Error::Msg(format!(
            "matmul: shapes {d1:?} and {d2:?} do not multiply"
        )));
    }
    Ok((
        d1[..rank - 2].iter().product(),
        d1[rank - 2],
        d2[rank - 1],
        d1[rank - 1],
    ))
}

fn out_shape(l1: &Layout, n: usize) -> Shape {
    let mut dims = l1.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Shape::from(dims)
}

/// The products of a batch in f32: every element written by gemm (never zeroed
/// first), small products side by side on one thread each.
fn product_f32(lhs: &[f32], l1: &Layout, rhs: &[f32], l2: &Layout) -> Result<Vec<f32>> {
    let (b, m, n, k) = bmnk(l1, l2)?;
    let strided = || Error::Msg("matmul: an operand's batch is not laid out as one".into());
    let a_skip = batch_skip(l1, m * k).ok_or_else(strided)?;
    let b_skip = batch_skip(l2, k * n).ok_or_else(strided)?;
    let (s1, s2) = (l1.stride(), l2.stride());
    let rank = s1.len();
    let (lhs_rs, lhs_cs) = (s1[rank - 2] as isize, s1[rank - 1] as isize);
    let (rhs_rs, rhs_cs) = (s2[rank - 2] as isize, s2[rank - 1] as isize);
    let lhs = &lhs[l1.start_offset()..];
    let rhs = &rhs[l2.start_offset()..];
    // Every matrix of the batch lies inside its buffer.
    let reach = |skip: usize, rs: isize, cs: isize, rows: usize, cols: usize| {
        (b - 1) * skip + (rows - 1) * rs as usize + (cols - 1) * cs as usize
    };
    if b == 0 || m == 0 || n == 0 {
        return Ok(Vec::new());
    }
    if k > 0
        && (reach(a_skip, lhs_rs, lhs_cs, m, k) >= lhs.len()
            || reach(b_skip, rhs_rs, rhs_cs, k, n) >= rhs.len())
    {
        return Err(Error::Msg(
            "matmul: an operand is shorter than its layout".into(),
        ));
    }
    let len = b * m * n;
    let mut dst: Vec<f32> = if k == 0 {
        vec![0.0; len]
    } else {
        Vec::with_capacity(len)
    };
    let threads = rayon::current_num_threads();
    let dst_addr = dst.as_mut_ptr() as usize;
    let one = |step: usize, parallelism: Parallelism| {
        // SAFETY: each step writes its own m * n elements of dst, whose capacity is
        // b * m * n; the operands' reach was checked above.
        unsafe {
            gemm(
                m,
                n,
                k,
                (dst_addr as *mut f32).add(step * m * n),
                1,
                n as isize,
                false,
                lhs.as_ptr().add(step * a_skip),
                lhs_cs,
                lhs_rs,
                rhs.as_ptr().add(step * b_skip),
                rhs_cs,
                rhs_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            )
        }
    };
    if k > 0 {
        if b > 1 && threads > 1 && m * n * k <= SMALL {
            (0..b)
                .into_par_iter()
                .for_each(|step| one(step, Parallelism::None));
        } else {
            let parallelism = if threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            (0..b).for_each(|step| one(step, parallelism));
        }
        // SAFETY: the products above wrote all `len` elements.
        unsafe { dst.set_len(len) };
    }
    Ok(dst)
}

/// A matrix product; `frozen`: no gradient for the right-hand side.
struct Product {
    frozen: bool,
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        if self.frozen {
            "frozen-matmul"
        } else {
            "matmul"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, m, n, k) = bmnk(l1, l2)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(lhs), CpuStorage::F32(rhs)) => {
                CpuStorage::F32(product_f32(lhs, l1, rhs, l2)?)
            }
            _ => s1.matmul(s2, (b, m, n, k), l1, l2)?,
        };
        Ok((out, out_shape(l1, n)))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (b, m, n, k) = bmnk(l1, l2)?;
        Ok((s1.matmul(s2, (b, m, n, k), l1, l2)?, out_shape(l1, n)))
    }

    fn bwd(
        &self,
        lhs: &Tensor,
        rhs: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let lhs_grad = product(grad, &rhs.t()?)?;
        let rhs_grad = if self.frozen {
            None
        } else {
            Some(product(&lhs.t()?, grad)?)
        };
        Ok((Some(lhs_grad), rhs_grad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: &Tensor, b: &Tensor) -> bool {
        let diff = (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>());
        diff.is_ok_and(|d| d < 1e-4)
    }

    #[test]
    fn products_and_gradients_match_candles() -> Result<()> {
        let dev = Device::Cpu;
        // Attention's shapes, small: [batch, heads, t, d] by its transpose, and the
        // probabilities by the values; a transposed operand; a frozen 2-D weight.
        let q = Var::randn(0f32, 1., (2, 3, 5, 4), &dev)?;
        let k = Var::randn(0f32, 1., (2, 3, 5, 4), &dev)?;
        let w = Tensor::randn(0f32, 1., (4, 6), &dev)?;
        let ours = matmul(&q, &k.t()?)?;
        let theirs = q.matmul(&k.t()?)?;
        assert!(close(&ours, &theirs));
        let x = q.flatten_to(2)?.reshape((30, 4))?;
        assert!(close(&frozen_matmul(&x, &w)?, &x.matmul(&w)?));

        let ours = (matmul(&q, &k.t()?)?.sqr()?.sum_all()? + frozen_matmul(&x, &w)?.sum_all()?)?
            .backward()?;
        let theirs =
            (q.matmul(&k.t()?)?.sqr()?.sum_all()? + x.matmul(&w)?.sum_all()?)?.backward()?;
        for v in [&q, &k] {
            let (a, b) = (ours.get(v), theirs.get(v));
            assert!(matches!((a, b), (Some(a), Some(b)) if close(a, b)));
        }
        Ok(())
    }

    #[test]
    fn a_frozen_weight_gets_no_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (3, 4), &dev)?;
        let w = Var::randn(0f32, 1., (4, 2), &dev)?;
        let grads = frozen_matmul(&x, &w)?.sum_all()?.backward()?;
        assert!(grads.get(&x).is_some());
        assert!(grads.get(&w).is_none());
        Ok(())
    }

    #[test]
    fn shapes_that_do_not_multiply_are_refused() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::zeros((2, 3), candle_core::DType::F32, &dev)?;
        let err = matmul(&a, &a).expect_err("3 by 3 does not follow 2 by 3");
        assert!(err.to_string().contains("do not multiply"), "{err}");
        Ok(())
    }
}
