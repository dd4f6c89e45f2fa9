//! The predictions of an answer evaluation, one JSON line per question and
//! mode, and the folder they are kept in. The log is written line by line and
//! flushed, so an interrupted run resumes from the predictions already written
//! (a line cut short by the interruption is dropped); a folder is only resumed
//! by a run with the same [`RunSettings`].

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use margin_core::{OperationError, OperationResult};
use serde::{Deserialize, Serialize};

/// What decides a prediction. A folder holding predictions made with other
/// settings is refused rather than mixed into one set of metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Question file.
    pub qa: PathBuf,
    /// Query encoder.
    pub encoder: String,
    /// Generator.
    pub generator: String,
    /// Retrieval mode the answers' passages come from.
    pub retriever: String,
    /// Passages per question (RAG's k).
    pub n_docs: usize,
    /// Beams.
    pub beams: usize,
    /// Most tokens in an answer.
    pub max_new_tokens: usize,
    /// Temperature of the document prior.
    pub prior_temperature: f32,
    /// Per-passage prompt of decoder LLMs.
    pub prompt: String,
    /// Closed-book prompt of decoder LLMs.
    pub closed_book_prompt: String,
}

/// A passage an answer was generated from, as the predictions keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedCitation {
    /// Passage id.
    pub passage_id: String,
    /// Document id, compared with the question's gold ids.
    pub doc_id: String,
    /// Title.
    pub title: String,
    /// Retrieval score.
    pub score: f64,
    /// p(z|x)
    pub prior: f32,
    /// p(z|x,y)
    pub posterior: f32,
}

/// Milliseconds spent per stage on one question.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    /// Searching (0 for closed book).
    pub retrieve: f64,
    /// Contexts through the generator.
    pub prefill: f64,
    /// Choosing tokens.
    pub decode: f64,
    /// RAG-Sequence thorough rescoring.
    pub rescore: f64,
    /// Posteriors of the passages.
    pub attribute: f64,
    /// What answering in this mode alone costs: retrieval, building the
    /// inputs and the stages above (modes of one question share a prefill,
    /// counted in each).
    pub total: f64,
}

impl StageTimings {
    /// Stage names with their values, in pipeline order.
    pub fn stages(&self) -> [(&'static str, f64); 6] {
        [
            ("retrieve", self.retrieve),
            ("prefill", self.prefill),
            ("decode", self.decode),
            ("rescore", self.rescore),
            ("attribute", self.attribute),
            ("total", self.total),
        ]
    }
}

/// One question answered in one mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Question id.
    pub id: String,
    /// The question.
    pub question: String,
    /// Answering mode (`token`, `sequence`, `sequence-fast`, `closed-book`).
    pub mode: String,
    /// The generated answer.
    pub answer: String,
    /// The reference answers.
    pub references: Vec<String>,
    /// SQuAD exact match against the best reference.
    pub exact_match: bool,
    /// SQuAD F1 against the best reference.
    pub f1: f64,
    /// Whether the answer contains a reference as whole words (normalised as
    /// for DPR's answer recall): credit for a right answer in a sentence.
    pub contains_answer: bool,
    /// Passages by posterior (none for closed book).
    pub citations: Vec<PredictedCitation>,
    /// The question's gold passage ids.
    pub gold_ids: Vec<String>,
    /// Where the time went.
    pub timings_ms: StageTimings,
}

