//! Generators on candle, shaped for RAG: many passage-conditioned rows scored
//! and extended at once.
//!
//! Today: [`bart`], `BartForConditionalGeneration` written on candle, and
//! [`decoding`], greedy and beam search with transformers' semantics, both
//! checked against Hugging Face transformers. The `Generator` trait, KV
//! caches and GGUF decoder LLMs come with the rest of issue 4.

#![warn(missing_docs)]

pub mod bart;
pub mod decoding;
