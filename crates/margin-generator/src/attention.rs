//! Grouped-query attention over a key/value cache on the CPU: f32 queries
//! and arithmetic over an f16 cache.
//!
//! Decoding k rows runs, per layer, k × key-heads tiny matrix products (a
//! few query heads against the cache); through candle each is a call into
//! the gemm crate with its packing, all on one thread. Here every (row,
//! query head) is one work item on candle's worker pool, keys hidden by the
//! mask are skipped rather than computed and zeroed, and the output comes
//! out in the [rows, n, heads × head_dim] layout the output projection reads.

use candle_core::{Storage, Tensor};
use half::f16;

use crate::q8::has_avx2_fma;

/// Whether the vector paths below can run: AVX2, FMA and F16C.
pub(crate) fn has_avx2_fma_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2_fma() && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

type Result<T> = candle_core::Result<T>;

/// Shapes of one attention call.
pub(crate) struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (each shared by heads / kv_heads query heads).
    pub kv_heads: usize,
    /// Size of every head.
    pub head_dim: usize,
    /// New positions per row.
    pub n: usize,
    /// Cache positions in use, new ones included.
    pub slots: usize,
}

/// Attention of `q` [rows, heads, n, head_dim] (f32) over the first
/// `shape.slots` positions of the f16 cache buffers `k` and `v` [rows,
/// kv_heads, capacity, head_dim]; `visible[(r * n + i) * slots + j]` says whether query `i` of
/// row `r` sees key `j`. Returns [rows, n, heads × head_dim].
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    visible: &[bool],
    shape: &AttentionShape,
) -> Result<Tensor> {
    let AttentionShape {
        heads,
        kv_heads,
        head_dim,
        n,
        slots,
    } = *shape;
    let rows = q.dim(0)?;
    let capacity = k.dim(2)?;
    let queries: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (k_storage, k_layout) = k.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let (keys, values) = match (&*k_storage, &*v_storage) {
        (Storage::Cpu(k), Storage::Cpu(v)) => (
            &k.as_slice::<f16>()?[k_layout.start_offset()..],
            &v.as_slice::<f16>()?[v_layout.start_offset()..],
        ),
        _ => candle_core::bail!("CPU attention needs an f16 cache on the CPU"),
    };
    let needed = rows * kv_heads * capacity * head_dim;
    if keys.len() < needed || values.len() < needed || visible.len() < rows * n * slots {
        candle_core::bail!("attention buffers are smaller than their shape");
    }
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let width = heads * head_dim;
    let mut out = vec![0f32; rows * n * width];
    let dst = out.as_mut_ptr() as usize;
    let avx2 = has_avx2_fma_f16c() && head_dim % 8 == 0;
    candle_core::utils::barrier_pool().execute_chunked(rows * heads, |range| {
        let mut weights = vec![0f32; slots];
        for item in range {
            let (r, h) = (item / heads, item % heads);
            let base = (r * kv_heads + h / group) * capacity * head_dim;
            for i in 0..n {
                let query = &queries[((r * heads + h) * n + i) * head_dim..][..head_dim];
                let seen = &visible[(r * n + i) * slots..][..slots];
                let keys = &keys[base..base + slots * head_dim];
                scores(query, keys, avx2, &mut weights);
                let mut max = f32::NEG_INFINITY;
                for (w, seen) in weights.iter_mut().zip(seen) {
                    *w = if *seen { *w * scale } else { f32::NEG_INFINITY };
                    max = max.max(*w);
                }
                // SAFETY: item (r, h) alone writes head h of row r's outputs,
                // inside `out`, which outlives the pool call.
                let output = unsafe {
                    std::slice::from_raw_parts_mut(
                        (dst as *mut f32).add((r * n + i) * width + h * head_dim),
                        head_dim,
                    )
                };
                if max == f32::NEG_INFINITY {
                    // A padding query that sees nothing: its output is never read.
                    continue;
                }
                let mut total = 0.0;
                for w in weights.iter_mut() {
                    *w = (*w - max).exp();
                    total += *w;
                }
                let values = &values[base..base + slots * head_dim];
                weighted_sum(output, &weights, 1.0 / total, values, avx2);
            }
        }
    });
    Tensor::from_vec(out, (rows, n, width), q.device())
}