impl Prediction {
    /// Prior and posterior of the most probable gold passage among the
    /// citations; `None` when no gold passage was retrieved.
    pub fn gold_prior_posterior(&self) -> Option<(f32, f32)> {
        self.citations
            .iter()
            .filter(|c| self.gold_ids.contains(&c.doc_id))
            .map(|c| (c.prior, c.posterior))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// An evaluation's output folder: `run.json` (the settings) and
/// `predictions.jsonl`, appended to as answers come.
pub struct PredictionLog {
    file: File,
    path: PathBuf,
}

/// File of the settings in an output folder.
pub const SETTINGS_FILE: &str = "run.json";
/// File of the predictions in an output folder.
pub const PREDICTIONS_FILE: &str = "predictions.jsonl";

impl PredictionLog {
    /// Opens `dir` (created if missing) for a run with `settings` and returns
    /// the predictions already in it. Fails, touching nothing, when the folder
    /// holds predictions made with other settings or a damaged line other than
    /// the last.
    pub fn open(dir: &Path, settings: &RunSettings) -> OperationResult<(Self, Vec<Prediction>)> {
        std::fs::create_dir_all(dir).map_err(|e| OperationError::io(dir, e))?;
        let settings_path = dir.join(SETTINGS_FILE);
        let path = dir.join(PREDICTIONS_FILE);
        if settings_path.exists() {
            let text = std::fs::read_to_string(&settings_path)
                .map_err(|e| OperationError::io(&settings_path, e))?;
            let earlier: RunSettings = serde_json::from_str(&text).map_err(|e| {
                OperationError::bad_input(
                    settings_path.display().to_string(),
                    format!("not the settings of an evaluation run ({e})"),
                )
            })?;
            if &earlier != settings {
                return Err(OperationError::bad_input(
                    dir.display().to_string(),
                    format!(
                        "holds predictions made with other settings ({}); give another --out or remove the folder",
                        differences(&earlier, settings).join(", ")
                    ),
                ));
            }
        } else if path.exists() {
            return Err(OperationError::bad_input(
                path.display().to_string(),
                format!("predictions without their {SETTINGS_FILE}; give another --out"),
            ));
        }
        let (existing, good_bytes) = read_predictions(&path)?;
        let json = serde_json::to_string_pretty(settings).expect("settings serialise");
        std::fs::write(&settings_path, json + "\n")
            .map_err(|e| OperationError::io(&settings_path, e))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| OperationError::io(&path, e))?;
        // Drop the tail an interrupted write left.
        file.set_len(good_bytes)
            .map_err(|e| OperationError::io(&path, e))?;
        Ok((PredictionLog { file, path }, existing))
    }

    /// Appends one prediction, on disk before this returns.
    pub fn append(&mut self, prediction: &Prediction) -> OperationResult<()> {
        let mut line = serde_json::to_string(prediction).expect("predictions serialise");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| OperationError::io(&self.path, e))
    }
}

/// The predictions in `path` (none if it is missing) and the length of the
/// file up to the end of the last whole line.
fn read_predictions(path: &Path) -> OperationResult<(Vec<Prediction>, u64)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(OperationError::io(path, e)),
    };
    let mut predictions = Vec::new();
    let mut good_bytes = 0;
    let mut lines = text.split_inclusive('\n').zip(1..).peekable();
    while let Some((line, number)) = lines.next() {
        let last = lines.peek().is_none();
        match serde_json::from_str::<Prediction>(line) {
            Ok(prediction) if line.ends_with('\n') => {
                predictions.push(prediction);
                good_bytes += line.len() as u64;
            }
            // An interrupted append leaves a partial last line only.
            _ if last => break,
            Ok(_) => unreachable!("only the last line can lack its newline"),
            Err(e) => {
                return Err(OperationError::bad_input(
                    format!("{}:{number}", path.display()),
                    format!("not a prediction ({e})"),
                ))
            }
        }
    }
    Ok((predictions, good_bytes))
}

/// `field: earlier → now` for each setting that changed.
fn differences(earlier: &RunSettings, now: &RunSettings) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(earlier), serde_json::to_value(now))
    else {
        unreachable!("settings serialise to objects")
    };
    a.iter()
        .filter(|(key, value)| b.get(*key) != Some(value))
        .map(|(key, value)| format!("{key}: {value} → {}", b[key]))
        .collect()
}

