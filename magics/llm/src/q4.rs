//! 4-bit weights for decoding on the CPU, in GGUF's Q4_1 layout.
//!
//! A Q4_1 model file stores each run of 32 weights as 4-bit integers `q` with an
//! f16 step `d` and an f16 minimum `m` (value = q·d + m): 0.625 bytes a parameter
//! (0.75 here, where `d` and `m` are kept as f32 for the kernel).
//! Loading dequantizes them to f32 for training and long prompts; decoding one token
//! is bound by how many bytes of weights it reads, so it reads them in this layout
//! again (two thirds of the bytes of the int8 copy in `q8.rs`).
//!
//! Only weights that *are* Q4_1 values are kept this way: [`Q4Matrix::from_rows`]
//! quantizes the f32 rows as llama.cpp does and accepts the result only if it gives
//! back every value bit for bit, which is the case for a matrix read from a Q4_1
//! tensor. Anything else (a merged fine-tune, an f32 model) stays in int8, so this
//! layout never adds an error of its own.
//!
//! The activations are quantized to int8 blocks as in `q8.rs`; a block's dot product
//! is then `d_w·d_x·Σ q_w·q_x + m_w·d_x·Σ q_x`, the integer part done with AVX-512
//! VNNI's byte dot product or AVX2's unsigned-by-signed byte multiply-add, whichever
//! the processor has.

#[cfg(target_arch = "x86_64")]
use crate::q8::hsum;
use crate::q8::{Activations, Rows, BLOCK};
use half::f16;

/// Bytes of 4-bit values per block.
const PACKED: usize = BLOCK / 2;

/// A `[rows, cols]` matrix of Q4_1 blocks.
pub struct Q4Matrix {
    rows: usize,
    cols: usize,
    /// Per block, the step `d` and the minimum `m` (f16 values, kept as f32 so
    /// the kernel reads them directly).
    d: Vec<f32>,
    m: Vec<f32>,
    /// Per block 16 bytes: byte `j` holds value `j` in its low half and value
    /// `j + 16` in its high half (GGUF's order).
    packed: Vec<u8>,
}

impl Q4Matrix {
    /// The Q4_1 form of `weights` (`[rows, cols]`, row-major), or `None` when `cols`
    /// is not a multiple of 32 or when the weights are not exactly Q4_1 values.
    pub fn from_rows(weights: &[f32], rows: usize, cols: usize) -> Option<Q4Matrix> {
        if !cols.is_multiple_of(BLOCK) || weights.len() != rows * cols {
            return None;
        }
        let blocks = weights.len() / BLOCK;
        let (mut ds, mut ms) = (Vec::with_capacity(blocks), Vec::with_capacity(blocks));
        let mut packed = Vec::with_capacity(blocks * PACKED);
        for block in weights.chunks_exact(BLOCK) {
            let (d, m, q) = quantize_block(block);
            let (df, mf) = (d.to_f32(), m.to_f32());
            // The same arithmetic as the dequantization that produced the f32
            // weights (candle's, llama.cpp's): q·d + m, no fused multiply-add.
            if q.iter()
                .zip(block)
                .any(|(&q, &v)| dequantize(q, df, mf) != v)
            {
                return None;
            }
            ds.push(df);
            ms.push(mf);
            packed.extend((0..PACKED).map(|j| q[j] | (q[j + PACKED] << 4)));
        }
        Some(Q4Matrix {
            rows,
            cols,
            d: ds,
            m: ms,
            packed,
        })
    }

    fn row(&self, r: usize) -> Row<'_> {
        let blocks = self.cols / BLOCK;
        Row {
            d: &self.d[r * blocks..(r + 1) * blocks],
            m: &self.m[r * blocks..(r + 1) * blocks],
            packed: &self.packed[r * blocks * PACKED..(r + 1) * blocks * PACKED],
        }
    }
}

impl Rows for Q4Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    /// Output rows `first..` (as many as `out_t` holds, `[rows, n]`) against every
    /// input: four inputs per pass over a weight row (each block is unpacked once
    /// for all four), the rest one by one. Both paths give the same sums in the same
    /// order, so a sequence's result does not depend on the batch it is in.
    fn rows_into(&self, first: usize, out_t: &mut [f32], x: &Activations) {
        let n = x.n;
        let x = Inputs::from(x);
        for (local, outs) in out_t.chunks_mut(n).enumerate() {
            let row = self.row(first + local);
            let mut i = 0;
            while i + 4 <= n {
                outs[i..i + 4].copy_from_slice(&dot::<4>(&row, &x.slice(i, 4)));
                i += 4;
            }
            for (j, out) in outs.iter_mut().enumerate().skip(i) {
                *out = dot::<1>(&row, &x.slice(j, 1))[0];
            }
        }
    }
}

