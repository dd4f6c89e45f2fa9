//! Readers that turn one file into documents, chosen by file extension.

mod html;
mod markdown;
mod pdf;
mod records;

use std::fs;
use std::path::Path;

use margin_core::{stable_id, Document, OperationError, OperationResult};
use serde::Serialize;

/// File formats margin can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Plain UTF-8 text (`.txt`).
    Text,
    /// Markdown (`.md`, `.markdown`), read as its rendered text.
    Markdown,
    /// HTML (`.html`, `.htm`), read as its visible text.
    Html,
    /// PDF (`.pdf`), read as its extracted text.
    Pdf,
    /// margin's corpus JSONL (`.jsonl`): one record `{id, title, text}` a line.
    Jsonl,
    /// DPR's passage file `psgs_w100.tsv` (`.tsv`): columns `id`, `text`, `title`.
    Tsv,
}

/// The extensions [`Format::from_path`] knows, for messages.
pub const SUPPORTED_EXTENSIONS: &str = ".txt, .md, .markdown, .html, .htm, .pdf, .jsonl, .tsv";

impl Format {
    /// The format a file's extension names (case-insensitive), if margin reads it.
    pub fn from_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match extension.as_str() {
            "txt" => Format::Text,
            "md" | "markdown" => Format::Markdown,
            "html" | "htm" => Format::Html,
            "pdf" => Format::Pdf,
            "jsonl" => Format::Jsonl,
            "tsv" => Format::Tsv,
            _ => return None,
        })
    }

    /// Reads `path` as this format.
    ///
    /// Single-document formats give one document with id `stable_id(path)` and
    /// source `path`, both from the path as given. Corpus formats give one
    /// document a record, with the record's id and source `path:line`.
    pub fn read(self, path: &Path) -> OperationResult<Vec<Document>> {
        match self {
            Format::Text => {
                let text = read_text(path)?;
                Ok(vec![file_document(path, None, text)?])
            }
            Format::Markdown => {
                let (title, text) = markdown::extract(&read_text(path)?);
                Ok(vec![file_document(path, title, text)?])
            }
            Format::Html => {
                let (title, text) = html::extract(&read_text(path)?);
                Ok(vec![file_document(path, title, text)?])
            }
            Format::Pdf => {
                let text = pdf::extract(&read_bytes(path)?).map_err(|m| bad_input(path, m))?;
                Ok(vec![file_document(path, None, text)?])
            }
            Format::Jsonl => records::read_jsonl(path),
            Format::Tsv => records::read_dpr_tsv(path),
        }
    }
}

/// Reads the documents in one file, choosing the reader by its extension.
pub fn read_documents(path: &Path) -> OperationResult<Vec<Document>> {
    let format = Format::from_path(path).ok_or_else(|| bad_input(path, unsupported_type()))?;
    format.read(path)
}

/// Reads the documents in `path` as if the file were at `named`: ids,
/// sources and errors name `named`, and the format follows its extension.
/// For files received elsewhere (an upload held in a staging folder under the
/// same file name, so that titles falling back to the stem agree), so that
/// their documents keep one id wherever the bytes were kept meanwhile.
pub fn read_documents_as(path: &Path, named: &Path) -> OperationResult<Vec<Document>> {
    let format = Format::from_path(named).ok_or_else(|| bad_input(named, unsupported_type()))?;
    let given = path.to_string_lossy().into_owned();
    let wanted = named.to_string_lossy().into_owned();
    let documents = format.read(path).map_err(|e| match e {
        OperationError::BadInput { what, message } => {
            OperationError::bad_input(what.replacen(&given, &wanted, 1), message)
        }
        other => other,
    })?;
    Ok(documents
        .into_iter()
        .map(|mut doc| {
            if doc.source == given {
                // A single-document file: its id is its source's.
                doc.source = wanted.clone();
                doc.id = stable_id(&wanted);
            } else if let Some(line) = doc.source.strip_prefix(&given) {
                // A corpus record (`path:line`) keeps its own id.
                doc.source = format!("{wanted}{line}");
            }
            doc
        })
        .collect())
}

/// Why a file with an unknown extension is not read.
pub(crate) fn unsupported_type() -> String {
    format!("unsupported file type; margin reads {SUPPORTED_EXTENSIONS}")
}

