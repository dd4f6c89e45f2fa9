//! Log-space arithmetic shared by the marginalisations.

/// log Σ exp(values); -inf for none or all -inf.
pub(crate) fn logsumexp(values: impl IntoIterator<Item = f32> + Clone) -> f32 {
    let max = values.clone().into_iter().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    max + values
        .into_iter()
        .map(|v| (v - max).exp())
        .sum::<f32>()
        .ln()
}