/// `values` (a multiple of 32) quantized to Q4_1 and back: what a GGUF loader gives
/// for them. For tests and benchmarks of the 4-bit path.
pub fn round_trip(values: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(values.len());
    for block in values.chunks(BLOCK) {
        let (d, m, q) = quantize_block(block);
        out.extend(
            q[..block.len()]
                .iter()
                .map(|&q| dequantize(q, d.to_f32(), m.to_f32())),
        );
    }
    out
}

/// llama.cpp's Q4_1 quantization of one block: d = (max − min)/15, m = min,
/// q = round((v − min)/d) capped at 15; d and m stored as f16.
fn quantize_block(block: &[f32]) -> (f16, f16, [u8; BLOCK]) {
    let (min, max) = block
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let d = (max - min) / 15.0;
    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; BLOCK];
    for (q, &v) in q.iter_mut().zip(block) {
        *q = (((v - min) * inv + 0.5) as u8).min(15);
    }
    (f16::from_f32(d), f16::from_f32(min), q)
}

#[inline(always)]
fn dequantize(q: u8, d: f32, m: f32) -> f32 {
    q as f32 * d + m
}

struct Row<'a> {
    d: &'a [f32],
    m: &'a [f32],
    packed: &'a [u8],
}

/// Quantized activations: `blocks` blocks per input row.
struct Inputs<'a> {
    scales: &'a [f32],
    sums: &'a [f32],
    quants: &'a [i8],
    blocks: usize,
}

impl<'a> From<&'a Activations> for Inputs<'a> {
    fn from(x: &'a Activations) -> Inputs<'a> {
        Inputs {
            scales: &x.scales,
            sums: &x.sums,
            quants: &x.quants,
            blocks: x.blocks,
        }
    }
}

impl<'a> Inputs<'a> {
    /// Inputs `first..first + count`.
    fn slice(&self, first: usize, count: usize) -> Inputs<'a> {
        let b = self.blocks;
        Inputs {
            scales: &self.scales[first * b..(first + count) * b],
            sums: &self.sums[first * b..(first + count) * b],
            quants: &self.quants[first * b * BLOCK..(first + count) * b * BLOCK],
            blocks: b,
        }
    }

    fn count(&self) -> usize {
        self.scales.len() / self.blocks.max(1)
    }
}

/// One weight row against the `N` inputs of `x`.
fn dot<const N: usize>(row: &Row, x: &Inputs) -> [f32; N] {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the processor has the AVX-512 parts used, checked just above.
            return unsafe { dot_avx512::<N>(row, x) };
        }
        if has_avx2() {
            // SAFETY: the processor has AVX2 and FMA, checked just above.
            return unsafe { dot_avx2::<N>(row, x) };
        }
    }
    dot_plain::<N>(row, x)
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    has_avx2()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// The reference: per block, the integer dot product scaled by d_w·d_x, plus m_w
/// times the input block's sum.
fn dot_plain<const N: usize>(row: &Row, x: &Inputs) -> [f32; N] {
    assert!(x.count() >= N);
    let mut out = [0f32; N];
    for (k, out) in out.iter_mut().enumerate() {
        let (mut total, mut mins) = (0f32, 0f32);
        for b in 0..row.d.len() {
            let (d, m) = (row.d[b], row.m[b]);
            let packed = &row.packed[b * PACKED..(b + 1) * PACKED];
            let xq = &x.quants[(k * x.blocks + b) * BLOCK..(k * x.blocks + b + 1) * BLOCK];
            let mut acc = 0i32;
            for j in 0..PACKED {
                acc += (packed[j] & 0x0F) as i32 * xq[j] as i32;
                acc += (packed[j] >> 4) as i32 * xq[j + PACKED] as i32;
            }
            total += d * x.scales[k * x.blocks + b] * acc as f32;
            mins += m * x.sums[k * x.blocks + b];
        }
        *out = total + mins;
    }
    out
}

/// The number of blocks in `row`, after checking that `row` and `N` inputs of `x`
/// hold every block the vector kernels read (their unchecked loads rely on it).
#[cfg(target_arch = "x86_64")]
fn checked_blocks<const N: usize>(row: &Row, x: &Inputs) -> usize {
    let blocks = row.d.len();
    assert!(row.m.len() == blocks && x.blocks == blocks && row.packed.len() >= blocks * PACKED);
    assert!(x.quants.len() >= N * blocks * BLOCK && x.sums.len() >= N * blocks);
    assert!(x.scales.len() >= N * blocks);
    blocks
}

