//! The `Encoder` seam: text in, dense vectors out.
//!
//! [`BertEncoder`] runs BERT-family bi-encoders on candle, in either of the
//! two styles retrieval uses:
//! - DPR: separate question and passage models, CLS pooling, no normalisation,
//!   passages encoded as the pair (title, text);
//! - sentence-transformers: one shared model, with the pooling its
//!   `1_Pooling/config.json` declares and L2 normalisation when `modules.json`
//!   lists a `Normalize` module.

#![warn(missing_docs)]

mod bert;
mod bert_model;
mod gelu;
mod pooling;
mod softmax;
mod tokenize;
pub mod vectors_file;

#[cfg(test)]
mod test_util {
    use candle_core::Tensor;

    /// The largest absolute value in `t`.
    pub fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }
}

pub use bert::{input_limit, BertEncoder, BertEncoderOptions};
pub use pooling::{Pooling, PoolingSpec};
pub use vectors_file::VectorsFile;

use margin_core::OperationResult;

/// A passage as the encoder sees it.
#[derive(Debug, Clone, Copy)]
pub struct PassageText<'a> {
    /// The document title.
    pub title: &'a str,
    /// The passage text.
    pub text: &'a str,
}

impl PassageText<'_> {
    /// The passage as one input for models trained on single texts:
    /// `title: text`, or the text alone when there is no title.
    pub fn joined(&self) -> std::borrow::Cow<'_, str> {
        if self.title.is_empty() {
            self.text.into()
        } else {
            format!("{}: {}", self.title, self.text).into()
        }
    }
}

/// Turns questions and passages into vectors in one shared space.
pub trait Encoder: Send + Sync {
    /// Name of the model, for logs and index metadata.
    fn name(&self) -> &str;

    /// The implementation running the model (`candle`, `onnx`), for logs and reports.
    fn backend(&self) -> &'static str;

    /// Length of every vector.
    fn dim(&self) -> usize;

    /// Longest input in tokens; longer inputs are truncated.
    fn max_length(&self) -> usize;

    /// Whether vectors have unit length, so inner product equals cosine.
    fn normalized(&self) -> bool;

    /// Encodes questions, one vector each, in input order.
    fn encode_questions(&self, questions: &[&str]) -> OperationResult<Vec<Vec<f32>>>;

    /// Encodes passages, one vector each, in input order.
    fn encode_passages(&self, passages: &[PassageText<'_>]) -> OperationResult<Vec<Vec<f32>>>;
}
