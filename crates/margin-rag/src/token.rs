//! RAG-Token: at every step the next-token distribution is marginalised over
//! the passages, log p(y_t | x, y<t) = logsumexp_z [log p(z|x) + log p(y_t |
//! x, z, y<t)], and greedy or beam search runs over that marginal
//! (transformers' `RagTokenForGeneration.generate`).

use margin_core::OperationResult;
use margin_generator::decoding::{beam_search, find_parents, greedy_search};
use margin_generator::{Generator, Session};

use crate::math::logsumexp;
use crate::prefill::Prefilled;
use crate::{DecodeSettings, Question, StepObserver, Timings};
use std::time::Instant;

/// One RAG-Token answer.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenAnswer {
    /// Output tokens, the generator's start tokens included (padding after
    /// the end of sequence included too, as the batch was decoded).
    pub tokens: Vec<u32>,
    /// log p(y|x,z) per passage of the answer (its end of sequence included,
    /// when it was generated), for [`crate::attribution::posterior`].
    pub per_doc: Vec<f32>,
}

/// Decodes one answer per question with RAG-Token, and scores each answer
/// under each of its passages. Every question must have the same number of
/// passages; all (question, hypothesis, passage) rows run as one batch, and
/// the scoring pass reuses the passages' prefill. `on_step` hears each
/// question's leading hypothesis before every step (see
/// [`crate::StepObserver`]).
pub fn generate(
    generator: &dyn Generator,
    questions: &[Question],
    settings: &DecodeSettings,
    timings: &mut Timings,
    on_step: StepObserver<'_>,
) -> OperationResult<Vec<TokenAnswer>> {
    let prefilled = Prefilled::new(generator, questions.to_vec(), timings)?;
    generate_prefilled(generator, &prefilled, settings, timings, on_step)
}

/// [`generate`] from passages already through the generator (`prefilled`
/// must come from the same `generator`); `prefilled` is left as it was.
pub fn generate_prefilled(
    generator: &dyn Generator,
    prefilled: &Prefilled<'_>,
    settings: &DecodeSettings,
    timings: &mut Timings,
    on_step: StepObserver<'_>,
) -> OperationResult<Vec<TokenAnswer>> {
    let (questions, n_docs) = (prefilled.questions(), prefilled.n_docs());
    let special = generator.special_tokens();
    let rules = settings.rules(special.eos);
    let starts = vec![generator.output_start(); questions.len()];
    let beams = settings.num_beams.max(1);
    let began = Instant::now();
    let mut scorer = Marginal {
        session: prefilled.fork_all()?,
        priors: questions.iter().map(|q| q.doc_log_prior.clone()).collect(),
        n_docs,
        beams,
        previous: None,
    };
    let mut next = |rows: &[Vec<u32>]| {
        for (q, leading) in rows.iter().step_by(beams).enumerate() {
            on_step(q, leading);
        }
        scorer.next_log_probs(rows)
    };
    let answers = if beams == 1 {
        greedy_search(starts, &rules, special.pad, &mut next)?
    } else {
        beam_search(starts, &rules, &settings.beams(special.pad, 1), &mut next)?
            .into_iter()
            .map(|mut h| h.remove(0).tokens)
            .collect()
    };
    drop(scorer);
    timings.decode += began.elapsed();

    // Every answer against every passage of its question, teacher-forced from
    // the prefill (scoring leaves the prepared session as it was).
    let began = Instant::now();
    let start = generator.output_start().len();
    let targets: Vec<Vec<u32>> = answers
        .iter()
        .flat_map(|tokens| {
            let target = answer_target(&tokens[start.min(tokens.len())..], special.eos);
            std::iter::repeat_n(target, n_docs)
        })
        .collect();
    let scores = prefilled.session().score(&targets)?;
    timings.attribute += began.elapsed();
    Ok(answers
        .into_iter()
        .zip(scores.chunks(n_docs))
        .map(|(tokens, per_doc)| TokenAnswer {
            tokens,
            per_doc: per_doc.iter().map(|s| s.iter().sum()).collect(),
        })
        .collect())
}

/// The generated tokens up to and including the first end of sequence.
fn answer_target(generated: &[u32], eos: u32) -> Vec<u32> {
    match generated.iter().position(|&t| t == eos) {
        Some(end) => generated[..=end].to_vec(),
        None => generated.to_vec(),
    }
}

/// Marginal next-token log-probabilities of hypothesis rows: row `h`
/// (question h / beams) is held in the session as rows h × n_docs + z.
struct Marginal<'s> {
    session: Box<dyn Session + 's>,
    priors: Vec<Vec<f32>>,
    n_docs: usize,
    beams: usize,
    previous: Option<Vec<Vec<u32>>>,
}

impl Marginal<'_> {
    fn next_log_probs(&mut self, rows: &[Vec<u32>]) -> OperationResult<Vec<Vec<f32>>> {
        let n = self.n_docs;
        let hypothesis_parents: Vec<usize> = match &self.previous {
            // Hypothesis h starts from its question's passages.
            None => (0..rows.len()).map(|h| h / self.beams).collect(),
            Some(old) => find_parents(old, rows, self.beams)?,
        };
        let first = self.previous.is_none();
        let parents: Vec<usize> = hypothesis_parents
            .iter()
            .flat_map(|&p| (0..n).map(move |z| p * n + z))
            .collect();
        if parents.len() != self.session.rows() || parents.iter().enumerate().any(|(i, &p)| i != p)
        {
            self.session.select(&parents)?;
        }
        if !first {
            let last: Vec<u32> = rows
                .iter()
                .flat_map(|r| std::iter::repeat_n(r[r.len() - 1], n))
                .collect();
            self.session.advance(&last)?;
        }
        let per_row = self.session.log_probs()?;
        self.previous = Some(rows.to_vec());
        Ok(rows
            .iter()
            .enumerate()
            .map(|(h, _)| {
                let prior = &self.priors[h / self.beams];
                let docs = &per_row[h * n..(h + 1) * n];
                let vocab = docs[0].len();
                (0..vocab)
                    .map(|v| logsumexp((0..n).map(|z| prior[z] + docs[z][v])))
                    .collect()
            })
            .collect())
    }
}
