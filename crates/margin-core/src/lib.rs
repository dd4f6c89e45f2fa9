//! Shared vocabulary of margin: passages, configuration and the error type.
//!
//! Every other crate depends on this one, so it stays light: no model, store or
//! server code lives here.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod passage;

pub use config::Config;
pub use error::{OperationError, OperationResult};
pub use passage::{stable_id, Document, Passage};
