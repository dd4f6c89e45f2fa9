//! Matrix products with 8-bit weights on the CPU, written for batches.
//!
//! candle 0.11's quantised product handles one activation row at a time
//! against each weight block: one accumulator (so every block waits for the
//! previous fused multiply-add) and two f16 scale conversions per block and
//! row. With k rows, as RAG's k passages give, the same weight block is
//! loaded, sign-split and scaled k times. Here weights are kept as Q8_0
//! (32 signed bytes and one scale per block, the scale already in f32) and
//! every block is multiplied into up to [`TILE`] activation rows while it is
//! in registers, each row with its own accumulator. Activations are
//! quantised to the same 8-bit blocks first, as llama.cpp and candle do.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

type Result<T> = candle_core::Result<T>;

/// Values per quantisation block.
const BLOCK: usize = 32;
/// Activation rows multiplied against one weight block at a time.
const TILE: usize = 8;

/// A weight matrix [out, in] in 8-bit blocks.
pub struct Q8Matrix {
    out: usize,
    inner: usize,
    /// [out, inner] quantised values.
    values: Vec<i8>,
    /// [out, inner / BLOCK] block scales.
    scales: Vec<f32>,
}

/// Activation rows quantised to 8-bit blocks.
struct Q8Rows {
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl Q8Matrix {
    /// Re-quantises `weights` [out, in] (any GGUF type) to 8-bit blocks; the
    /// inner size must be a multiple of 32.
    pub fn from_qtensor(weights: &QTensor) -> Result<Q8Matrix> {
        let (out, inner) = weights.shape().dims2()?;
        if inner % BLOCK != 0 {
            candle_core::bail!("inner size {inner} is not a multiple of {BLOCK}");
        }
        let dense = weights.dequantize(&Device::Cpu)?;
        let rows: Vec<f32> = dense.flatten_all()?.to_vec1()?;
        let q = quantise(&rows, inner);
        // Q8_0 weights stay Q8_0: the same grid, so re-quantising changes nothing.
        debug_assert!(weights.dtype() != GgmlDType::Q8_0 || q.values.len() == out * inner);
        Ok(Q8Matrix {
            out,
            inner,
            values: q.values,
            scales: q.scales,
        })
    }

    /// The matrices one above the other: [sum of outs, in].
    pub fn stack(parts: Vec<Q8Matrix>) -> Result<Q8Matrix> {
        let mut parts = parts.into_iter();
        let mut stacked = parts
            .next()
            .ok_or_else(|| candle_core::Error::Msg("nothing to stack".into()))?;
        for part in parts {
            if part.inner != stacked.inner {
                candle_core::bail!(
                    "stacking a {}-wide matrix on a {}-wide one",
                    part.inner,
                    stacked.inner
                );
            }
            stacked.out += part.out;
            stacked.values.extend(part.values);
            stacked.scales.extend(part.scales);
        }
        Ok(stacked)
    }

    /// Rows `ids` of the matrix in f32: [ids.len(), in] (embedding lookup).
    pub fn rows(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let blocks = self.inner / BLOCK;
        let mut out = Vec::with_capacity(ids.len() * self.inner);
        for &id in ids {
            let row = id as usize;
            if row >= self.out {
                candle_core::bail!("row {row} of a matrix of {} rows", self.out);
            }
            let values = &self.values[row * self.inner..(row + 1) * self.inner];
            let scales = &self.scales[row * blocks..(row + 1) * blocks];
            for (block, scale) in values.chunks_exact(BLOCK).zip(scales) {
                out.extend(block.iter().map(|&v| v as f32 * scale));
            }
        }
        Tensor::from_vec(out, (ids.len(), self.inner), device)
    }

    /// `x` [.., in] times the transposed weights: [.., out].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let inner = *dims.last().unwrap_or(&0);
        if inner != self.inner {
            candle_core::bail!(
                "input of size {inner} for a {}x{} matrix",
                self.out,
                self.inner
            );
        }
        let rows = x.elem_count() / inner.max(1);
        let input: Vec<f32> = x
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        let q = quantise(&input, inner);
        let output = self.multiply(&q, rows);
        let mut shape = dims;
        *shape.last_mut().expect("checked above") = self.out;
        Tensor::from_vec(output, shape, x.device())
    }

