//! RAG-Sequence: p(y|x) = Σ_z p(z|x) p(y|x,z), one passage per whole answer.
//!
//! Thorough decoding (transformers' `RagSequenceForGeneration.generate`):
//! beam search per passage, the union of every passage's hypotheses
//! deduplicated, every hypothesis force-decoded against every passage (one
//! batch), ranked by transformers' `get_nll` with `exclude_bos_score`. Fast
//! decoding makes no extra pass: a hypothesis that did not appear in passage
//! z's beam gets p(y|x,z) = 0, and the others keep the log-probabilities their
//! beams computed.

use margin_core::OperationResult;
use margin_generator::decoding::{beam_search, Hypothesis};
use margin_generator::{Generator, Session, Stepper};

use crate::math::logsumexp;
use crate::nll::{sequence_loss, NllOptions};
use crate::prefill::Prefilled;
use crate::{DecodeSettings, Question, StepObserver, Timings};
use std::time::Instant;

/// Which RAG-Sequence decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceDecoding {
    /// Every hypothesis scored against every passage.
    Thorough,
    /// Hypotheses scored only by the beams that produced them.
    Fast,
}

/// One RAG-Sequence answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceAnswer {
    /// Output tokens, the generator's start tokens included (no padding).
    pub tokens: Vec<u32>,
    /// log p(y|x,z) per passage over the generated tokens; -inf where fast
    /// decoding has no score (the passage's beam did not produce y).
    pub per_doc: Vec<f32>,
    /// log p(y|x) = logsumexp_z [log p(z|x) + per_doc[z]].
    pub log_prob: f32,
}

/// Decodes up to `num_return` answers per question, best first. All
/// passages of all questions run as one beam search, and thorough
/// rescoring as one teacher-forced batch. `on_step` hears, before every
/// step, the leading beam of each question's first passage (the answer is
/// only chosen after the search; see [`crate::StepObserver`]).
pub fn generate(
    generator: &dyn Generator,
    questions: &[Question],
    settings: &DecodeSettings,
    decoding: SequenceDecoding,
    num_return: usize,
    timings: &mut Timings,
    on_step: StepObserver<'_>,
) -> OperationResult<Vec<Vec<SequenceAnswer>>> {
    let prefilled = Prefilled::new(generator, questions.to_vec(), timings)?;
    generate_prefilled(
        generator, &prefilled, settings, decoding, num_return, timings, on_step,
    )
}

/// [`generate`] from passages already through the generator (`prefilled`
/// must come from the same `generator`); `prefilled` is left as it was.
pub fn generate_prefilled(
    generator: &dyn Generator,
    prefilled: &Prefilled<'_>,
    settings: &DecodeSettings,
    decoding: SequenceDecoding,
    num_return: usize,
    timings: &mut Timings,
    on_step: StepObserver<'_>,
) -> OperationResult<Vec<Vec<SequenceAnswer>>> {
    let (questions, n) = (prefilled.questions(), prefilled.n_docs());
    let special = generator.special_tokens();
    let start = generator.output_start();
    let beams = settings.num_beams.max(1);
    let began = Instant::now();
    let mut stepper = Stepper::new(prefilled.fork_all()?, beams);
    let per_context = beam_search(
        vec![start.clone(); n * questions.len()],
        &settings.rules(special.eos),
        &settings.beams(special.pad, beams),
        |rows| {
            for (q, leading) in rows.iter().step_by(n * beams).enumerate() {
                on_step(q, leading);
            }
            stepper.next_log_probs(rows)
        },
    )?;
    drop(stepper);
    timings.decode += began.elapsed();

    // Per question: the deduplicated union of its passages' hypotheses, in
    // order of first appearance, with the beams' own scores (fast decoding).
    let mut candidates: Vec<Vec<(Vec<u32>, Vec<f32>)>> = Vec::with_capacity(questions.len());
    for q in 0..questions.len() {
        let mut union: Vec<(Vec<u32>, Vec<f32>)> = Vec::new();
        for (z, hypotheses) in per_context[q * n..(q + 1) * n].iter().enumerate() {
            // Beam search's unfilled slots (no token generated, score -1e9)
            // are not hypotheses.
            for h in hypotheses.iter().filter(|h| !h.token_log_probs.is_empty()) {
                let tokens = unpadded(h, start.len());
                let index = match union.iter().position(|(t, _)| *t == tokens) {
                    Some(i) => i,
                    None => {
                        union.push((tokens, vec![f32::NEG_INFINITY; n]));
                        union.len() - 1
                    }
                };
                if union[index].1[z] == f32::NEG_INFINITY {
                    union[index].1[z] = h.token_log_probs.iter().sum();
                }
            }
        }
        candidates.push(union);
    }

    let ranked = match decoding {
        SequenceDecoding::Fast => candidates
            .into_iter()
            .zip(questions)
            .map(|(union, question)| {
                let mut answers: Vec<SequenceAnswer> = union
                    .into_iter()
                    .map(|(tokens, per_doc)| answer(tokens, per_doc, &question.doc_log_prior))
                    .collect();
                answers.sort_by(|a, b| b.log_prob.total_cmp(&a.log_prob));
                answers
            })
            .collect(),
        SequenceDecoding::Thorough => {
            let began = Instant::now();
            let ranked = thorough(
                generator,
                prefilled.session(),
                questions,
                candidates,
                start.len(),
            )?;
            timings.rescore += began.elapsed();
            ranked
        }
    };
    Ok(ranked
        .into_iter()
        .map(|mut answers| {
            answers.truncate(num_return.max(1));
            answers
        })
        .collect())
}

