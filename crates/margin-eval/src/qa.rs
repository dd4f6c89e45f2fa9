//! Question files: one JSON object a line, in margin's shared format or in the
//! shapes NQ-open and FlashRAG publish, read into one type.

use std::path::Path;

use margin_core::{OperationError, OperationResult};
use serde::{Deserialize, Serialize};

/// One question with the answers it is scored against.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QaExample {
    /// The file's id, or `q{line}` where the format has none (NQ-open).
    pub id: String,
    /// The question as asked.
    pub question: String,
    /// Acceptable answers; a prediction scores its best match among them.
    pub answers: Vec<String>,
    /// Corpus ids of the passages that answer the question; empty when the
    /// data set does not name them.
    pub gold_ids: Vec<String>,
}

/// A line in any of the three formats; what they do not share is optional.
#[derive(Deserialize)]
struct QaLine {
    id: Option<String>,
    question: Option<String>,
    #[serde(alias = "answer", alias = "golden_answers")]
    answers: Option<Vec<String>>,
    #[serde(default)]
    gold_ids: Vec<String>,
}

/// Reads a JSONL question file: margin's shared format (`id`, `question`,
/// `answers`, `gold_ids`), NQ-open (`question`, `answer`) or FlashRAG (`id`,
/// `question`, `golden_answers`). Empty lines are skipped.
pub fn read_qa_file(path: &Path) -> OperationResult<Vec<QaExample>> {
    let text = std::fs::read_to_string(path).map_err(|e| OperationError::io(path, e))?;
    text.lines()
        .zip(1..)
        .filter(|(line, _)| !line.trim().is_empty())
        .map(|(line, line_number)| {
            parse_line(line, line_number).map_err(|message| {
                OperationError::bad_input(format!("{}:{line_number}", path.display()), message)
            })
        })
        .collect()
}

/// Refuses question sets in which two questions share an id: predictions are
/// kept, and resumed, by id.
pub fn check_unique_ids(path: &Path, examples: &[QaExample]) -> OperationResult<()> {
    let mut seen = std::collections::HashSet::new();
    match examples.iter().find(|e| !seen.insert(e.id.as_str())) {
        Some(repeated) => Err(OperationError::bad_input(
            path.display().to_string(),
            format!(
                "question id `{}` appears more than once; every question needs its own id",
                repeated.id
            ),
        )),
        None => Ok(()),
    }
}

fn parse_line(line: &str, line_number: usize) -> Result<QaExample, String> {
    let QaLine {
        id,
        question,
        answers,
        gold_ids,
    } = serde_json::from_str(line).map_err(|e| {
        format!("not a question record ({e}); expected a JSON object with `question` and `answers`")
    })?;
    let question = question
        .filter(|q| !q.trim().is_empty())
        .ok_or("missing or empty `question`")?;
    let answers = answers.filter(|a| !a.is_empty()).ok_or(
        "missing or empty `answers` (NQ-open calls it `answer`, FlashRAG `golden_answers`)",
    )?;
    Ok(QaExample {
        id: id.unwrap_or_else(|| format!("q{line_number}")),
        question,
        answers,
        gold_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_lines(lines: &str) -> (tempfile::NamedTempFile, OperationResult<Vec<QaExample>>) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(lines.as_bytes()).unwrap();
        let examples = read_qa_file(file.path());
        (file, examples)
    }

    #[test]
    fn reads_all_three_formats() {
        let (_file, examples) = read_lines(concat!(
            r#"{"id": "nq-1", "question": "who?", "answers": ["Ann"], "gold_ids": ["p1", "p2"]}"#,
            "\n\n",
            r#"{"question": "when?", "answer": ["1999", "in 1999"]}"#,
            "\n",
            r#"{"id": "test_0", "question": "where?", "golden_answers": ["Oslo"], "metadata": {}}"#,
            "\n",
        ));
        let expected = [
            ("nq-1", "who?", vec!["Ann"], vec!["p1", "p2"]),
            ("q3", "when?", vec!["1999", "in 1999"], vec![]),
            ("test_0", "where?", vec!["Oslo"], vec![]),
        ]
        .map(|(id, question, answers, gold_ids)| QaExample {
            id: id.into(),
            question: question.into(),
            answers: answers.into_iter().map(Into::into).collect(),
            gold_ids: gold_ids.into_iter().map(Into::into).collect(),
        });
        assert_eq!(examples.unwrap(), expected);
    }

    #[test]
    fn errors_name_the_file_line_and_problem() {
        let cases = [
            (
                r#"{"id": "x", "answers": ["a"]}"#,
                "missing or empty `question`",
            ),
            (
                r#"{"question": "q?", "answers": []}"#,
                "missing or empty `answers`",
            ),
            (r#"{"question": "q?"}"#, "missing or empty `answers`"),
            ("not json", "not a question record"),
        ];
        for (bad_line, problem) in cases {
            let (file, examples) = read_lines(&format!(
                "{}\n{bad_line}\n",
                r#"{"question": "ok?", "answer": ["yes"]}"#
            ));
            let message = examples.unwrap_err().to_string();
            let place = format!("{}:2: ", file.path().display());
            assert!(message.starts_with(&place), "{message}");
            assert!(message.contains(problem), "{message}");
        }
    }

    #[test]
    fn repeated_ids_are_refused() {
        let (file, examples) = read_lines(concat!(
            r#"{"id": "a", "question": "one?", "answers": ["1"]}"#,
            "\n",
            r#"{"question": "two?", "answers": ["2"]}"#,
            "\n",
            r#"{"id": "a", "question": "three?", "answers": ["3"]}"#,
            "\n",
        ));
        let examples = examples.unwrap();
        let message = check_unique_ids(file.path(), &examples)
            .unwrap_err()
            .to_string();
        assert!(message.contains("`a` appears more than once"), "{message}");
        assert!(check_unique_ids(file.path(), &examples[..2]).is_ok());
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let path = Path::new("/nonexistent/questions.jsonl");
        let message = read_qa_file(path).unwrap_err().to_string();
        assert!(
            message.starts_with("/nonexistent/questions.jsonl: "),
            "{message}"
        );
    }

    #[test]
    fn reads_the_shared_nq_dev_set() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/eval/nq-dev.jsonl");
        if !path.exists() {
            println!("SKIPPED: {} not found", path.display());
            return;
        }
        let examples = read_qa_file(&path).unwrap();
        assert_eq!(examples.len(), 1000);
        assert!(examples
            .iter()
            .all(|e| !e.answers.is_empty() && !e.gold_ids.is_empty()));
    }
}
