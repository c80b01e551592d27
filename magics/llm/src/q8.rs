//! 8-bit weights for decoding on the CPU.
//!
//! Decoding one token reads every weight once, so on the CPU it is bound by memory
//! bandwidth: f32 weights move 4 bytes per parameter per token. Here each row of a
//! frozen weight is cut into blocks of 32 values stored as `i8` with one `f32` scale
//! (llama.cpp's Q8_0 layout): 1.125 bytes per parameter. The activations of the few
//! rows being decoded are quantized the same way, so each block's dot product is
//! an integer multiply-add (vectorised for AVX2 where the processor has it), and the
//! output rows are split across threads. Prompts (many rows) still go through f32
//! matrix products, where compute, not memory, is the limit.

use rayon::prelude::*;

pub const BLOCK: usize = 32;

/// A `[rows, cols]` matrix in 32-value int8 blocks with one scale each.
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    scales: Vec<f32>,
    quants: Vec<i8>,
}

/// Quantizes `values` (a multiple of 32) block by block into `scales`, `quants`:
/// scale = max |v| / 127, q = v / scale rounded to nearest, ties to even.
pub(crate) fn quantize_into(values: &[f32], scales: &mut Vec<f32>, quants: &mut Vec<i8>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2, checked just above.
            unsafe { quantize_avx2(values, scales, quants) };
            return;
        }
    }
    quantize_plain(values, scales, quants);
}

fn quantize_plain(values: &[f32], scales: &mut Vec<f32>, quants: &mut Vec<i8>) {
    for block in values.chunks_exact(BLOCK) {
        let (scale, inv) = block_scale(block.iter().fold(0f32, |m, v| m.max(v.abs())));
        scales.push(scale);
        quants.extend(block.iter().map(|v| (v * inv).round_ties_even() as i8));
    }
}

#[inline(always)]
fn block_scale(max: f32) -> (f32, f32) {
    let scale = max / 127.0;
    (scale, if scale > 0.0 { 1.0 / scale } else { 0.0 })
}

/// [`quantize_into`] eight lanes at a time (the same numbers: `cvtps` rounds to
/// nearest even, the scalar loop's rounding).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_avx2(values: &[f32], scales: &mut Vec<f32>, quants: &mut Vec<i8>) {
    use std::arch::x86_64::*;
    let blocks = values.len() / BLOCK;
    scales.reserve(blocks);
    quants.reserve(blocks * BLOCK);
    let sign_bit = _mm256_set1_ps(-0.0);
    // packs interleave 128-bit lanes; this puts the 32 bytes back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut out = [0i8; BLOCK];
    for block in values.chunks_exact(BLOCK) {
        // SAFETY: `block` has 32 values; unaligned loads of 8 at offsets 0..24.
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(block.as_ptr().add(i * 8)));
        let abs = v.map(|x| _mm256_andnot_ps(sign_bit, x));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m1 = _mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1));
        let (scale, inv) = block_scale(_mm_cvtss_f32(m1));
        scales.push(scale);
        let inv = _mm256_set1_ps(inv);
        let q = v.map(|x| _mm256_cvtps_epi32(_mm256_mul_ps(x, inv)));
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let ordered = _mm256_permutevar8x32_epi32(packed, order);
        _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, ordered);
        quants.extend_from_slice(&out);
    }
}

impl Q8Matrix {
    /// `None` when `cols` is not a multiple of 32 (the caller keeps f32).
    pub fn from_rows(weights: &[f32], rows: usize, cols: usize) -> Option<Q8Matrix> {
        if !cols.is_multiple_of(BLOCK) || weights.len() != rows * cols {
            return None;
        }
        let mut scales = Vec::with_capacity(rows * cols / BLOCK);
        let mut quants = Vec::with_capacity(rows * cols);
        quantize_into(weights, &mut scales, &mut quants);
        Some(Q8Matrix {
            rows,
            cols,
            scales,
            quants,
        })
    }
}

