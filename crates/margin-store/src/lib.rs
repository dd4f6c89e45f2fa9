//! Where passages are kept and searched.
//!
//! Today: [`Bm25Index`], keyword search over passage titles and texts with
//! tantivy (English stemming), kept per document so that replacing or deleting
//! a document is one atomic commit. The `VectorStore` seam (Qdrant Edge, Qdrant
//! cluster) and hybrid fusion belong here too and are not written yet.

#![warn(missing_docs)]

mod bm25;

pub use bm25::{Bm25Hit, Bm25Index};
