//! Which passages an answer came from: the posterior p(z|x,y) ∝ p(z|x) p(y|x,z).

use margin_core::OperationResult;
use margin_generator::Generator;

use crate::math::logsumexp;
use crate::prefill::check_questions;
use crate::Question;

/// p(z|x,y) for each passage, from the prior log p(z|x) and the answer's
/// log-likelihood under each passage (-inf: none); sums to 1.
pub fn posterior(doc_log_prior: &[f32], per_doc: &[f32]) -> Vec<f32> {
    let joint: Vec<f32> = doc_log_prior
        .iter()
        .zip(per_doc)
        .map(|(p, s)| p + s)
        .collect();
    let total = logsumexp(joint.iter().copied());
    if total == f32::NEG_INFINITY {
        // No passage gives the answer any probability: fall back to the prior.
        return doc_log_prior.iter().map(|p| p.exp()).collect();
    }
    joint.iter().map(|j| (j - total).exp()).collect()
}

/// log p(y|x,z) of `answer` (the tokens after the generator's start tokens)
/// under every passage of `question`, in one batch.
pub fn answer_likelihoods(
    generator: &dyn Generator,
    question: &Question,
    answer: &[u32],
) -> OperationResult<Vec<f32>> {
    check_questions(std::slice::from_ref(question))?;
    let session = generator.prepare(&question.contexts)?;
    let targets = vec![answer.to_vec(); question.contexts.len()];
    Ok(session
        .score(&targets)?
        .iter()
        .map(|s| s.iter().sum())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_posterior_weighs_the_prior_by_the_likelihood() {
        let prior = [0.5f32.ln(), 0.5f32.ln()];
        let post = posterior(&prior, &[0.0, 1.0f32.ln() - 3.0]);
        assert!((post.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(post[0] > 0.9);
        let unknown = posterior(&prior, &[f32::NEG_INFINITY, -2.0]);
        assert_eq!(unknown, vec![0.0, 1.0]);
    }
}
