//! Documents and the passages they are split into.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A retrieval unit: about a hundred words of one document, with its title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passage {
    /// Stable id: `{doc_id}#{position}`.
    pub id: String,
    /// Id of the document the passage was cut from.
    pub doc_id: String,
    /// Title shown with the passage and prepended to it for encoding.
    pub title: String,
    /// The passage text.
    pub text: String,
    /// Where the document came from (a path, or a path and record number).
    pub source: String,
    /// Index of the passage within its document, from 0.
    pub position: usize,
}

impl Passage {
    /// Builds the passage id from a document id and position.
    pub fn make_id(doc_id: &str, position: usize) -> String {
        format!("{doc_id}#{position}")
    }
}

/// A document as read from its source, before splitting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Stable id: the record's own id for corpus files, else derived from the source.
    pub id: String,
    /// Title: the record's, the HTML `<title>`, the first Markdown heading, or the file stem.
    pub title: String,
    /// Plain text, paragraphs separated by blank lines.
    pub text: String,
    /// Where the document came from.
    pub source: String,
}

/// A short, stable hexadecimal id for a string (first 16 hex digits of its SHA-256).
pub fn stable_id(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_id_is_deterministic_and_distinct() {
        assert_eq!(stable_id("a.txt"), stable_id("a.txt"));
        assert_ne!(stable_id("a.txt"), stable_id("b.txt"));
        assert_eq!(stable_id("a.txt").len(), 16);
    }

    #[test]
    fn passage_id_joins_document_and_position() {
        assert_eq!(Passage::make_id("doc", 3), "doc#3");
    }
}