/// Scores every candidate against every passage of its question in one
/// batch, forked from the passages' prefill, and ranks by transformers'
/// thorough-decoding loss.
fn thorough(
    generator: &dyn Generator,
    prepared: &dyn Session,
    questions: &[Question],
    candidates: Vec<Vec<(Vec<u32>, Vec<f32>)>>,
    start: usize,
) -> OperationResult<Vec<Vec<SequenceAnswer>>> {
    let n = prepared.rows() / questions.len();
    let special = generator.special_tokens();
    // Rows (question, candidate, passage), each continuing its passage's context.
    let mut parents = Vec::new();
    let mut targets = Vec::new();
    for (q, union) in candidates.iter().enumerate() {
        for (tokens, _) in union {
            for z in 0..n {
                parents.push(q * n + z);
                targets.push(tokens[start..].to_vec());
            }
        }
    }
    // The passages' prefill is reused: one fork, a row per (candidate, passage).
    let scores = prepared.fork(&parents)?.score(&targets)?;
    let options = NllOptions {
        epsilon: 0.0,
        exclude_bos_score: true,
        // transformers masks the pad token in targets; where pad is EOS
        // (decoder LLMs) that would drop the end of every answer.
        mask_token: (special.pad != special.eos).then_some(special.pad),
    };
    let vocab = generator.vocab_size() as f32;
    let mut row = 0;
    let mut out = Vec::with_capacity(questions.len());
    for (union, question) in candidates.into_iter().zip(questions) {
        let use_bos = special.bos.is_some()
            && union
                .iter()
                .all(|(t, _)| t.get(start).copied() == special.bos);
        let mut ranked: Vec<(f32, SequenceAnswer)> = union
            .into_iter()
            .map(|(tokens, _)| {
                let per_doc_scores = &scores[row..row + n];
                row += n;
                let target = &tokens[start..];
                let loss = sequence_loss(
                    per_doc_scores,
                    None,
                    &question.doc_log_prior,
                    target,
                    use_bos,
                    options,
                    vocab,
                );
                let per_doc = per_doc_scores.iter().map(|s| s.iter().sum()).collect();
                (loss, answer(tokens, per_doc, &question.doc_log_prior))
            })
            .collect();
        // Stable: equal losses keep the order of first appearance.
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.push(ranked.into_iter().map(|(_, a)| a).collect());
    }
    Ok(out)
}

fn answer(tokens: Vec<u32>, per_doc: Vec<f32>, prior: &[f32]) -> SequenceAnswer {
    let log_prob = logsumexp(prior.iter().zip(&per_doc).map(|(p, s)| p + s));
    SequenceAnswer {
        tokens,
        per_doc,
        log_prob,
    }
}

/// A hypothesis's tokens without the padding after its end.
fn unpadded(h: &Hypothesis, start: usize) -> Vec<u32> {
    h.tokens[..start + h.token_log_probs.len()].to_vec()
}
