//! Evaluation of margin in the papers' own terms: SQuAD v1.1 Exact Match and F1
//! for answers, DPR's answer-string recall and gold-passage recall@k for
//! retrieval, over question files in the shapes the public data sets use;
//! predictions kept for resuming, and the run as metrics JSON and an HTML
//! report.

#![warn(missing_docs)]

pub mod answers;
pub mod predictions;
pub mod qa;
pub mod report;
pub mod retrieval;
pub mod summary;
pub mod svg;

pub use answers::{exact_match, f1, has_answer, normalize_answer};
pub use predictions::{PredictedCitation, Prediction, PredictionLog, RunSettings, StageTimings};
pub use qa::{check_unique_ids, read_qa_file, QaExample};
pub use report::render_html;
pub use retrieval::{render_table, RetrievalMetrics, RetrievalSummary, Retrieved};
pub use summary::{AnswerSummary, EvalMetrics, Percentiles};
