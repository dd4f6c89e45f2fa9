//! The document prior p(z|x): a softmax over the retrieval scores of the k
//! passages, as DPR's inner products enter RAG.

use margin_core::{OperationError, OperationResult};

use crate::math::logsumexp;

/// log p(z|x) for passages with retrieval `scores`: log-softmax of
/// scores / `temperature` (1: RAG's prior; higher: flatter).
pub fn document_log_prior(scores: &[f32], temperature: f32) -> OperationResult<Vec<f32>> {
    if scores.is_empty() {
        return Err(OperationError::bad_input(
            "doc_scores",
            "at least one passage is needed",
        ));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(OperationError::bad_input(
            "temperature",
            "must be a number above 0",
        ));
    }
    if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
        return Err(OperationError::bad_input(
            "doc_scores",
            format!("{bad} is not a finite score"),
        ));
    }
    let scaled: Vec<f32> = scores.iter().map(|s| s / temperature).collect();
    let total = logsumexp(scaled.iter().copied());
    Ok(scaled.iter().map(|s| s - total).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prior_is_a_softmax_that_temperature_flattens() {
        let prior = document_log_prior(&[2.0, 0.5, -1.0], 1.0).unwrap();
        let total: f32 = prior.iter().map(|p| p.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!((prior[0] - prior[1] - 1.5).abs() < 1e-6);
        let flat = document_log_prior(&[2.0, 0.5, -1.0], 10.0).unwrap();
        assert!(flat[0] - flat[2] < prior[0] - prior[2]);
        assert!(document_log_prior(&[], 1.0).is_err());
        assert!(document_log_prior(&[1.0], 0.0).is_err());
        assert!(document_log_prior(&[f32::NAN], 1.0).is_err());
    }
}