/// A bad-input error naming `path`.
fn bad_input(path: &Path, message: impl Into<String>) -> OperationError {
    OperationError::bad_input(path.display().to_string(), message)
}

fn read_bytes(path: &Path) -> OperationResult<Vec<u8>> {
    fs::read(path).map_err(|e| OperationError::io(path, e))
}

/// Reads a text file, refusing binary files and text that is not UTF-8.
fn read_text(path: &Path) -> OperationResult<String> {
    let bytes = read_bytes(path)?;
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(bad_input(
            path,
            format!("binary file (NUL byte at offset {offset}), not text; is the extension right?"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        bad_input(
            path,
            format!(
                "not valid UTF-8 (bad byte at offset {}); convert it first, e.g. `iconv -f LATIN1 -t UTF-8`",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// The document of a single-document file; its title falls back to the file stem.
fn file_document(path: &Path, title: Option<String>, text: String) -> OperationResult<Document> {
    if text.trim().is_empty() {
        return Err(bad_input(
            path,
            "no text: the document is empty or only whitespace",
        ));
    }
    let source = path.to_string_lossy().into_owned();
    let title = title.filter(|t| !t.is_empty()).unwrap_or_else(|| {
        path.file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(Document {
        id: stable_id(&source),
        title,
        text,
        source,
    })
}

/// `text` with each whitespace run replaced by one space, trimmed.
fn normalize_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Collects the text of a rendered document as paragraphs.
#[derive(Default)]
struct Paragraphs {
    done: Vec<String>,
    current: String,
}

impl Paragraphs {
    fn push(&mut self, text: &str) {
        self.current.push_str(text);
    }

    /// Closes the paragraph being collected, if it has any text.
    fn end(&mut self) {
        let paragraph = normalize_whitespace(&self.current);
        if !paragraph.is_empty() {
            self.done.push(paragraph);
        }
        self.current.clear();
    }

    /// The paragraphs, separated by blank lines.
    fn finish(mut self) -> String {
        self.end();
        self.done.join("\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_extensions_case_insensitively() {
        assert_eq!(Format::from_path(Path::new("a/b.TXT")), Some(Format::Text));
        assert_eq!(
            Format::from_path(Path::new("x.markdown")),
            Some(Format::Markdown)
        );
        assert_eq!(Format::from_path(Path::new("x.Htm")), Some(Format::Html));
        assert_eq!(
            Format::from_path(Path::new("psgs_w100.tsv")),
            Some(Format::Tsv)
        );
        assert_eq!(Format::from_path(Path::new("notes.docx")), None);
        assert_eq!(Format::from_path(Path::new("README")), None);
    }

    #[test]
    fn documents_read_as_another_path_take_its_ids_and_sources() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staging").join("notes.md");
        std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
        std::fs::write(&staged, "Tides follow the moon.").unwrap();
        let named = Path::new("uploads/notes.md");
        let docs = read_documents_as(&staged, named).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].source, "uploads/notes.md");
        assert_eq!(docs[0].id, stable_id("uploads/notes.md"));
        assert_eq!(docs[0].title, "notes");

        let corpus = dir.path().join("staging").join("c.jsonl");
        std::fs::write(
            &corpus,
            "{\"id\": \"d1\", \"title\": \"T\", \"text\": \"x y\"}\n",
        )
        .unwrap();
        let docs = read_documents_as(&corpus, Path::new("uploads/c.jsonl")).unwrap();
        assert_eq!(
            (docs[0].id.as_str(), docs[0].source.as_str()),
            ("d1", "uploads/c.jsonl:1")
        );

        std::fs::write(&staged, "").unwrap();
        let err = read_documents_as(&staged, named).unwrap_err().to_string();
        assert!(
            err.starts_with("uploads/notes.md:") && !err.contains("staging"),
            "{err}"
        );
    }

    #[test]
    fn paragraphs_are_normalised_and_blank_ones_dropped() {
        let mut p = Paragraphs::default();
        p.push("  Hello\n  world ");
        p.end();
        p.end();
        p.push("\t");
        p.end();
        p.push("Second");
        assert_eq!(p.finish(), "Hello world\n\nSecond");
    }
}
