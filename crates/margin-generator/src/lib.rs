//! Generators on candle, shaped for RAG: many passage-conditioned rows scored
//! and extended at once.
//!
//! Today: [`bart`], `BartForConditionalGeneration` written on candle and
//! checked against Hugging Face transformers. The `Generator` trait, GGUF
//! decoder LLMs and decoding come with the rest of issue 4.

#![warn(missing_docs)]

pub mod bart;