impl Rows for Q8Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    /// Output rows `first..` (as many as `out_t` holds) against every input:
    /// `out_t` is `[rows, n]`. Each task of a product takes a run of output rows for
    /// every input, so a weight row is read once whatever n is.
    fn rows_into(&self, first: usize, out_t: &mut [f32], x: &Activations) {
        let n = x.n;
        let mut rows = out_t.chunks_mut(n).enumerate();
        while let Some((local, outs)) = rows.next() {
            let r = first + local;
            // Two weight rows at a time when there are four inputs or more: each
            // input block is loaded once for both rows.
            match rows.next() {
                Some((_, next)) if n >= 4 => self.two_rows(r, outs, next, &x.scales, &x.quants, n),
                next => {
                    self.one_row(r, outs, &x.scales, &x.quants, n);
                    if let Some((_, outs)) = next {
                        self.one_row(r + 1, outs, &x.scales, &x.quants, n);
                    }
                }
            }
        }
    }
}

/// Output rows per task when `total_rows` rows are shared out between the threads:
/// about eight tasks a thread, so that work stealing evens out the threads' shares
/// (with a fixed 64 rows, a 576-row product was 9 tasks on 2 threads, 5 against 4).
fn rows_per_task(total_rows: usize) -> usize {
    total_rows
        .div_ceil(rayon::current_num_threads().max(1) * 8)
        .max(8)
}

/// A quantized matrix (either layout) as the parallel driver sees it.
pub trait Rows: Sync {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// `x` is `[n, cols]` row-major; returns `x · selfᵀ`, `[n, rows]`.
    fn matmul(&self, x: &[f32], n: usize) -> Vec<f32>
    where
        Self: Sized,
    {
        par_products(&[self], &Activations::new(x, n, self.cols())).remove(0)
    }
    /// Output rows `first..` (as many as `out_t` holds, `[rows, n]`) against every
    /// input of `x`.
    fn rows_into(&self, first: usize, out_t: &mut [f32], x: &Activations);
}

/// The products of several matrices with the same quantized input, their rows
/// shared out between the threads together; each result is `[n, rows]`. A row's
/// result does not depend on how rows are grouped.
pub(crate) fn par_products(parts: &[&dyn Rows], x: &Activations) -> Vec<Vec<f32>> {
    let n = x.n;
    let per_task = rows_per_task(parts.iter().map(|p| p.rows()).sum());
    let mut outs: Vec<Vec<f32>> = parts.iter().map(|p| vec![0f32; p.rows() * n]).collect();
    let mut tasks: Vec<(&dyn Rows, usize, &mut [f32])> = Vec::new();
    for (part, out_t) in parts.iter().zip(outs.iter_mut()) {
        for (task, chunk) in out_t.chunks_mut(per_task * n).enumerate() {
            tasks.push((*part, task * per_task, chunk));
        }
    }
    tasks
        .into_par_iter()
        .for_each(|(part, first, chunk)| part.rows_into(first, chunk, x));
    parts
        .iter()
        .zip(outs)
        .map(|(p, out_t)| transpose(&out_t, p.rows(), n))
        .collect()
}

/// `[rows, n]` → `[n, rows]`.
fn transpose(out_t: &[f32], rows: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * rows];
    for r in 0..rows {
        for i in 0..n {
            out[i * rows + r] = out_t[r * n + i];
        }
    }
    out
}

/// `n` input rows quantized to int8 blocks, as every quantized layout takes them.
pub struct Activations {
    pub(crate) n: usize,
    pub(crate) blocks: usize,
    /// One scale per block.
    pub(crate) scales: Vec<f32>,
    pub(crate) quants: Vec<i8>,
    /// scale · Σ quants per block (what a Q4_1 block's minimum multiplies).
    pub(crate) sums: Vec<f32>,
}

impl Activations {
    /// `x` is `[n, cols]` row-major, `cols` a multiple of 32.
    pub fn new(x: &[f32], n: usize, cols: usize) -> Activations {
        let blocks = cols / BLOCK;
        let mut scales = Vec::with_capacity(n * blocks);
        let mut quants = Vec::with_capacity(n * cols);
        quantize_into(&x[..n * cols], &mut scales, &mut quants);
        let sums = quants
            .chunks_exact(BLOCK)
            .zip(&scales)
            .map(|(q, s)| s * q.iter().map(|&v| v as i32).sum::<i32>() as f32)
            .collect();
        Activations {
            n,
            blocks,
            scales,
            quants,
            sums,
        }
    }
}