/// [`dot_plain`] eight lanes at a time: each block's 16 bytes become 32 unsigned
/// bytes (low halves, then high halves), multiplied by the input's signed bytes in
/// 16-bit pairs (`maddubs`; at most 2·15·127, no saturation), summed to 32 bits
/// (`madd`) and accumulated in f32 with one fused multiply-add per block and input;
/// the minimums' part is a dot product of `m` with the inputs' block sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2<const N: usize>(row: &Row, x: &Inputs) -> [f32; N] {
    use std::arch::x86_64::*;
    let blocks = checked_blocks::<N>(row, x);
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); N];
    // SAFETY: every read lies inside the slices (asserted above); unaligned loads.
    for b in 0..blocks {
        let raw = _mm_loadu_si128(row.packed.as_ptr().add(b * PACKED) as *const __m128i);
        let w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low);
        let dw = *row.d.get_unchecked(b);
        for (k, acc) in acc.iter_mut().enumerate() {
            let at = k * blocks + b;
            let xv = _mm256_loadu_si256(x.quants.as_ptr().add(at * BLOCK) as *const __m256i);
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), ones);
            let scale = _mm256_set1_ps(dw * *x.scales.get_unchecked(at));
            *acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), *acc);
        }
    }
    let mut out = [0f32; N];
    for k in 0..N {
        let (mins, rest) = minimums(row.m, &x.sums[k * blocks..(k + 1) * blocks]);
        out[k] = hsum(_mm256_add_ps(acc[k], mins)) + rest;
    }
    out
}

/// The minimums' part of a row's dot product with one input, Σ m·(d_x·Σ q_x) over
/// the blocks: eight lanes at a time, then the rest one by one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn minimums(m: &[f32], sums: &[f32]) -> (std::arch::x86_64::__m256, f32) {
    use std::arch::x86_64::*;
    let blocks = m.len().min(sums.len());
    let whole = blocks / 8 * 8;
    let mut lanes = _mm256_setzero_ps();
    // SAFETY: reads of 8 at offsets below `whole`, inside both slices.
    for i in (0..whole).step_by(8) {
        let mv = _mm256_loadu_ps(m.as_ptr().add(i));
        lanes = _mm256_fmadd_ps(mv, _mm256_loadu_ps(sums.as_ptr().add(i)), lanes);
    }
    let rest = (whole..blocks).map(|i| m[i] * sums[i]).sum();
    (lanes, rest)
}