/// Which (question id, mode) pairs `predictions` already answer.
pub fn answered(predictions: &[Prediction]) -> HashSet<(String, String)> {
    predictions
        .iter()
        .map(|p| (p.id.clone(), p.mode.clone()))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Settings of a small run, for tests.
    pub(crate) fn settings() -> RunSettings {
        RunSettings {
            qa: "qa.jsonl".into(),
            encoder: "minilm".into(),
            generator: "smollm2".into(),
            retriever: "dense".into(),
            n_docs: 5,
            beams: 1,
            max_new_tokens: 16,
            prior_temperature: 0.05,
            prompt: "{question}".into(),
            closed_book_prompt: "{question}".into(),
        }
    }

    fn prediction(id: &str, mode: &str) -> Prediction {
        Prediction {
            id: id.into(),
            question: "who?".into(),
            mode: mode.into(),
            answer: "Ann".into(),
            references: vec!["Ann".into()],
            exact_match: true,
            f1: 1.0,
            contains_answer: true,
            citations: vec![PredictedCitation {
                passage_id: "d#0".into(),
                doc_id: "d".into(),
                title: "D".into(),
                score: 0.5,
                prior: 0.6,
                posterior: 0.9,
            }],
            gold_ids: vec!["d".into()],
            timings_ms: StageTimings::default(),
        }
    }

    /// A folder whose log holds `q1` answered with RAG-Token; its predictions file.
    fn folder_with_one(dir: &Path) -> PathBuf {
        let (mut log, _) = PredictionLog::open(dir, &settings()).unwrap();
        log.append(&prediction("q1", "token")).unwrap();
        dir.join(PREDICTIONS_FILE)
    }

    #[test]
    fn resumes_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, existing) = PredictionLog::open(dir.path(), &settings()).unwrap();
        assert!(existing.is_empty());
        log.append(&prediction("q1", "token")).unwrap();
        log.append(&prediction("q1", "closed-book")).unwrap();
        drop(log);
        let (mut log, existing) = PredictionLog::open(dir.path(), &settings()).unwrap();
        assert_eq!(
            existing,
            [prediction("q1", "token"), prediction("q1", "closed-book")]
        );
        log.append(&prediction("q2", "token")).unwrap();
        drop(log);
        let (_, existing) = PredictionLog::open(dir.path(), &settings()).unwrap();
        let done = answered(&existing);
        assert_eq!(done.len(), 3);
        assert!(done.contains(&("q2".to_string(), "token".to_string())));
    }

    #[test]
    fn an_interrupted_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = folder_with_one(dir.path());
        let whole = std::fs::read_to_string(&path).unwrap();
        let cut = serde_json::to_string(&prediction("q2", "token")).unwrap();
        std::fs::write(&path, format!("{whole}{}", &cut[..cut.len() / 2])).unwrap();

        let (mut log, existing) = PredictionLog::open(dir.path(), &settings()).unwrap();
        assert_eq!(existing, [prediction("q1", "token")]);
        log.append(&prediction("q2", "token")).unwrap();
        drop(log);
        let (_, existing) = PredictionLog::open(dir.path(), &settings()).unwrap();
        assert_eq!(
            existing,
            [prediction("q1", "token"), prediction("q2", "token")]
        );
    }

    #[test]
    fn a_damaged_line_before_the_last_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = folder_with_one(dir.path());
        let whole = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{{broken\n{whole}")).unwrap();
        let message = PredictionLog::open(dir.path(), &settings())
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains(&format!("{}:1", path.display())),
            "{message}"
        );
        // Nothing was truncated.
        assert!(std::fs::read_to_string(&path).unwrap().ends_with(&whole));
    }

    #[test]
    fn other_settings_are_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        folder_with_one(dir.path());
        let other = RunSettings {
            beams: 4,
            ..settings()
        };
        let message = PredictionLog::open(dir.path(), &other)
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("beams: 1 → 4"), "{message}");
        let (_, existing) = PredictionLog::open(dir.path(), &settings()).unwrap();
        assert_eq!(existing.len(), 1);
    }

    #[test]
    fn gold_attribution_takes_the_most_probable_gold_passage() {
        let mut p = prediction("q", "token");
        assert_eq!(p.gold_prior_posterior(), Some((0.6, 0.9)));
        p.gold_ids = vec!["other".into()];
        assert_eq!(p.gold_prior_posterior(), None);
    }
}
