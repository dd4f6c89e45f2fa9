//! Evaluation of margin in the papers' own terms: SQuAD v1.1 Exact Match and F1
//! for answers, DPR's answer-string recall and gold-passage recall@k for
//! retrieval, over question files in the shapes the public data sets use.

#![warn(missing_docs)]

pub mod answers;
pub mod qa;
pub mod retrieval;

pub use answers::{exact_match, f1, has_answer, normalize_answer};
pub use qa::{read_qa_file, QaExample};
pub use retrieval::{render_table, RetrievalMetrics, RetrievalSummary, Retrieved};
