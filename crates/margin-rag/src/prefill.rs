//! The passages of a batch of questions run through the generator once.
//! RAG-Token and RAG-Sequence decode in forks of it and score against it
//! without changing it, so one prefill serves every mode (an evaluation
//! answering each question in several modes pays for it once).

use std::time::Instant;

use margin_core::{OperationError, OperationResult};
use margin_generator::{Generator, Session};

use crate::{Question, Timings};

/// Questions whose passage contexts the generator has read.
pub struct Prefilled<'g> {
    session: Box<dyn Session + 'g>,
    questions: Vec<Question>,
    n_docs: usize,
}

impl<'g> Prefilled<'g> {
    /// Runs every passage of every question through `generator` as one
    /// batch, timed into `timings.prefill`. Every question must have the
    /// same number (≥ 1) of passages, each with a prior.
    pub fn new(
        generator: &'g dyn Generator,
        questions: Vec<Question>,
        timings: &mut Timings,
    ) -> OperationResult<Prefilled<'g>> {
        let n_docs = check_questions(&questions)?;
        let contexts: Vec<Vec<u32>> = questions.iter().flat_map(|q| q.contexts.clone()).collect();
        let began = Instant::now();
        let session = generator.prepare(&contexts)?;
        timings.prefill += began.elapsed();
        Ok(Prefilled {
            session,
            questions,
            n_docs,
        })
    }

    /// The questions, in batch order.
    pub fn questions(&self) -> &[Question] {
        &self.questions
    }

    /// Passages per question.
    pub fn n_docs(&self) -> usize {
        self.n_docs
    }

    /// The session: row q × n_docs + z holds passage z of question q.
    pub(crate) fn session(&self) -> &dyn Session {
        self.session.as_ref()
    }

    /// A copy of every row, to decode in.
    pub(crate) fn fork_all(&self) -> OperationResult<Box<dyn Session + '_>> {
        self.session
            .fork(&(0..self.session.rows()).collect::<Vec<_>>())
    }
}

/// Checks that every question has passages, as many as the first, each with a prior.
pub(crate) fn check_questions(questions: &[Question]) -> OperationResult<usize> {
    let n_docs = questions
        .first()
        .map(|q| q.contexts.len())
        .ok_or_else(|| OperationError::bad_input("questions", "at least one is needed"))?;
    for (i, q) in questions.iter().enumerate() {
        if q.contexts.is_empty() || q.contexts.len() != n_docs || q.doc_log_prior.len() != n_docs {
            return Err(OperationError::bad_input(
                format!("question {i}"),
                format!(
                    "has {} passages and {} prior scores; every question needs the same number (≥ 1) of both ({n_docs})",
                    q.contexts.len(),
                    q.doc_log_prior.len()
                ),
            ));
        }
    }
    Ok(n_docs)
}
