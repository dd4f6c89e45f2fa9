//! Corpus files that hold one document a line: margin's JSONL and DPR's TSV.
//!
//! A record's document keeps the record's id, so that evaluation data naming
//! gold passages by id still matches. Its source is `path:line` (line numbers
//! from 1), which finds the record again; a JSONL record's own `source` field
//! is not used, because in the corpora we read it names a dataset, not a place.
//!
//! A malformed line makes the whole file fail, with the line number: a corpus
//! missing records would skew every evaluation run on it without a sign.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use margin_core::{Document, OperationError, OperationResult};
use serde::Deserialize;
use serde_json::Value;

use super::bad_input;

/// One line of margin's corpus JSONL. Other fields (such as `source`) are ignored.
#[derive(Debug, Deserialize)]
struct Record {
    id: Value,
    title: String,
    text: String,
}

/// Reads a corpus JSONL file: `{"id", "title", "text"}` a line, blank lines skipped.
pub(super) fn read_jsonl(path: &Path) -> OperationResult<Vec<Document>> {
    let mut records = Records::new(path);
    for_each_line(path, |number, line| {
        let record: Record = serde_json::from_str(line).map_err(json_error)?;
        let id = match record.id {
            Value::String(id) => id,
            Value::Number(id) => id.to_string(),
            other => return Err(format!("`id` must be a string or a number, not {other}")),
        };
        records.add(number, id, record.title, record.text)
    })?;
    records.finish()
}

/// Reads DPR's `psgs_w100.tsv`: a header naming the columns `id`, `text` and
/// `title` (in any order), then one passage a row.
///
/// DPR wrote fields CSV-style: a field may be wrapped in double quotes, with
/// inner quotes doubled; such quoting is undone.
pub(super) fn read_dpr_tsv(path: &Path) -> OperationResult<Vec<Document>> {
    let mut records = Records::new(path);
    // (id, text, title) column indexes and the column count, once the header is read.
    let mut layout: Option<([usize; 3], usize)> = None;
    for_each_line(path, |number, line| {
        let fields: Vec<&str> = line.split('\t').collect();
        let Some(([id, text, title], width)) = layout else {
            let column = |name: &str| fields.iter().position(|f| f.trim() == name);
            let (Some(id), Some(text), Some(title)) =
                (column("id"), column("text"), column("title"))
            else {
                return Err(format!(
                    "the header must name the columns id, text and title (DPR's psgs_w100.tsv), found `{}`",
                    fields.join("\\t")
                ));
            };
            layout = Some(([id, text, title], fields.len()));
            return Ok(());
        };
        if fields.len() != width {
            return Err(format!(
                "expected {width} tab-separated fields as in the header, found {}",
                fields.len()
            ));
        }
        records.add(
            number,
            unquote(fields[id]),
            unquote(fields[title]),
            unquote(fields[text]),
        )
    })?;
    records.finish()
}

/// Documents read so far, and the line each id was first seen on.
struct Records<'a> {
    path: &'a Path,
    documents: Vec<Document>,
    lines: HashMap<String, usize>,
}

impl<'a> Records<'a> {
    fn new(path: &'a Path) -> Self {
        Self {
            path,
            documents: Vec::new(),
            lines: HashMap::new(),
        }
    }

    fn add(&mut self, line: usize, id: String, title: String, text: String) -> Result<(), String> {
        if id.trim().is_empty() {
            return Err("the record has an empty id".to_string());
        }
        if text.trim().is_empty() {
            return Err(format!("record `{id}` has no text"));
        }
        if let Some(first) = self.lines.insert(id.clone(), line) {
            return Err(format!("id `{id}` was already used on line {first}"));
        }
        self.documents.push(Document {
            id,
            title,
            text,
            source: format!("{}:{line}", self.path.display()),
        });
        Ok(())
    }

    fn finish(self) -> OperationResult<Vec<Document>> {
        if self.documents.is_empty() {
            return Err(bad_input(
                self.path,
                "no records: the file holds no documents",
            ));
        }
        Ok(self.documents)
    }
}

/// Calls `each` with the number (from 1) and text of every non-blank line,
/// stopping at the first error, which is reported with its line number.
fn for_each_line(
    path: &Path,
    mut each: impl FnMut(usize, &str) -> Result<(), String>,
) -> OperationResult<()> {
    let file = File::open(path).map_err(|e| OperationError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|e| OperationError::io(path, e))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let line = std::str::from_utf8(&buffer).map_err(|e| {
            bad_input(
                path,
                format!(
                    "line {number}: not valid UTF-8 (bad byte at column {})",
                    e.valid_up_to() + 1
                ),
            )
        })?;
        let line = line.trim_end_matches(['\n', '\r']);
        let line = if number == 1 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        if line.trim().is_empty() {
            continue;
        }
        each(number, line)
            .map_err(|message| bad_input(path, format!("line {number}: {message}")))?;
    }
}

/// A serde_json error without its position in the line, which is always line 1
/// here and would read as the file's line 1; the column is kept.
fn json_error(error: serde_json::Error) -> String {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&position) {
        Some(message) => format!("{message} (column {})", error.column()),
        None => message,
    }
}

/// A DPR TSV field with CSV-style quoting undone.
fn unquote(field: &str) -> String {
    match field.strip_prefix('"').and_then(|f| f.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => field.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_strips_outer_quotes_and_undoubles_inner_ones() {
        assert_eq!(
            unquote(r#""Aaron ( or ; ""Ahärôn"") is a prophet""#),
            r#"Aaron ( or ; "Ahärôn") is a prophet"#
        );
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(unquote("\""), "\"");
    }

    #[test]
    fn json_errors_lose_the_misleading_line_but_keep_the_column() {
        let error = serde_json::from_str::<Record>(r#"{"id": "a", "text": "t"}"#).unwrap_err();
        assert_eq!(json_error(error), "missing field `title` (column 24)");
    }
}
