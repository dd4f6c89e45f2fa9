//! GELU for the CPU without libm's `erf`: a rational approximation of erf that
//! compiles to straight-line vector code. Profiling margin's encoder showed
//! scalar `erf` at over a tenth of the time of a whole MiniLM forward pass.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// erf(x) ≈ x·P(x²)/Q(x²) on [-4, 4] (erf is ±1 in f32 beyond), with the
/// minimax coefficients Eigen uses for single precision; within a few ULP.
/// Plain `*` and `+` (not `mul_add`, a libm call without the `fma` target
/// feature) so the loop vectorises on any x86-64.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10_f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 + -2.101_024e-6;
    let p = p * x2 + -5.692_506_4e-5;
    let p = p * x2 + -7.349_906_3e-4;
    let p = p * x2 + -2.954_6e-3;
    let p = p * x2 + -1.609_603_3e-2;
    let q = -1.456_607_2e-5_f32;
    let q = q * x2 + -2.133_740_6e-4;
    let q = q * x2 + -1.682_827e-3;
    let q = q * x2 + -7.373_329e-3;
    let q = q * x2 + -1.426_474e-2;
    x * p / q
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

struct FastGelu;

impl CustomOp1 for FastGelu {
    fn name(&self) -> &'static str {
        "margin-fast-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("fast gelu needs a contiguous tensor".into()))?;
        let input = match storage {
            CpuStorage::F32(values) => &values[start..end],
            _ => return Err(candle_core::Error::Msg("fast gelu needs f32".into())),
        };
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(16 * 1024)
            .zip(input.par_chunks(16 * 1024))
            .for_each(|(o, i)| o.iter_mut().zip(i).for_each(|(o, &x)| *o = gelu(x)));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Exact-erf GELU, through the fast kernel where it applies (contiguous f32 on the CPU).
pub(crate) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && x.is_contiguous() {
        x.apply_op1_no_bwd(&FastGelu)
    } else {
        x.gelu_erf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_accurate_everywhere() {
        let mut worst = 0f64;
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4 * 6.0;
            let exact = libm_erf(x as f64);
            worst = worst.max((erf(x) as f64 - exact).abs());
        }
        assert!(worst < 5e-7, "worst error {worst}");
    }

    /// erf in f64 by its Taylor series (|x| < 3) or continued fraction (beyond).
    fn libm_erf(x: f64) -> f64 {
        if x.abs() >= 3.0 {
            // erfc(x) = exp(-x²)/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − …), enough terms for 1e-9.
            let t = 1.0 / (2.0 * x * x);
            let series = 1.0 - t + 3.0 * t * t - 15.0 * t.powi(3) + 105.0 * t.powi(4);
            let erfc = (-x * x).exp() / (x.abs() * std::f64::consts::PI.sqrt()) * series;
            return x.signum() * (1.0 - erfc);
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn matches_candle_gelu_erf() {
        let x = Tensor::arange(-600f32, 600f32, &candle_core::Device::Cpu).unwrap();
        let x = (x / 100.0).unwrap();
        let ours = gelu_erf(&x).unwrap();
        let reference = x.gelu_erf().unwrap();
        let diff = crate::test_util::max_abs(&(ours - reference).unwrap());
        assert!(diff < 1e-6, "{diff}");
    }
}