/// Score bias that keeps attention off a key in [`attend_candle`]. Finite,
/// so that a padding query that may see nothing averages instead of
/// producing NaN, which would reach every row through the values.
const HIDDEN: f32 = -1.0e9;

/// [`attend`] through candle's operations, for devices other than the CPU:
/// the cache buffers in the queries' dtype.
pub(crate) fn attend_candle(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    visible: &[bool],
    shape: &AttentionShape,
) -> Result<Tensor> {
    let AttentionShape {
        heads,
        kv_heads,
        head_dim,
        n,
        slots,
    } = *shape;
    let rows = q.dim(0)?;
    let mask: Vec<f32> = visible
        .iter()
        .map(|&v| if v { 0.0 } else { HIDDEN })
        .collect();
    let mask = Tensor::from_vec(mask, (rows, 1, 1, n, slots), q.device())?.to_dtype(q.dtype())?;
    let k = k.narrow(2, 0, slots)?;
    let v = v.narrow(2, 0, slots)?.contiguous()?;
    // Grouped queries: the query heads sharing a key head attend as one
    // matrix, so keys and values are never repeated.
    let group = heads / kv_heads;
    let q = q.reshape((rows, kv_heads, group * n, head_dim))?;
    let scores = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?
        .reshape((rows, kv_heads, group, n, slots))?
        .broadcast_add(&mask)?;
    let weights =
        candle_nn::ops::softmax_last_dim(&scores)?.reshape((rows, kv_heads, group * n, slots))?;
    weights
        .matmul(&v)?
        .reshape((rows, heads, n, head_dim))?
        .transpose(1, 2)?
        .reshape((rows, n, heads * head_dim))
}

/// `out[j]` = query · keys[j] for every row of `keys`.
fn scores(query: &[f32], keys: &[f16], avx2: bool, out: &mut [f32]) {
    if avx2 {
        // SAFETY: AVX2, FMA and F16C were detected; the head size is a multiple of 8.
        unsafe { scores_avx2(query, keys, out) }
    } else {
        for (o, key) in out.iter_mut().zip(keys.chunks_exact(query.len())) {
            *o = query.iter().zip(key).map(|(q, k)| q * k.to_f32()).sum();
        }
    }
}

/// `out` = scale × Σ_j weights[j] × values[j] (rows of `out.len()`), zero weights skipped.
fn weighted_sum(out: &mut [f32], weights: &[f32], scale: f32, values: &[f16], avx2: bool) {
    if avx2 {
        // SAFETY: as in `scores`; `values` holds weights.len() rows of out.len().
        unsafe { weighted_sum_avx2(out, weights, scale, values) }
    } else {
        weighted_sum_scalar(out, weights, scale, values)
    }
}

fn weighted_sum_scalar(out: &mut [f32], weights: &[f32], scale: f32, values: &[f16]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for (w, row) in weights.iter().zip(values.chunks_exact(out.len())) {
        if *w > 0.0 {
            out.iter_mut()
                .zip(row)
                .for_each(|(o, v)| *o += w * v.to_f32());
        }
    }
    out.iter_mut().for_each(|o| *o *= scale);
}

/// [`scores`] four keys at a time, each with its own accumulator.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `query.len()` must be a multiple of 8 and
/// `keys` hold `out.len()` rows of that length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_avx2(query: &[f32], keys: &[f16], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let width = query.len();
    assert!(width.is_multiple_of(8) && keys.len() >= out.len() * width);
    let sum8 = |v: __m256| {
        let high = _mm256_extractf128_ps(v, 1);
        let sum = _mm_add_ps(high, _mm256_castps256_ps128(v));
        let sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
        _mm_cvtss_f32(_mm_add_ss(sum, _mm_movehdup_ps(sum)))
    };
    let mut j = 0;
    while j < out.len() {
        let group = (out.len() - j).min(4);
        let mut acc = [_mm256_setzero_ps(); 4];
        for c in (0..width).step_by(8) {
            // SAFETY: c + 8 <= width = query.len().
            let q = unsafe { _mm256_loadu_ps(query.as_ptr().add(c)) };
            for (g, acc) in acc.iter_mut().enumerate().take(group) {
                // SAFETY: (j + g) width + c + 8 <= out.len() width <= keys.len() (asserted).
                let k = unsafe {
                    _mm256_cvtph_ps(_mm_loadu_si128(
                        keys.as_ptr().add((j + g) * width + c) as *const __m128i
                    ))
                };
                *acc = _mm256_fmadd_ps(q, k, *acc);
            }
        }
        for (g, acc) in acc.iter().enumerate().take(group) {
            out[j + g] = sum8(*acc);
        }
        j += group;
    }
}

