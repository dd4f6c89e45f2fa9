//! Reads documents and splits them into the passages margin retrieves.
//!
//! Readers, chosen by file extension, turn a file into [`Document`]s: plain
//! text, Markdown, HTML, PDF, margin's corpus JSONL and DPR's `psgs_w100.tsv`.
//! A [`Chunker`] splits each document into passages of about a hundred words,
//! cut at sentence ends. [`ingest_paths`] does both for a whole batch of files
//! and directories, reporting on each file; [`ingest_file`] does one file.
//!
//! [`Document`]: margin_core::Document

#![warn(missing_docs)]

mod batch;
mod chunk;
mod readers;

pub use batch::{ingest_file, ingest_paths, FileOutcome, FileReport, IngestReport, Totals};
pub use chunk::Chunker;
pub use readers::{read_documents, read_documents_as, Format, SUPPORTED_EXTENSIONS};
