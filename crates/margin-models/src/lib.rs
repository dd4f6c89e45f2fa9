//! Model catalogue and cache.
//!
//! The catalogue (`configs/models.toml`) says which files a model is made of,
//! their SHA-256, and where they can be fetched. [`ModelStore`] fetches them
//! into `<data_dir>/models/<name>/`, verifies every file before the model
//! becomes visible, and prepares what the runtime needs but the source lacks
//! (a `tokenizer.json` built from a GGUF file's metadata).

#![warn(missing_docs)]

pub mod catalogue;
pub mod checksum;
pub mod gguf_tokenizer;
mod sources;
pub mod store;

pub use catalogue::{Catalogue, FileSpec, ModelEntry, Role, SourceSpec};
pub use store::{ModelStatus, ModelStore, PullOutcome};
