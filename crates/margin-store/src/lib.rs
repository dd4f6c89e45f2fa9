//! Where passages are kept and searched.
//!
//! - [`VectorStore`], the dense seam, with two backends: [`EdgeStore`]
//!   (Qdrant Edge, in-process, the embedded default) and [`QdrantStore`] (a
//!   Qdrant server or cluster over gRPC).
//! - [`Bm25Index`], keyword search over passage titles and texts with tantivy
//!   (English stemming).
//! - [`reciprocal_rank_fusion`], which the hybrid mode uses to merge rankings.
//!
//! Every backend stores passages per [`DocVersion`], so the indexer can write
//! a document's new version in full before it drops the old one.

#![warn(missing_docs)]

mod bm25;
mod edge;
mod fusion;
mod qdrant;
mod vector;

pub use bm25::Bm25Index;
pub use edge::{EdgeOptions, EdgeStore};
pub use fusion::{reciprocal_rank_fusion, Ranking, RRF_K};
pub use qdrant::{QdrantOptions, QdrantStore};
pub use vector::{DenseSearch, DocVersion, PassagePoint, StoredHit, VectorStore};
