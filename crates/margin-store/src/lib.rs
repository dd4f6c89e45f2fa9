//! Where passages are kept and searched.
//!
//! Today: [`Bm25Index`], keyword search over passage titles and texts with
//! tantivy (English stemming), kept per document so that replacing or deleting
//! a document is one atomic commit; and [`reciprocal_rank_fusion`], which the
//! hybrid mode uses to merge dense and BM25 rankings. The `VectorStore` seam
//! (Qdrant Edge, Qdrant cluster) belongs here too and is not written yet.

#![warn(missing_docs)]

mod bm25;
mod fusion;

pub use bm25::{Bm25Hit, Bm25Index};
pub use fusion::{reciprocal_rank_fusion, Ranking, RRF_K};
