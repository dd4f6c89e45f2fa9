//! The negative log-likelihood of given answers under RAG-Token and
//! RAG-Sequence, with the semantics of transformers' `get_nll`: label
//! smoothing epsilon, `exclude_bos_score` (RAG-Sequence), masked padding, and
//! (RAG-Sequence) the document prior added at the second target position, as
//! transformers does (or at the first counted position where there is no
//! second one).

use margin_core::OperationResult;
use margin_generator::Generator;

use crate::math::logsumexp;
use crate::prefill::check_questions;
use crate::Question;

/// Options of [`token_nll`] and [`sequence_nll`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NllOptions {
    /// Label smoothing: loss = (1 - ε) NLL + ε / vocab × (−Σ log p over the vocabulary).
    pub epsilon: f32,
    /// RAG-Sequence: leave the first target token's score out when every
    /// target starts with the generator's BOS.
    pub exclude_bos_score: bool,
    /// Target positions holding this token are padding and score nothing
    /// (transformers: the generator's pad token).
    pub mask_token: Option<u32>,
}

/// Per-passage teacher-forced log-probabilities of one target.
struct Forced {
    /// [z][t]: log p(target[t] | x, z, target[..t])
    target: Vec<Vec<f32>>,
    /// [z][t]: Σ over the vocabulary of log p(· | x, z, target[..t]); only with smoothing.
    vocab_sums: Option<Vec<Vec<f32>>>,
    /// [z][t][v] whole distributions (RAG-Token with smoothing only).
    whole: Option<Vec<Vec<Vec<f32>>>>,
}

/// Teacher-forces `targets[q]` against every passage of question q, all as one batch.
fn force(
    generator: &dyn Generator,
    questions: &[Question],
    targets: &[Vec<u32>],
    whole: bool,
) -> OperationResult<Vec<Forced>> {
    let n = check_questions(questions)?;
    if targets.len() != questions.len() {
        return Err(margin_core::OperationError::bad_input(
            "targets",
            format!("{} given for {} questions", targets.len(), questions.len()),
        ));
    }
    let contexts: Vec<Vec<u32>> = questions.iter().flat_map(|q| q.contexts.clone()).collect();
    let session = generator.prepare(&contexts)?;
    let rows: Vec<Vec<u32>> = targets
        .iter()
        .flat_map(|t| std::iter::repeat_n(t.clone(), n))
        .collect();
    if whole {
        let distributions = session.distributions(&rows)?;
        let mut forced = Vec::with_capacity(questions.len());
        for (q, target) in targets.iter().enumerate() {
            let docs: Vec<Vec<Vec<f32>>> = distributions[q * n..(q + 1) * n].to_vec();
            let pick = docs
                .iter()
                .map(|d| {
                    d.iter()
                        .zip(target)
                        .map(|(row, &t)| row[t as usize])
                        .collect()
                })
                .collect();
            let sums = docs
                .iter()
                .map(|d| d.iter().map(|row| row.iter().sum()).collect())
                .collect();
            forced.push(Forced {
                target: pick,
                vocab_sums: Some(sums),
                whole: Some(docs),
            });
        }
        return Ok(forced);
    }
    let scores = session.score(&rows)?;
    Ok((0..questions.len())
        .map(|q| Forced {
            target: scores[q * n..(q + 1) * n].to_vec(),
            vocab_sums: None,
            whole: None,
        })
        .collect())
}

fn masked(target: &[u32], mask: Option<u32>) -> Vec<bool> {
    target.iter().map(|t| Some(*t) == mask).collect()
}

/// RAG-Token NLL of `targets[q]` (the answer's tokens after the generator's
/// start tokens) for every question: per position, the marginal over
/// passages, summed over positions.
pub fn token_nll(
    generator: &dyn Generator,
    questions: &[Question],
    targets: &[Vec<u32>],
    options: NllOptions,
) -> OperationResult<Vec<f32>> {
    let smoothing = options.epsilon != 0.0;
    let forced = force(generator, questions, targets, smoothing)?;
    let vocab = generator.vocab_size() as f32;
    Ok(forced
        .iter()
        .zip(questions)
        .zip(targets)
        .map(|((f, q), target)| {
            let pad = masked(target, options.mask_token);
            let prior = &q.doc_log_prior;
            let mut ll = 0.0;
            let mut smooth = 0.0;
            for t in 0..target.len() {
                if pad[t] {
                    continue;
                }
                ll += logsumexp(prior.iter().zip(&f.target).map(|(p, z)| p + z[t]));
                if let Some(whole) = &f.whole {
                    let width = whole[0][t].len();
                    smooth += (0..width)
                        .map(|v| logsumexp(prior.iter().zip(whole).map(|(p, z)| p + z[t][v])))
                        .sum::<f32>();
                }
            }
            (1.0 - options.epsilon) * -ll + options.epsilon / vocab * -smooth
        })
        .collect())
}