    /// Products of all rows with every output column: [rows, out].
    fn multiply(&self, x: &Q8Rows, rows: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.out * rows];
        let avx2 = has_avx2_fma();
        // One row (decoding one sequence): four columns at a time, so that
        // four accumulators hide the multiply-add latency. Several rows: one
        // column by up to eight rows.
        let group = if rows == 1 { 4 } else { 1 };
        let groups = self.out.div_ceil(group);
        let dst = out.as_mut_ptr() as usize;
        // candle's own worker pool, which its other operations use between
        // these products: a second pool would fight it for the cores.
        candle_core::utils::barrier_pool().execute_chunked(groups, |range| {
            for g in range {
                let column = g * group;
                let width = (self.out - column).min(group);
                let mut r = 0;
                while r < rows {
                    let height = (rows - r).min(TILE);
                    let mut block = [[0f32; TILE]; 4];
                    self.tile(x, column, width, r, height, avx2, &mut block);
                    for (c, values) in block.iter().enumerate().take(width) {
                        for (dr, value) in values.iter().enumerate().take(height) {
                            // SAFETY: column group `g` alone writes columns
                            // column..column + width of `out`, which outlives the pool call.
                            unsafe {
                                *(dst as *mut f32).add((r + dr) * self.out + column + c) = *value
                            };
                        }
                    }
                    r += height;
                }
            }
        });
        out
    }

    /// Columns `column..column + width` (at most 4) times rows `row..row +
    /// height` (at most [`TILE`]) into `out[c][r]`.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        x: &Q8Rows,
        column: usize,
        width: usize,
        row: usize,
        height: usize,
        avx2: bool,
        out: &mut [[f32; TILE]; 4],
    ) {
        let blocks = self.inner / BLOCK;
        let w = &self.values[column * self.inner..(column + width) * self.inner];
        let wd = &self.scales[column * blocks..(column + width) * blocks];
        let xv = &x.values[row * self.inner..(row + height) * self.inner];
        let xd = &x.scales[row * blocks..(row + height) * blocks];
        if !avx2 {
            return tile_scalar(w, wd, xv, xd, self.inner, width, height, out);
        }
        // SAFETY: AVX2 and FMA were detected at run time; the slices hold
        // exactly `width` weight rows and `height` activation rows.
        unsafe {
            match (width, height) {
                (4, 1) => tile_avx2::<4, 1>(w, wd, xv, xd, self.inner, out),
                (3, 1) => tile_avx2::<3, 1>(w, wd, xv, xd, self.inner, out),
                (2, 1) => tile_avx2::<2, 1>(w, wd, xv, xd, self.inner, out),
                (1, 1) => tile_avx2::<1, 1>(w, wd, xv, xd, self.inner, out),
                (1, 2) => tile_avx2::<1, 2>(w, wd, xv, xd, self.inner, out),
                (1, 3) => tile_avx2::<1, 3>(w, wd, xv, xd, self.inner, out),
                (1, 4) => tile_avx2::<1, 4>(w, wd, xv, xd, self.inner, out),
                (1, 5) => tile_avx2::<1, 5>(w, wd, xv, xd, self.inner, out),
                (1, 6) => tile_avx2::<1, 6>(w, wd, xv, xd, self.inner, out),
                (1, 7) => tile_avx2::<1, 7>(w, wd, xv, xd, self.inner, out),
                (1, 8) => tile_avx2::<1, 8>(w, wd, xv, xd, self.inner, out),
                _ => tile_scalar(w, wd, xv, xd, self.inner, width, height, out),
            }
        }
    }
}

/// Whether this CPU has the AVX2 and FMA instructions the kernels use.
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of `inner` values to 8-bit blocks: scale = max |v| / 127.
fn quantise(values: &[f32], inner: usize) -> Q8Rows {
    let blocks = values.len() / BLOCK;
    let mut q = Q8Rows {
        values: vec![0; values.len()],
        scales: vec![0.0; blocks],
    };
    debug_assert_eq!(values.len() % inner, 0);
    for ((block, out), scale) in values
        .chunks_exact(BLOCK)
        .zip(q.values.chunks_exact_mut(BLOCK))
        .zip(&mut q.scales)
    {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        *scale = amax / 127.0;
        let inverse = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (o, v) in out.iter_mut().zip(block) {
            // Rounds half away from zero as f32::round, without its libm call.
            let scaled = v * inverse;
            *o = (scaled + 0.5f32.copysign(scaled)) as i8;
        }
    }
    q
}

/// Dot products of `width` weight rows `w` with `height` activation rows
/// `xv` (8-bit blocks with scales `wd` and `xd`) into `out[c][r]`.
#[allow(clippy::too_many_arguments)]
fn tile_scalar(
    w: &[i8],
    wd: &[f32],
    xv: &[i8],
    xd: &[f32],
    inner: usize,
    width: usize,
    height: usize,
    out: &mut [[f32; TILE]; 4],
) {
    let blocks = inner / BLOCK;
    for (c, column) in out.iter_mut().enumerate().take(width) {
        for (r, value) in column.iter_mut().enumerate().take(height) {
            *value = (0..blocks)
                .map(|b| {
                    let at = |row: usize| row * inner + b * BLOCK..row * inner + (b + 1) * BLOCK;
                    let s: i32 = w[at(c)]
                        .iter()
                        .zip(&xv[at(r)])
                        .map(|(&a, &z)| a as i32 * z as i32)
                        .sum();
                    s as f32 * wd[c * blocks + b] * xd[r * blocks + b]
                })
                .sum();
        }
    }
}