impl Q8Matrix {
    /// Row `r`'s scales and quants.
    fn row(&self, r: usize) -> (&[f32], &[i8]) {
        let blocks = self.cols / BLOCK;
        (
            &self.scales[r * blocks..(r + 1) * blocks],
            &self.quants[r * self.cols..(r + 1) * self.cols],
        )
    }

    /// Row `r` against every input: four inputs per pass over the weight row (each
    /// weight block is loaded and sign-split once for all four), the rest one by one.
    fn one_row(&self, r: usize, outs: &mut [f32], xs: &[f32], xq: &[i8], n: usize) {
        let blocks = self.cols / BLOCK;
        let (s0, q0) = self.row(r);
        let mut i = 0;
        while i + 4 <= n {
            let x_s = &xs[i * blocks..(i + 4) * blocks];
            let x_q = &xq[i * self.cols..(i + 4) * self.cols];
            outs[i..i + 4].copy_from_slice(&dot4(s0, q0, x_s, x_q));
            i += 4;
        }
        for j in i..n {
            let x_s = &xs[j * blocks..(j + 1) * blocks];
            let x_q = &xq[j * self.cols..(j + 1) * self.cols];
            outs[j] = dot(s0, q0, x_s, x_q);
        }
    }

    /// Rows `r` and `r + 1` against every input: four inputs at a time through
    /// [`dot2x4`], the rest one by one (the same sums, in the same order, as
    /// [`Q8Matrix::one_row`]).
    fn two_rows(
        &self,
        r: usize,
        out0: &mut [f32],
        out1: &mut [f32],
        xs: &[f32],
        xq: &[i8],
        n: usize,
    ) {
        let blocks = self.cols / BLOCK;
        let ((s0, q0), (s1, q1)) = (self.row(r), self.row(r + 1));
        let mut i = 0;
        while i + 4 <= n {
            let x_s = &xs[i * blocks..(i + 4) * blocks];
            let x_q = &xq[i * self.cols..(i + 4) * self.cols];
            let [a, b] = dot2x4(s0, q0, s1, q1, x_s, x_q);
            out0[i..i + 4].copy_from_slice(&a);
            out1[i..i + 4].copy_from_slice(&b);
            i += 4;
        }
        for j in i..n {
            let x_s = &xs[j * blocks..(j + 1) * blocks];
            let x_q = &xq[j * self.cols..(j + 1) * self.cols];
            out0[j] = dot(s0, q0, x_s, x_q);
            out1[j] = dot(s1, q1, x_s, x_q);
        }
    }
}

/// [`dot4`] for two weight rows.
fn dot2x4(s0: &[f32], w0: &[i8], s1: &[f32], w1: &[i8], xs: &[f32], x: &[i8]) -> [[f32; 4]; 2] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2, checked just above.
            return unsafe { dot2x4_avx2(s0, w0, s1, w1, xs, x) };
        }
    }
    [dot4(s0, w0, xs, x), dot4(s1, w1, xs, x)]
}

/// Σ over blocks of scale_w · scale_x · Σ w·x (integers).
fn dot(w_scales: &[f32], w: &[i8], x_scales: &[f32], x: &[i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2, checked just above.
            return unsafe { dot_avx2(w_scales, w, x_scales, x) };
        }
    }
    dot_plain(w_scales, w, x_scales, x)
}

/// Four dot products of one weight row with four consecutive inputs (`x_scales`
/// and `x` hold the four inputs one after the other).
fn dot4(w_scales: &[f32], w: &[i8], x_scales: &[f32], x: &[i8]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2, checked just above.
            return unsafe { dot4_avx2(w_scales, w, x_scales, x) };
        }
    }
    let (blocks, cols) = (w_scales.len(), w.len());
    std::array::from_fn(|k| {
        dot_plain(
            w_scales,
            w,
            &x_scales[k * blocks..(k + 1) * blocks],
            &x[k * cols..(k + 1) * cols],
        )
    })
}