/// [`weighted_sum_scalar`] keeping 64 outputs at a time in eight registers
/// while the weighted rows stream past.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `out.len()` must be a multiple of 8 and
/// `values` hold `weights.len()` rows of that length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weighted_sum_avx2(out: &mut [f32], weights: &[f32], scale: f32, values: &[f16]) {
    use std::arch::x86_64::*;
    let width = out.len();
    assert!(width.is_multiple_of(8) && values.len() >= weights.len() * width);
    let mut start = 0;
    while start < width {
        let lanes = ((width - start) / 8).min(8);
        let mut acc = [_mm256_setzero_ps(); 8];
        for (j, w) in weights.iter().enumerate() {
            if *w > 0.0 {
                let w = _mm256_set1_ps(*w);
                let row = j * width + start;
                for (l, acc) in acc.iter_mut().enumerate().take(lanes) {
                    // SAFETY: row + 8 l + 8 <= (j + 1) width <= values.len() (asserted).
                    let v = unsafe {
                        _mm256_cvtph_ps(_mm_loadu_si128(
                            values.as_ptr().add(row + 8 * l) as *const __m128i
                        ))
                    };
                    *acc = _mm256_fmadd_ps(w, v, *acc);
                }
            }
        }
        let s = _mm256_set1_ps(scale);
        for (l, acc) in acc.iter().enumerate().take(lanes) {
            // SAFETY: start + 8 l + 8 <= width.
            unsafe {
                _mm256_storeu_ps(out.as_mut_ptr().add(start + 8 * l), _mm256_mul_ps(*acc, s))
            };
        }
        start += 8 * lanes;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn scores_avx2(query: &[f32], keys: &[f16], out: &mut [f32]) {
    scores(query, keys, false, out)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn weighted_sum_avx2(out: &mut [f32], weights: &[f32], scale: f32, values: &[f16]) {
    weighted_sum_scalar(out, weights, scale, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The CPU kernel (f16 cache) against candle's operations (f32 cache),
    /// with padding, a window-like hole and a query that sees nothing.
    #[test]
    fn the_cpu_kernel_matches_candle() {
        let (rows, heads, kv_heads, head_dim, n, slots, capacity) = (3, 6, 2, 16, 2, 7, 9);
        let q = Tensor::randn(0f32, 1.0, (rows, heads, n, head_dim), &Device::Cpu).unwrap();
        let k = Tensor::randn(
            0f32,
            1.0,
            (rows, kv_heads, capacity, head_dim),
            &Device::Cpu,
        )
        .unwrap();
        let v = Tensor::randn(
            0f32,
            1.0,
            (rows, kv_heads, capacity, head_dim),
            &Device::Cpu,
        )
        .unwrap();
        let visible: Vec<bool> = (0..rows * n * slots)
            .map(|i| {
                let (r, j) = (i / (n * slots), i % slots);
                r != 2 && j != 3 && j <= 4 + i / slots % n
            })
            .collect();
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim,
            n,
            slots,
        };
        let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
        let ours = attend(&q, &half(&k), &half(&v), &visible, &shape).unwrap();
        // candle over the same f16-rounded cache.
        let back = |t: &Tensor| half(t).to_dtype(DType::F32).unwrap();
        let theirs = attend_candle(&q, &back(&k), &back(&v), &visible, &shape).unwrap();
        assert_eq!(ours.dims(), &[rows, n, heads * head_dim]);
        let ours: Vec<Vec<Vec<f32>>> = ours.to_vec3().unwrap();
        let theirs: Vec<Vec<Vec<f32>>> = theirs.to_vec3().unwrap();
        for r in 0..2 {
            for (a, b) in ours[r].iter().flatten().zip(theirs[r].iter().flatten()) {
                assert!((a - b).abs() < 1e-4, "row {r}: {a} vs {b}");
            }
        }
        // Row 2 sees nothing: its output is never read, but it must be finite.
        assert!(ours[2].iter().flatten().all(|x| x.is_finite()));
    }
}