/// [`dot_avx2`] two blocks at a time in 512-bit registers, with AVX-512 VNNI's
/// byte dot product (`vpdpbusd`: four unsigned-by-signed byte products summed into
/// each 32-bit lane, at most 4·15·127, no overflow) in place of `maddubs` + `madd`.
/// An odd last block goes through 256-bit registers. The same order of sums for any
/// number of inputs, so a sequence's result does not depend on its batch.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn dot_avx512<const N: usize>(row: &Row, x: &Inputs) -> [f32; N] {
    use std::arch::x86_64::*;
    let blocks = checked_blocks::<N>(row, x);
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); N];
    // SAFETY: every read lies inside the slices (asserted above); unaligned loads.
    for b in (0..blocks / 2 * 2).step_by(2) {
        let raw = _mm256_loadu_si256(row.packed.as_ptr().add(b * PACKED) as *const __m256i);
        let lo = _mm256_and_si256(raw, low);
        let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
        // 128-bit lanes [b low, b+1 low, b high, b+1 high] → [b low, b high, b+1 low,
        // b+1 high]: each block's 32 values in order, as the inputs hold them.
        let both = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        let w = _mm512_shuffle_i64x2(both, both, 0b11_01_10_00);
        let (d0, d1) = (*row.d.get_unchecked(b), *row.d.get_unchecked(b + 1));
        for (k, acc) in acc.iter_mut().enumerate() {
            let at = k * blocks + b;
            let xv = _mm512_loadu_si512(x.quants.as_ptr().add(at * BLOCK) as *const __m512i);
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, xv);
            let s0 = _mm256_set1_ps(d0 * *x.scales.get_unchecked(at));
            let s1 = _mm256_set1_ps(d1 * *x.scales.get_unchecked(at + 1));
            let scale = _mm512_insertf32x8(_mm512_castps256_ps512(s0), s1, 1);
            *acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), *acc);
        }
    }
    let mut tail = [_mm256_setzero_ps(); N];
    if blocks % 2 == 1 {
        let b = blocks - 1;
        let raw = _mm_loadu_si128(row.packed.as_ptr().add(b * PACKED) as *const __m128i);
        let w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low);
        let dw = *row.d.get_unchecked(b);
        for (k, tail) in tail.iter_mut().enumerate() {
            let at = k * blocks + b;
            let xv = _mm256_loadu_si256(x.quants.as_ptr().add(at * BLOCK) as *const __m256i);
            let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, xv);
            let scale = _mm256_set1_ps(dw * *x.scales.get_unchecked(at));
            *tail = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot), *tail);
        }
    }
    let mut out = [0f32; N];
    for k in 0..N {
        let (mins, rest) = minimums(row.m, &x.sums[k * blocks..(k + 1) * blocks]);
        out[k] = _mm512_reduce_add_ps(acc[k]) + hsum(_mm256_add_ps(tail[k], mins)) + rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights that are Q4_1 values, as a GGUF loader produces them: random blocks
    /// quantized and dequantized.
    fn q4_values(rows: usize, cols: usize) -> Vec<f32> {
        let raw: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05 + (i / 32 % 7) as f32 * 0.01)
            .collect();
        round_trip(&raw)
    }

    #[test]
    fn q4_1_values_are_kept_exactly_and_others_refused() {
        let (rows, cols) = (6, 96);
        let w = q4_values(rows, cols);
        let q = Q4Matrix::from_rows(&w, rows, cols).expect("Q4_1 values");
        for r in 0..rows {
            let row = q.row(r);
            for b in 0..row.d.len() {
                let (d, m) = (row.d[b], row.m[b]);
                for j in 0..BLOCK {
                    let byte = row.packed[b * PACKED + j % PACKED];
                    let v = if j < PACKED { byte & 0x0F } else { byte >> 4 };
                    assert_eq!(dequantize(v, d, m), w[r * cols + b * BLOCK + j]);
                }
            }
        }
        // A constant block (d = 0) is a Q4_1 value too.
        let mut flat = w.clone();
        flat[..BLOCK].iter_mut().for_each(|v| *v = 0.25);
        assert!(Q4Matrix::from_rows(&flat, rows, cols).is_some());
        // Anything that is not: one weight nudged by a step of f32.
        let mut nudged = w.clone();
        nudged[40] = f32::from_bits(nudged[40].to_bits() + 1);
        assert!(Q4Matrix::from_rows(&nudged, rows, cols).is_none());
        assert!(Q4Matrix::from_rows(&w[..rows * 30], rows, 30).is_none());
    }

    #[test]
    fn q4_products_match_f32_and_do_not_depend_on_the_batch() {
        let (rows, cols, n) = (70, 96, 7);
        let w = q4_values(rows, cols);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 104_729 % 997) as f32 / 498.0 - 1.0) * 2.0)
            .collect();
        let q = Q4Matrix::from_rows(&w, rows, cols).expect("Q4_1 values");
        let got = q.matmul(&x, n);
        let (mut worst, mut scale) = (0f32, 0f32);
        for i in 0..n {
            for r in 0..rows {
                let exact: f32 = (0..cols).map(|k| x[i * cols + k] * w[r * cols + k]).sum();
                worst = worst.max((exact - got[i * rows + r]).abs());
                scale = scale.max(exact.abs());
            }
        }
        // Only the activations are rounded (to int8): the same error as q8.rs's.
        assert!(worst / scale < 0.02, "{worst} of {scale}");
        for i in 0..n {
            let alone = q.matmul(&x[i * cols..(i + 1) * cols], 1);
            assert_eq!(alone, got[i * rows..(i + 1) * rows].to_vec(), "row {i}");
        }
        // The vector kernel and the reference loop agree (up to summation order).
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            let acts = Activations::new(&x, 4, cols);
            let inputs = Inputs::from(&acts);
            for r in 0..rows {
                let plain = dot_plain::<4>(&q.row(r), &inputs);
                // SAFETY: the features were detected.
                let mut fast = vec![unsafe { dot_avx2::<4>(&q.row(r), &inputs) }];
                if has_avx512() {
                    // SAFETY: the features were detected.
                    fast.push(unsafe { dot_avx512::<4>(&q.row(r), &inputs) });
                }
                for fast in fast {
                    for k in 0..4 {
                        assert!(
                            (plain[k] - fast[k]).abs() <= 1e-5 * plain[k].abs().max(1.0),
                            "row {r} input {k}: {} vs {}",
                            plain[k],
                            fast[k]
                        );
                    }
                }
            }
        }
    }
}
