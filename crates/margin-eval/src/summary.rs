//! What an answer evaluation adds up to: Exact Match and F1 per mode, latency
//! percentiles per stage, beside the retrieval metrics per retriever.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::predictions::{Prediction, RunSettings, StageTimings};
use crate::retrieval::{share, RetrievalSummary};

/// Latency percentiles of one stage, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples`; zeros for none.
    pub fn of(samples: &[f64]) -> Percentiles {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        Percentiles {
            count: sorted.len(),
            mean: if sorted.is_empty() {
                0.0
            } else {
                sorted.iter().sum::<f64>() / sorted.len() as f64
            },
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// Answer quality and latency of one mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerSummary {
    /// Questions answered.
    pub questions: usize,
    /// Share of answers that exactly match a reference (SQuAD normalised).
    pub exact_match: f64,
    /// Mean SQuAD F1.
    pub f1: f64,
    /// Share of answers that contain a reference as whole words (close to
    /// FlashRAG's `acc`): generators that answer in sentences score 0 EM
    /// even when right.
    pub contains_answer: f64,
    /// Share of questions with gold ids whose gold passage was among the
    /// passages answered from (0 for closed book).
    pub gold_in_context: f64,
    /// Mean posterior of the gold passage, over questions where it was
    /// retrieved; `None` when it never was.
    pub gold_posterior: Option<f64>,
    /// Mean prior of the gold passage over the same questions.
    pub gold_prior: Option<f64>,
    /// Latency percentiles by stage.
    pub latency_ms: BTreeMap<String, Percentiles>,
}

impl AnswerSummary {
    /// The summary of one mode's predictions.
    pub fn of(predictions: &[&Prediction]) -> AnswerSummary {
        let n = predictions.len();
        let with_gold = predictions
            .iter()
            .filter(|p| !p.gold_ids.is_empty())
            .count();
        let gold: Vec<(f32, f32)> = predictions
            .iter()
            .filter_map(|p| p.gold_prior_posterior())
            .collect();
        let gold_mean = |pick: fn(&(f32, f32)) -> f32| {
            (!gold.is_empty())
                .then(|| gold.iter().map(|g| pick(g) as f64).sum::<f64>() / gold.len() as f64)
        };
        let latency_ms = StageTimings::default()
            .stages()
            .into_iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let samples: Vec<f64> = predictions
                    .iter()
                    .map(|p| p.timings_ms.stages()[i].1)
                    .collect();
                (name.to_string(), Percentiles::of(&samples))
            })
            .collect();
        AnswerSummary {
            questions: n,
            exact_match: share(
                predictions.iter().filter(|p| p.exact_match).count() as f64,
                n,
            ),
            f1: share(predictions.iter().map(|p| p.f1).sum(), n),
            contains_answer: share(
                predictions.iter().filter(|p| p.contains_answer).count() as f64,
                n,
            ),
            gold_in_context: share(gold.len() as f64, with_gold),
            gold_posterior: gold_mean(|g| g.1),
            gold_prior: gold_mean(|g| g.0),
            latency_ms,
        }
    }
}

/// Everything `margin eval` measured: `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// What the predictions were made with.
    pub settings: RunSettings,
    /// Corpus indexed for the run, if one was given.
    pub corpus: Option<String>,
    /// Questions evaluated.
    pub questions: usize,
    /// Retrieval metrics by retriever (dense, bm25, hybrid).
    pub retrieval: BTreeMap<String, RetrievalSummary>,
    /// Search latency by retriever, one question at a time.
    pub retrieval_latency_ms: BTreeMap<String, Percentiles>,
    /// Answer metrics by mode, in the order the modes were asked for.
    pub answers: Vec<(String, AnswerSummary)>,
}

impl EvalMetrics {
    /// The summary of `mode`, if it was evaluated.
    pub fn answers_of(&self, mode: &str) -> Option<&AnswerSummary> {
        self.answers.iter().find(|(m, _)| m == mode).map(|(_, s)| s)
    }

    /// A plain-text table of the answer metrics: one row per mode.
    pub fn answer_table(&self) -> String {
        let mut lines = vec![format!(
            "{:<14} {:>9} {:>6} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "mode", "questions", "EM", "F1", "contains", "gold ctx", "p50 ms", "p95 ms", "p99 ms"
        )];
        for (mode, s) in &self.answers {
            let total = s
                .latency_ms
                .get("total")
                .copied()
                .unwrap_or(Percentiles::of(&[]));
            lines.push(format!(
                "{:<14} {:>9} {:>6.1} {:>6.1} {:>8.1} {:>9.1} {:>9.0} {:>9.0} {:>9.0}",
                mode,
                s.questions,
                s.exact_match * 100.0,
                s.f1 * 100.0,
                s.contains_answer * 100.0,
                s.gold_in_context * 100.0,
                total.p50,
                total.p95,
                total.p99
            ));
        }
        lines.join("\n") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predictions::PredictedCitation;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&samples);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(p.mean, 50.5);
        let one = Percentiles::of(&[7.0]);
        assert_eq!((one.p50, one.p99, one.count), (7.0, 7.0, 1));
        assert_eq!(Percentiles::of(&[]).p50, 0.0);
        // Order does not matter.
        assert_eq!(Percentiles::of(&[3.0, 1.0, 2.0]).p50, 2.0);
    }

    fn prediction(answer: &str, gold_posterior: Option<f32>, total: f64) -> Prediction {
        Prediction {
            id: "q".into(),
            question: "?".into(),
            mode: "token".into(),
            answer: answer.into(),
            references: vec!["the Impalas".into()],
            exact_match: crate::exact_match(answer, &["the Impalas".into()]),
            f1: crate::f1(answer, &["the Impalas".into()]),
            contains_answer: crate::has_answer(&["the Impalas".into()], answer),
            citations: gold_posterior
                .map(|posterior| PredictedCitation {
                    passage_id: "g#0".into(),
                    doc_id: "g".into(),
                    title: "G".into(),
                    score: 0.7,
                    prior: 0.5,
                    posterior,
                })
                .into_iter()
                .collect(),
            gold_ids: vec!["g".into()],
            timings_ms: StageTimings {
                total,
                ..Default::default()
            },
        }
    }

    #[test]
    fn answer_summary_averages_over_questions() {
        let predictions = [
            prediction("Impalas", Some(0.9), 100.0),
            prediction("The Impalas band", Some(0.5), 300.0),
            prediction("nobody", None, 200.0),
        ];
        let refs: Vec<&Prediction> = predictions.iter().collect();
        let s = AnswerSummary::of(&refs);
        assert_eq!(s.questions, 3);
        assert!((s.exact_match - 1.0 / 3.0).abs() < 1e-12);
        // F1: 1, 2·(1/2·1)/(1/2+1) = 2/3, 0.
        assert!((s.f1 - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!((s.contains_answer - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.gold_in_context - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.gold_posterior.unwrap() - 0.7).abs() < 1e-6);
        assert_eq!(s.gold_prior, Some(0.5));
        assert_eq!(s.latency_ms["total"].p50, 200.0);
        assert_eq!(s.latency_ms.len(), 6);
        let empty = AnswerSummary::of(&[]);
        assert_eq!((empty.exact_match, empty.gold_posterior), (0.0, None));
    }
}