#[inline(always)]
fn dot_plain(w_scales: &[f32], w: &[i8], x_scales: &[f32], x: &[i8]) -> f32 {
    let mut total = 0f32;
    for (b, (ws, xs)) in w_scales.iter().zip(x_scales).enumerate() {
        let wb = &w[b * BLOCK..(b + 1) * BLOCK];
        let xb = &x[b * BLOCK..(b + 1) * BLOCK];
        let mut acc = 0i32;
        for k in 0..BLOCK {
            acc += wb[k] as i32 * xb[k] as i32;
        }
        total += ws * xs * acc as f32;
    }
    total
}

/// llama.cpp's way on AVX2: per block, |w| (unsigned) times x with w's sign
/// (signed) in 16-bit pairs (`maddubs`; at most 2·127·127, no saturation), summed
/// to 32 bits (`madd`), scaled and accumulated in f32 with one fused multiply-add.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w_scales: &[f32], w: &[i8], x_scales: &[f32], x: &[i8]) -> f32 {
    use std::arch::x86_64::*;
    let blocks = w_scales.len().min(x_scales.len());
    assert!(w.len() >= blocks * BLOCK && x.len() >= blocks * BLOCK);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for b in 0..blocks {
        // SAFETY: block b lies inside both slices (asserted above); unaligned loads.
        let wv = _mm256_loadu_si256(w.as_ptr().add(b * BLOCK) as *const __m256i);
        let xv = _mm256_loadu_si256(x.as_ptr().add(b * BLOCK) as *const __m256i);
        let w_abs = _mm256_sign_epi8(wv, wv);
        let x_signed = _mm256_sign_epi8(xv, wv);
        let pairs = _mm256_maddubs_epi16(w_abs, x_signed);
        let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
        let scale = _mm256_set1_ps(*w_scales.get_unchecked(b) * *x_scales.get_unchecked(b));
        acc = _mm256_fmadd_ps(scale, sums, acc);
    }
    let high = _mm256_extractf128_ps(acc, 1);
    let low = _mm256_castps256_ps128(acc);
    let quad = _mm_add_ps(high, low);
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    let single = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
    _mm_cvtss_f32(single)
}

/// [`dot_avx2`] for four inputs at once: one load and sign split of each weight
/// block, four accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(w_scales: &[f32], w: &[i8], x_scales: &[f32], x: &[i8]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let blocks = w_scales.len();
    let cols = blocks * BLOCK;
    assert!(w.len() >= cols && x.len() >= 4 * cols && x_scales.len() >= 4 * blocks);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    for b in 0..blocks {
        // SAFETY: every block read lies inside the slices (asserted above).
        let wv = _mm256_loadu_si256(w.as_ptr().add(b * BLOCK) as *const __m256i);
        let w_abs = _mm256_sign_epi8(wv, wv);
        let ws = *w_scales.get_unchecked(b);
        for (k, acc) in acc.iter_mut().enumerate() {
            let xv = _mm256_loadu_si256(x.as_ptr().add(k * cols + b * BLOCK) as *const __m256i);
            let pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(xv, wv));
            let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
            let scale = _mm256_set1_ps(ws * *x_scales.get_unchecked(k * blocks + b));
            *acc = _mm256_fmadd_ps(scale, sums, *acc);
        }
    }
    acc.map(|v| hsum(v))
}

