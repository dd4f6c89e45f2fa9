//! Generators on candle, shaped for RAG: many passage-conditioned rows scored
//! and extended at once.
//!
//! [`generator`] is the seam: a [`Generator`] prepares the k contexts of a
//! question as one batch and its [`Session`] steps, reorders and
//! force-decodes rows. Behind it: [`bart`], `BartForConditionalGeneration`
//! written on candle, and [`gguf`], decoder LLMs from GGUF files (llama
//! family and Gemma 3, [`llm`]) with padded batched prefill. [`decoding`]
//! holds greedy search, beam search and sampling with transformers'
//! semantics; [`chat`] renders the chat templates GGUF files carry.

#![warn(missing_docs)]

mod attention;
pub mod bart;
pub mod chat;
pub mod decoding;
pub mod generator;
pub mod gguf;
pub mod llm;
mod q8;

pub use generator::{Generator, Limits, Session, SpecialTokens, Stepper};