/// [`tile_scalar`] with AVX2 for a fixed tile of `C` columns by `R` rows:
/// every weight block is loaded and made unsigned once and multiplied into
/// all `R` rows, each (column, row) accumulating in its own register.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const C: usize, const R: usize>(
    w: &[i8],
    wd: &[f32],
    xv: &[i8],
    xd: &[f32],
    inner: usize,
    out: &mut [[f32; TILE]; 4],
) {
    use std::arch::x86_64::*;
    let blocks = inner / BLOCK;
    // Every load below stays inside these bounds.
    assert!(w.len() >= C * inner && wd.len() >= C * blocks);
    assert!(xv.len() >= R * inner && xd.len() >= R * blocks);
    assert!(C <= 4 && R <= TILE);
    let mut acc = [[_mm256_setzero_ps(); R]; C];
    let ones = _mm256_set1_epi16(1);
    for b in 0..blocks {
        for (c, acc) in acc.iter_mut().enumerate() {
            // SAFETY: as above, for the C weight rows.
            let wv = unsafe {
                _mm256_loadu_si256(w.as_ptr().add(c * inner + b * BLOCK) as *const __m256i)
            };
            // maddubs multiplies unsigned by signed bytes: |w| times x carrying w's sign.
            let w_abs = _mm256_sign_epi8(wv, wv);
            // SAFETY: c * blocks + b < C * blocks (asserted).
            let w_scale = unsafe { _mm256_broadcast_ss(wd.get_unchecked(c * blocks + b)) };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r * inner + b * BLOCK + 32 <= R * inner (asserted).
                let x = unsafe {
                    _mm256_loadu_si256(xv.as_ptr().add(r * inner + b * BLOCK) as *const __m256i)
                };
                let pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x, wv));
                let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                // SAFETY: r * blocks + b < R * blocks (asserted). A broadcast
                // straight from memory costs no shuffle.
                let x_scale = unsafe { _mm256_broadcast_ss(xd.get_unchecked(r * blocks + b)) };
                *acc = _mm256_fmadd_ps(w_scale, _mm256_mul_ps(x_scale, sums), *acc);
            }
        }
    }
    for (c, acc) in acc.iter().enumerate() {
        for (r, v) in acc.iter().enumerate() {
            let high = _mm256_extractf128_ps(*v, 1);
            let sum = _mm_add_ps(high, _mm256_castps256_ps128(*v));
            let sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
            let sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
            out[c][r] = _mm_cvtss_f32(sum);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_avx2<const C: usize, const R: usize>(
    w: &[i8],
    wd: &[f32],
    xv: &[i8],
    xd: &[f32],
    inner: usize,
    out: &mut [[f32; TILE]; 4],
) {
    tile_scalar(w, wd, xv, xd, inner, C, R, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_f32_within_quantisation_error() {
        let (out, inner, rows) = (37, 96, 11);
        let w: Vec<f32> = (0..out * inner)
            .map(|i| ((i * 7919) % 251) as f32 / 125.0 - 1.0)
            .collect();
        let x: Vec<f32> = (0..rows * inner)
            .map(|i| ((i * 104729) % 241) as f32 / 60.0 - 2.0)
            .collect();
        let wt = Tensor::from_vec(w.clone(), (out, inner), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::F32).unwrap();
        let m = Q8Matrix::from_qtensor(&q).unwrap();
        let xt = Tensor::from_vec(x.clone(), (rows, inner), &Device::Cpu).unwrap();
        let got: Vec<Vec<f32>> = m.forward(&xt).unwrap().to_vec2().unwrap();
        let expected: Vec<Vec<f32>> = xt.matmul(&wt.t().unwrap()).unwrap().to_vec2().unwrap();
        for (g, e) in got.iter().flatten().zip(expected.iter().flatten()) {
            // Two 8-bit roundings per product: well under 2 % of the scale of a sum of 96 terms.
            assert!((g - e).abs() < 0.3, "{g} vs {e}");
        }
        // Every tile shape of the vector path agrees with the scalar path.
        if has_avx2_fma() {
            let xq = quantise(&x, inner);
            for (width, height) in [
                (4, 1),
                (3, 1),
                (2, 1),
                (1, 1),
                (1, 2),
                (1, 3),
                (1, 4),
                (1, 5),
                (1, 6),
                (1, 7),
                (1, 8),
            ] {
                let mut vector = [[0f32; TILE]; 4];
                let mut scalar = [[0f32; TILE]; 4];
                m.tile(&xq, 5, width, 3, height, true, &mut vector);
                m.tile(&xq, 5, width, 3, height, false, &mut scalar);
                for (a, b) in vector.iter().flatten().zip(scalar.iter().flatten()) {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "{width}x{height}: {a} vs {b}"
                    );
                }
                assert!(vector[width - 1][height - 1] != 0.0);
            }
        }
    }
}
