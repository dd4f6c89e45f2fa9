//! The seam between RAG and a language model: a [`Generator`] prepares the k
//! passage-conditioned contexts of a question as one batch, and the
//! [`Session`] it returns steps, reorders and force-decodes rows (a row = one
//! context × one hypothesis), all rows at once.

use candle_core::Tensor;
use margin_core::{OperationError, OperationResult};

/// Token ids a decoding loop needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecialTokens {
    /// End of sequence: decoding stops at it.
    pub eos: u32,
    /// Fills rows that finished before others.
    pub pad: u32,
    /// Beginning of sequence, if the model has one.
    pub bos: Option<u32>,
}

/// How long inputs and outputs may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Longest context (prompt or encoder input), in tokens.
    pub max_context_tokens: usize,
    /// Longest output a row may reach, start tokens included.
    pub max_output_tokens: usize,
}

/// A language model shaped for RAG.
pub trait Generator: Send + Sync {
    /// The model's name, for logs and errors.
    fn name(&self) -> &str;
    /// Vocabulary size: the length of every log-probability row.
    fn vocab_size(&self) -> usize;
    /// End-of-sequence, padding and beginning-of-sequence tokens.
    fn special_tokens(&self) -> SpecialTokens;
    /// Context and output length limits.
    fn limits(&self) -> Limits;
    /// Tokens every output starts with before anything is generated: BART's
    /// decoder start token; nothing for a decoder-only model, whose output
    /// follows the prompt.
    fn output_start(&self) -> Vec<u32>;
    /// Runs `contexts` (token ids, one per passage) as one batch and returns
    /// a session with one row per context, ready to give the log-probabilities
    /// of each row's first output token.
    fn prepare(&self, contexts: &[Vec<u32>]) -> OperationResult<Box<dyn Session + '_>>;
}

/// Rows being decoded over prepared contexts.
pub trait Session {
    /// Rows held.
    fn rows(&self) -> usize;
    /// Log-probabilities of every row's next token, [rows][vocab].
    fn log_probs(&self) -> OperationResult<Vec<Vec<f32>>>;
    /// Rearranges rows: new row `i` continues old row `parents[i]`; rows may
    /// be dropped and duplicated (beam search, one context per hypothesis).
    fn select(&mut self, parents: &[usize]) -> OperationResult<()>;
    /// A new session whose row `i` is row `parents[i]` of this one, which
    /// stays as it was: the same prefill serves a decoding run and, later,
    /// a rescoring run.
    fn fork(&self, parents: &[usize]) -> OperationResult<Box<dyn Session + '_>>;
    /// Appends `tokens[i]` to row `i`.
    fn advance(&mut self, tokens: &[u32]) -> OperationResult<()>;
    /// Teacher forcing: `out[i][t]` = log p(`targets[i][t]` | row `i`,
    /// `targets[i][..t]`). The session is left as it was.
    fn score(&self, targets: &[Vec<u32>]) -> OperationResult<Vec<Vec<f32>>>;
    /// Teacher forcing with whole distributions: `out[i][t]` = log p(· |
    /// row `i`, `targets[i][..t]`), one vocabulary-long row per target token
    /// (label smoothing needs them all). The session is left as it was.
    fn distributions(&self, targets: &[Vec<u32>]) -> OperationResult<Vec<Vec<Vec<f32>>>>;
}

/// Checks a batch of contexts before it reaches a model.
pub(crate) fn check_contexts(
    model: &str,
    contexts: &[Vec<u32>],
    limits: Limits,
    vocab: usize,
) -> OperationResult<()> {
    if contexts.is_empty() {
        return Err(OperationError::bad_input(
            "contexts",
            "at least one is needed",
        ));
    }
    for (i, context) in contexts.iter().enumerate() {
        if context.is_empty() {
            return Err(OperationError::bad_input(
                format!("context {i}"),
                "is empty",
            ));
        }
        if context.len() > limits.max_context_tokens {
            return Err(OperationError::bad_input(
                format!("context {i}"),
                format!(
                    "has {} tokens; {model} takes at most {}",
                    context.len(),
                    limits.max_context_tokens
                ),
            ));
        }
        if let Some(bad) = context.iter().find(|&&t| t as usize >= vocab) {
            return Err(OperationError::bad_input(
                format!("context {i}"),
                format!("token {bad} is outside {model}'s vocabulary of {vocab}"),
            ));
        }
    }
    Ok(())
}

/// Checks that `parents` name rows of a session of `rows` rows.
pub(crate) fn check_parents(rows: usize, parents: &[usize]) -> OperationResult<()> {
    match parents.iter().find(|&&p| p >= rows) {
        Some(p) => Err(OperationError::bad_input(
            "parents",
            format!("row {p} does not exist ({rows} rows)"),
        )),
        None if parents.is_empty() => Err(OperationError::bad_input(
            "parents",
            "at least one row must be kept",
        )),
        None => Ok(()),
    }
}

/// Checks that `what` gives one item per row of a session of `rows` rows.
pub(crate) fn check_per_row(rows: usize, what: &str, count: usize) -> OperationResult<()> {
    if count != rows {
        return Err(OperationError::bad_input(
            what,
            format!("{count} given for {rows} rows"),
        ));
    }
    Ok(())
}

