//! Generators on candle, shaped for RAG: many passage-conditioned rows scored
//! and extended at once.
//!
//! Today: [`bart`], `BartForConditionalGeneration` written on candle, and
//! [`decoding`], greedy and beam search with transformers' semantics, both
//! checked against Hugging Face transformers; and [`gguf`], decoder LLMs from
//! GGUF files (llama and Gemma 3 families), one sequence at a time for now.
//! The `Generator` trait, KV caches shared across beams, padded batched
//! prefill and sampling come with the rest of issue 4.

#![warn(missing_docs)]

pub mod bart;
pub mod chat;
pub mod decoding;
pub mod gemma3;
pub mod gguf;
