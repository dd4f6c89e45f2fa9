//! Attention softmax for the CPU: the padding mask is added, and the softmax
//! taken, in one pass per row with an exponential that vectorises. Profiling
//! showed scalar `expf` and the separate mask addition at about a tenth of a
//! MiniLM forward pass.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// e^x for x ≤ 0 (softmax only needs that range): 2^n · 2^f with n the nearest
/// integer to x·log2(e), and e^f, |f| ≤ ½ln 2, by its degree-7 Taylor
/// polynomial (relative error below 2e-7). Inputs below -87 give e^-87, about
/// 1.6e-38: a masked key's weight is negligible rather than exactly 0.
/// 1.5·2^23: adding it rounds t to the nearest integer n with plain float
/// adds, and leaves n in the low mantissa bits, readable without a
/// float-to-int cast (Rust's saturating cast blocks vectorisation).
const ROUND: f32 = 12_582_912.0;
/// ln 2 in two parts (Cody and Waite), so that x − n·ln 2 stays exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Taylor coefficients of e^f, highest degree first.
const EXP_POLY: [f32; 8] = [
    1.984_127e-4,
    1.388_889e-3,
    8.333_333e-3,
    4.166_666_8e-2,
    1.666_666_7e-1,
    0.5,
    1.0,
    1.0,
];

#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let p = EXP_POLY[1..].iter().fold(EXP_POLY[0], |p, &c| p * f + c);
    p * f32::from_bits(((n_int + 127) << 23) as u32)
}

/// `values[i] = e^(values[i] − max)` for a row whose maximum is `max`.
fn exp_shifted(values: &mut [f32], max: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { exp_shifted_avx2(values, max) };
    }
    values
        .iter_mut()
        .for_each(|v| *v = exp_nonpositive(*v - max));
}

/// [`exp_nonpositive`] eight lanes at a time; the compiler leaves the scalar
/// loop scalar.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_avx2(values: &mut [f32], max: f32) {
    use std::arch::x86_64::*;
    let mut chunks = values.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let ptr = chunk.as_mut_ptr();
        let x = _mm256_max_ps(
            _mm256_sub_ps(_mm256_loadu_ps(ptr), _mm256_set1_ps(max)),
            _mm256_set1_ps(-87.0),
        );
        let shifted = _mm256_fmadd_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
            _mm256_set1_ps(ROUND),
        );
        let n = _mm256_sub_ps(shifted, _mm256_set1_ps(ROUND));
        let n_int = _mm256_sub_epi32(
            _mm256_castps_si256(shifted),
            _mm256_set1_epi32(ROUND.to_bits() as i32),
        );
        let f = _mm256_fnmadd_ps(
            n,
            _mm256_set1_ps(LN2_LO),
            _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x),
        );
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
        }
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            n_int,
            _mm256_set1_epi32(127),
        )));
        _mm256_storeu_ps(ptr, _mm256_mul_ps(p, scale));
    }
    for v in chunks.into_remainder() {
        *v = exp_nonpositive(*v - max);
    }
}

/// Sum over eight lanes, which vectorises where a single running sum cannot.
#[inline(always)]
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = values.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `softmax(scores + mask_bias)` over the last dimension, where `scores` is
/// [batch, heads, queries, keys] and `mask_bias` is [batch, 1, 1, keys].
struct MaskedSoftmax;

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "margin-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let msg = |m: &str| candle_core::Error::Msg(format!("masked softmax: {m}"));
        let (batch, heads, queries, keys) = l1.shape().dims4()?;
        let (mask_batch, _, _, mask_keys) = l2.shape().dims4()?;
        if mask_batch != batch || mask_keys != keys {
            return Err(msg("mask shape does not match the scores"));
        }
        let (scores, mask) = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let (a0, a1) = l1
                    .contiguous_offsets()
                    .ok_or_else(|| msg("scores must be contiguous"))?;
                let (b0, b1) = l2
                    .contiguous_offsets()
                    .ok_or_else(|| msg("mask must be contiguous"))?;
                (&a[a0..a1], &b[b0..b1])
            }
            _ => return Err(msg("f32 only")),
        };
        let rows_per_batch = heads * queries;
        let mut out = vec![0f32; scores.len()];
        out.par_chunks_mut(keys)
            .zip(scores.par_chunks(keys))
            .enumerate()
            .for_each(|(row, (out, scores))| {
                let mask = &mask[(row / rows_per_batch) * keys..][..keys];
                // Separate passes, each a plain map or a short reduction, so
                // the maps vectorise (a sum inside the loop would forbid it).
                for (o, (&s, &m)) in out.iter_mut().zip(scores.iter().zip(mask)) {
                    *o = s + m;
                }
                let max = out.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                exp_shifted(out, max);
                let inv = 1.0 / lane_sum(out);
                out.iter_mut().for_each(|o| *o *= inv);
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `softmax(scores + mask_bias)` over the last dimension, fused on the CPU.
pub(crate) fn masked_softmax(scores: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
    let fused = scores.device().is_cpu()
        && scores.dtype() == candle_core::DType::F32
        && mask_bias.dtype() == candle_core::DType::F32
        && scores.is_contiguous()
        && mask_bias.is_contiguous();
    if fused {
        scores.apply_op2_no_bwd(mask_bias, &MaskedSoftmax)
    } else {
        candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask_bias)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn exp_is_accurate_on_the_softmax_range() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -(i as f32) * 4e-4;
            let exact = (x as f64).exp();
            worst = worst.max(((exp_nonpositive(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        let inputs: Vec<f32> = (0..1003).map(|i| -(i as f32) * 0.08).collect();
        let mut row = inputs.clone();
        exp_shifted(&mut row, 0.0);
        for (i, (v, x)) in row.iter().zip(&inputs).enumerate() {
            let exact = (*x as f64).exp();
            assert!(
                ((*v as f64) - exact).abs() / exact < 3e-7,
                "row {i}: {v} vs {exact}"
            );
        }
        assert!(exp_nonpositive(-1e9) < 1e-37);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn matches_candle_softmax_with_mask() {
        let dev = Device::Cpu;
        // 19 keys: two full 8-lane blocks and a scalar tail, padding in both.
        let scores = Tensor::randn(0f32, 3.0, (2, 3, 4, 19), &dev).unwrap();
        let mut bias = vec![0f32; 2 * 19];
        bias[3..5].iter_mut().for_each(|b| *b = -1e9);
        bias[17..19].iter_mut().for_each(|b| *b = -1e9);
        let mask = Tensor::from_vec(bias, (2, 1, 1, 19), &dev).unwrap();
        let ours = masked_softmax(&scores, &mask).unwrap();
        let reference =
            candle_nn::ops::softmax(&scores.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
        let diff = crate::test_util::max_abs(&(ours.clone() - reference).unwrap());
        assert!(diff < 1e-6, "{diff}");
        let weights_at = |start| {
            crate::test_util::max_abs(&ours.get(0).unwrap().narrow(D::Minus1, start, 2).unwrap())
        };
        let padded_tail = weights_at(17);
        assert!(
            padded_tail < 1e-30,
            "padding in the scalar tail gets no attention"
        );
        let padded = weights_at(3);
        assert!(padded < 1e-30, "padding gets no attention");
    }
}
