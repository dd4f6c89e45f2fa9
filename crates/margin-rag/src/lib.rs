//! Retrieval-augmented generation as Lewis et al. (2020) define it, over any
//! [`margin_generator::Generator`]: a document prior p(z|x) from retrieval
//! scores ([`prior`]), contextualised inputs ([`inputs`]), RAG-Token decoding
//! with the marginal over passages at every step ([`token`]), RAG-Sequence
//! decoding, thorough and fast ([`sequence`]), the negative log-likelihood of
//! an answer under either model ([`nll`]), and the posterior p(z|x,y) that
//! attributes an answer to its passages ([`attribution`]).
//!
//! All k passages of a question run as one batch of generator rows, read
//! once ([`prefill`]) and shared by every decoding of them.

#![warn(missing_docs)]

pub mod attribution;
pub mod inputs;
pub mod nll;
pub mod prefill;
pub mod prior;
pub mod sequence;
pub mod token;

mod math;

pub use prefill::Prefilled;
pub use prior::document_log_prior;

/// How answers are decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeSettings {
    /// Beams (1: greedy).
    pub num_beams: usize,
    /// Longest output, the generator's start tokens included.
    pub max_length: usize,
    /// End of sequence is banned below this length.
    pub min_length: usize,
    /// N-grams of this size may occur only once (0: off).
    pub no_repeat_ngram_size: usize,
    /// Beam hypotheses are scored sum(log p) / length^this.
    pub length_penalty: f32,
    /// A beam search stops once it has `num_beams` finished hypotheses.
    pub early_stopping: bool,
    /// Token forced as the first generated one (bart-large: BOS).
    pub forced_bos_token_id: Option<u32>,
    /// Token forced at `max_length` (BART: EOS).
    pub forced_eos_token_id: Option<u32>,
}

impl DecodeSettings {
    /// The step rules these settings give, for end-of-sequence token `eos`.
    pub fn rules(&self, eos: u32) -> margin_generator::decoding::StepRules {
        margin_generator::decoding::StepRules {
            eos_token_id: eos,
            max_length: self.max_length,
            min_length: self.min_length,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
            forced_bos_token_id: self.forced_bos_token_id,
            forced_eos_token_id: self.forced_eos_token_id,
        }
    }

    /// The beam settings these settings give, padding with `pad`.
    pub fn beams(
        &self,
        pad: u32,
        num_return_sequences: usize,
    ) -> margin_generator::decoding::BeamSettings {
        margin_generator::decoding::BeamSettings {
            num_beams: self.num_beams,
            length_penalty: self.length_penalty,
            early_stopping: self.early_stopping,
            num_return_sequences,
            pad_token_id: pad,
        }
    }
}

/// Hears of decoding as it goes: before each step, for every question (by
/// its index in the batch), the tokens of its leading hypothesis so far, the
/// generator's start tokens included. A beam search may later prefer another
/// hypothesis, so what it hears is a preview, not a prefix of the answer.
pub type StepObserver<'a> = &'a mut dyn FnMut(usize, &[u32]);

/// Where a decoding call spent its time (added to, so one value can sum
/// several calls).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Running the contexts through the generator (encoder or prompt prefill).
    pub prefill: std::time::Duration,
    /// Choosing tokens, step by step.
    pub decode: std::time::Duration,
    /// RAG-Sequence thorough decoding: scoring every hypothesis against every passage.
    pub rescore: std::time::Duration,
    /// RAG-Token: scoring each answer against each passage, for its posterior.
    pub attribute: std::time::Duration,
}

/// One question's passages, as the generator takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// Contextualised input token ids, one per passage.
    pub contexts: Vec<Vec<u32>>,
    /// Log prior log p(z|x) of each passage ([`document_log_prior`]).
    pub doc_log_prior: Vec<f32>,
}