/// Teacher forcing shared by the sessions: the first target token's
/// log-probability comes from the session's current log-probs, the rest from
/// one `run` over the targets but their last token, which returns the
/// log-probability of `wanted[i]` after each picked (row, index) `i`.
pub(crate) fn score_with(
    session: &dyn Session,
    vocab: usize,
    targets: &[Vec<u32>],
    run: impl FnOnce(&[Vec<u32>], &[(usize, usize)], &[u32]) -> OperationResult<Vec<f32>>,
) -> OperationResult<Vec<Vec<f32>>> {
    let (first, inputs, picks) = teacher_forcing_plan(session, vocab, targets)?;
    let rest: Vec<f32> = if picks.is_empty() {
        Vec::new()
    } else {
        // The token each pick is asked about: the target's next one.
        let wanted: Vec<u32> = targets
            .iter()
            .flat_map(|t| t.iter().skip(1).copied())
            .collect();
        run(&inputs, &picks, &wanted)?
    };
    let mut rest = rest.into_iter();
    Ok(targets
        .iter()
        .zip(&first)
        .map(|(target, first)| {
            target
                .iter()
                .enumerate()
                .map(|(t, &token)| match t {
                    0 => first[token as usize],
                    _ => rest.next().expect("one pick per target position"),
                })
                .collect()
        })
        .collect())
}

/// `log_probs[i][wanted[i]]` for log-probabilities [picks, vocab]; only
/// those values leave the device.
pub(crate) fn gather(log_probs: &Tensor, wanted: &[u32]) -> OperationResult<Vec<f32>> {
    (|| {
        let wanted = Tensor::from_vec(wanted.to_vec(), (wanted.len(), 1), log_probs.device())?;
        log_probs.gather(&wanted, 1)?.flatten_all()?.to_vec1()
    })()
    .map_err(|e| OperationError::model("score", e))
}

/// [`score_with`], keeping whole distributions.
pub(crate) fn distributions_with(
    session: &dyn Session,
    vocab: usize,
    targets: &[Vec<u32>],
    run: impl FnOnce(&[Vec<u32>], &[(usize, usize)]) -> OperationResult<Tensor>,
) -> OperationResult<Vec<Vec<Vec<f32>>>> {
    let (first, inputs, picks) = teacher_forcing_plan(session, vocab, targets)?;
    let rest: Vec<Vec<f32>> = if picks.is_empty() {
        Vec::new()
    } else {
        run(&inputs, &picks)?
            .to_vec2()
            .map_err(|e| OperationError::model("score", e))?
    };
    let mut rest = rest.into_iter();
    Ok(targets
        .iter()
        .zip(first)
        .map(|(target, first)| {
            std::iter::once(first)
                .chain(
                    (1..target.len()).map(|_| rest.next().expect("one pick per target position")),
                )
                .take(target.len())
                .collect()
        })
        .collect())
}

/// What both kinds of teacher forcing start from: the checked targets' first
/// log-probabilities (the session's current ones), the inputs that give the
/// rest (every target but its last token) and the positions to read.
#[allow(clippy::type_complexity)]
fn teacher_forcing_plan(
    session: &dyn Session,
    vocab: usize,
    targets: &[Vec<u32>],
) -> OperationResult<(Vec<Vec<f32>>, Vec<Vec<u32>>, Vec<(usize, usize)>)> {
    check_per_row(session.rows(), "targets", targets.len())?;
    if let Some(bad) = targets.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(OperationError::bad_input(
            "targets",
            format!("token {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    let first = session.log_probs()?;
    let inputs: Vec<Vec<u32>> = targets
        .iter()
        .map(|t| t[..t.len().saturating_sub(1)].to_vec())
        .collect();
    let picks: Vec<(usize, usize)> = inputs
        .iter()
        .enumerate()
        .flat_map(|(r, t)| (0..t.len()).map(move |i| (r, i)))
        .collect();
    Ok((first, inputs, picks))
}

/// Adapts a [`Session`] to the row-list interface of [`crate::decoding`]:
/// each call gets the full rows (output start included), finds every row's
/// parent among the previous call's rows by its prefix, reorders the session
/// to them and runs only the newest token of each row.
pub struct Stepper<'s> {
    session: Box<dyn Session + 's>,
    rows_per_context: usize,
    previous: Option<Vec<Vec<u32>>>,
}

impl<'s> Stepper<'s> {
    /// Steps `session` (one row per context), asked for `rows_per_context`
    /// rows (beams) per context: row `i * rows_per_context + j` belongs to
    /// context `i`.
    pub fn new(session: Box<dyn Session + 's>, rows_per_context: usize) -> Stepper<'s> {
        Stepper {
            session,
            rows_per_context: rows_per_context.max(1),
            previous: None,
        }
    }

    /// Log-probabilities of the token after each of `rows`.
    pub fn next_log_probs(&mut self, rows: &[Vec<u32>]) -> OperationResult<Vec<Vec<f32>>> {
        let per = self.rows_per_context;
        match self.previous.take() {
            None => {
                let parents: Vec<usize> = (0..rows.len()).map(|r| r / per).collect();
                if parents.len() != self.session.rows() || per > 1 {
                    self.session.select(&parents)?;
                }
            }
            Some(old) => {
                let parents = crate::decoding::find_parents(&old, rows, per)?;
                if parents.iter().enumerate().any(|(i, &p)| i != p) || parents.len() != old.len() {
                    self.session.select(&parents)?;
                }
                let last: Vec<u32> = rows.iter().map(|row| row[row.len() - 1]).collect();
                self.session.advance(&last)?;
            }
        }
        self.previous = Some(rows.to_vec());
        self.session.log_probs()
    }
}