/// RAG-Sequence NLL of `targets[q]` for every question: −log Σ_z p(z|x)
/// p(y|x,z), with transformers' conventions (see the module).
pub fn sequence_nll(
    generator: &dyn Generator,
    questions: &[Question],
    targets: &[Vec<u32>],
    options: NllOptions,
) -> OperationResult<Vec<f32>> {
    let forced = force(generator, questions, targets, options.epsilon != 0.0)?;
    let bos = generator.special_tokens().bos;
    // transformers decides over the whole batch whether targets start with BOS.
    let use_bos = bos.is_some() && targets.iter().all(|t| t.first().copied() == bos);
    let skip_first = options.exclude_bos_score && use_bos;
    let vocab = generator.vocab_size() as f32;
    Ok((0..questions.len())
        .map(|q| {
            sequence_loss(
                &forced[q].target,
                forced[q].vocab_sums.as_deref(),
                &questions[q].doc_log_prior,
                &targets[q],
                skip_first,
                options,
                vocab,
            )
        })
        .collect())
}

/// The RAG-Sequence loss of one target from its per-passage target
/// log-probabilities `per_doc[z][t]` (and, with smoothing, per-position
/// vocabulary sums).
pub(crate) fn sequence_loss(
    per_doc: &[Vec<f32>],
    vocab_sums: Option<&[Vec<f32>]>,
    prior: &[f32],
    target: &[u32],
    skip_first: bool,
    options: NllOptions,
    vocab: f32,
) -> f32 {
    let pad = masked(target, options.mask_token);
    // The prior joins at the second position (transformers' layout, where
    // the first is BOS). Where that position is missing or masked (a
    // one-token answer of a decoder LLM), it joins at the first counted one
    // instead: transformers would leave it out, which makes an empty answer
    // look likelier than every real one.
    let prior_position = |from: usize| {
        if target.len() > 1 && !pad[1] && from <= 1 {
            Some(1)
        } else {
            (from..target.len()).find(|&t| !pad[t])
        }
    };
    let with_prior = |at: Option<usize>, z: usize, t: usize, v: f32, times: f32| {
        if Some(t) == at {
            v + times * prior[z]
        } else {
            v
        }
    };
    let start = usize::from(skip_first);
    let at = prior_position(start);
    let ll: Vec<f32> = per_doc
        .iter()
        .enumerate()
        .map(|(z, scores)| {
            (start..target.len())
                .filter(|&t| !pad[t])
                .map(|t| with_prior(at, z, t, scores[t], 1.0))
                .sum()
        })
        .collect();
    let nll = -logsumexp(ll.iter().copied());
    let smooth = match vocab_sums {
        Some(sums) => {
            let per_z: Vec<f32> = sums
                .iter()
                .enumerate()
                .map(|(z, s)| {
                    (0..target.len())
                        .filter(|&t| !pad[t])
                        .map(|t| with_prior(prior_position(0), z, t, s[t], vocab))
                        .sum()
                })
                .collect();
            -logsumexp(per_z.iter().copied())
        }
        None => 0.0,
    };
    (1.0 - options.epsilon) * nll + options.epsilon / vocab * smooth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_token_answer_still_weighs_its_passages_by_the_prior() {
        // Passage 0 is almost certainly the source; both give EOS the same score.
        let prior = [0.999f32.ln(), 0.001f32.ln()];
        let per_doc = [vec![-1.0f32], vec![-1.0]];
        let loss = sequence_loss(
            &per_doc,
            None,
            &prior,
            &[2],
            false,
            NllOptions::default(),
            10.0,
        );
        // -log Σ_z p(z) p(y|z) = 1.0, not -log Σ_z p(y|z) = 1 - ln 2.
        assert!((loss - 1.0).abs() < 1e-5, "{loss}");
        // Longer answers: at the second position, as transformers.
        let per_doc = [vec![-1.0f32, -2.0], vec![-3.0, -4.0]];
        let loss = sequence_loss(
            &per_doc,
            None,
            &prior,
            &[5, 2],
            false,
            NllOptions::default(),
            10.0,
        );
        let expected = -logsumexp([prior[0] - 3.0, prior[1] - 7.0]);
        assert!((loss - expected).abs() < 1e-5);
    }
}