/// [`dot4_avx2`] for two weight rows: eight accumulators; each input block is
/// loaded once for both rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot2x4_avx2(
    s0: &[f32],
    w0: &[i8],
    s1: &[f32],
    w1: &[i8],
    x_scales: &[f32],
    x: &[i8],
) -> [[f32; 4]; 2] {
    use std::arch::x86_64::*;
    let blocks = s0.len();
    let cols = blocks * BLOCK;
    assert!(s1.len() == blocks && w0.len() >= cols && w1.len() >= cols);
    assert!(x.len() >= 4 * cols && x_scales.len() >= 4 * blocks);
    let ones = _mm256_set1_epi16(1);
    let mut acc0 = [_mm256_setzero_ps(); 4];
    let mut acc1 = [_mm256_setzero_ps(); 4];
    for b in 0..blocks {
        // SAFETY: every block read lies inside the slices (asserted above).
        let wv0 = _mm256_loadu_si256(w0.as_ptr().add(b * BLOCK) as *const __m256i);
        let wv1 = _mm256_loadu_si256(w1.as_ptr().add(b * BLOCK) as *const __m256i);
        let abs0 = _mm256_sign_epi8(wv0, wv0);
        let abs1 = _mm256_sign_epi8(wv1, wv1);
        let (ws0, ws1) = (*s0.get_unchecked(b), *s1.get_unchecked(b));
        for k in 0..4 {
            let xv = _mm256_loadu_si256(x.as_ptr().add(k * cols + b * BLOCK) as *const __m256i);
            let xs = *x_scales.get_unchecked(k * blocks + b);
            let p0 = _mm256_maddubs_epi16(abs0, _mm256_sign_epi8(xv, wv0));
            let p1 = _mm256_maddubs_epi16(abs1, _mm256_sign_epi8(xv, wv1));
            let f0 = _mm256_cvtepi32_ps(_mm256_madd_epi16(p0, ones));
            let f1 = _mm256_cvtepi32_ps(_mm256_madd_epi16(p1, ones));
            acc0[k] = _mm256_fmadd_ps(_mm256_set1_ps(ws0 * xs), f0, acc0[k]);
            acc1[k] = _mm256_fmadd_ps(_mm256_set1_ps(ws1 * xs), f1, acc1[k]);
        }
    }
    [acc0.map(|v| hsum(v)), acc1.map(|v| hsum(v))]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let quad = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_quantization_matches_the_plain_loop() {
        // Ties (k + 0.5 after scaling), zeros, negatives and a zero block.
        let mut values: Vec<f32> = (0..32 * 40)
            .map(|i| ((i * 7919 % 2001) as f32 - 1000.0) * 0.013)
            .collect();
        values[..32].iter_mut().for_each(|v| *v = 0.0);
        for (i, v) in values[32..64].iter_mut().enumerate() {
            *v = if i == 0 { 127.0 } else { i as f32 - 0.5 };
        }
        let (mut s1, mut q1, mut s2, mut q2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        quantize_plain(&values, &mut s1, &mut q1);
        quantize_into(&values, &mut s2, &mut q2);
        assert_eq!(s1, s2);
        assert_eq!(q1, q2);
        assert_eq!(q1[33], 0, "0.5 rounds to even");
        assert_eq!(q1[34], 2, "1.5 rounds to even");
    }

    #[test]
    fn int8_products_are_close_to_f32() {
        let (rows, cols, n) = (70, 96, 6);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05)
            .collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 104_729 % 997) as f32 / 498.0 - 1.0) * 2.0)
            .collect();
        let q = Q8Matrix::from_rows(&w, rows, cols).expect("96 is a multiple of 32");
        let got = q.matmul(&x, n);
        let mut worst = 0f32;
        let mut scale = 0f32;
        for i in 0..n {
            for r in 0..rows {
                let exact: f32 = (0..cols).map(|k| x[i * cols + k] * w[r * cols + k]).sum();
                worst = worst.max((exact - got[i * rows + r]).abs());
                scale = scale.max(exact.abs());
            }
        }
        assert!(worst / scale < 0.02, "{worst} of {scale}");
        // A row's result does not depend on the rows beside it (batches of 4 take
        // another code path than single rows): bit for bit.
        for i in 0..n {
            let alone = q.matmul(&x[i * cols..(i + 1) * cols], 1);
            assert_eq!(alone, got[i * rows..(i + 1) * rows].to_vec(), "row {i}");
        }
        assert!(Q8Matrix::from_rows(&w[..rows * 30], rows, 30).is_none());
        // The AVX2 kernel and the plain loop agree (up to f32 summation order).
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let b = cols / BLOCK;
            let plain = dot_plain(
                &q.scales[..b],
                &q.quants[..cols],
                &q.scales[b..2 * b],
                &q.quants[cols..2 * cols],
            );
            // SAFETY: AVX2 was detected.
            let fast = unsafe {
                dot_avx2(
                    &q.scales[..b],
                    &q.quants[..cols],
                    &q.scales[b..2 * b],
                    &q.quants[cols..2 * cols],
                )
            };
            assert!(
                (plain - fast).abs() <= 1e-5 * plain.abs().max(1.0),
                "{plain} vs {fast}"
            );
        }
    }
}
