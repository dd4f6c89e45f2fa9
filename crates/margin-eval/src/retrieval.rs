//! Retrieval metrics as DPR and the RAG paper report them: answer-string
//! recall@k (DPR's "top-k accuracy"), gold-passage recall@k and MRR@10.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::answers::has_answer;
use crate::qa::QaExample;

/// Ranks below this one add nothing to the mean reciprocal rank.
const MRR_CUTOFF: usize = 10;

/// One retrieved passage, in rank order among the others.
#[derive(Debug, Clone, Copy)]
pub struct Retrieved<'a> {
    /// Corpus id, compared with the question's `gold_ids`.
    pub doc_id: &'a str,
    /// Passage text, searched for the answers.
    pub text: &'a str,
}

/// Running counts over the questions of one retrieval mode.
#[derive(Debug, Clone)]
pub struct RetrievalMetrics {
    questions: usize,
    questions_with_gold: usize,
    /// Questions whose first gold passage lies within the top k, by k.
    gold_hits: BTreeMap<usize, usize>,
    /// Questions with an answer-bearing passage within the top k, by k.
    answer_hits: BTreeMap<usize, usize>,
    reciprocal_rank_sum: f64,
}

/// The metrics over all questions added, as fractions in 0..=1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalSummary {
    /// Questions evaluated.
    pub questions: usize,
    /// Questions that name gold passages; the denominator of the gold metrics.
    pub questions_with_gold: usize,
    /// By k: share of questions with gold whose top k hold a gold passage.
    pub gold_recall: BTreeMap<usize, f64>,
    /// By k: share of all questions whose top k hold a passage containing an answer.
    pub answer_recall: BTreeMap<usize, f64>,
    /// Mean over questions with gold of 1/rank of the first gold passage in
    /// the top 10 (0 when there is none).
    pub mrr_at_10: f64,
}

impl RetrievalMetrics {
    /// Empty counts for recall at each of `ks` (callers use 1, 5, 20, 100).
    pub fn new(ks: &[usize]) -> Self {
        let zeros: BTreeMap<usize, usize> = ks.iter().map(|&k| (k, 0)).collect();
        Self {
            questions: 0,
            questions_with_gold: 0,
            gold_hits: zeros.clone(),
            answer_hits: zeros,
            reciprocal_rank_sum: 0.0,
        }
    }

    /// Counts one question and the passages retrieved for it, best first.
    pub fn add(&mut self, example: &QaExample, ranked: &[Retrieved]) {
        self.questions += 1;
        // has_answer normalises the whole passage, so search no deeper than the largest k.
        let depth = self.answer_hits.keys().next_back().copied().unwrap_or(0);
        let first_answer = ranked
            .iter()
            .take(depth)
            .position(|p| has_answer(&example.answers, p.text));
        count_hit(&mut self.answer_hits, first_answer);

        if example.gold_ids.is_empty() {
            return;
        }
        self.questions_with_gold += 1;
        let first_gold = ranked
            .iter()
            .position(|p| example.gold_ids.iter().any(|id| id == p.doc_id));
        count_hit(&mut self.gold_hits, first_gold);
        if let Some(rank) = first_gold.filter(|&rank| rank < MRR_CUTOFF) {
            self.reciprocal_rank_sum += 1.0 / (rank + 1) as f64;
        }
    }

    /// The metrics so far.
    pub fn summary(&self) -> RetrievalSummary {
        RetrievalSummary {
            questions: self.questions,
            questions_with_gold: self.questions_with_gold,
            gold_recall: shares(&self.gold_hits, self.questions_with_gold),
            answer_recall: shares(&self.answer_hits, self.questions),
            mrr_at_10: share(self.reciprocal_rank_sum, self.questions_with_gold),
        }
    }
}

/// A first hit at 0-based `rank` counts for every k above it.
fn count_hit(hits: &mut BTreeMap<usize, usize>, rank: Option<usize>) {
    if let Some(rank) = rank {
        hits.range_mut(rank + 1..).for_each(|(_, n)| *n += 1);
    }
}

fn shares(hits: &BTreeMap<usize, usize>, total: usize) -> BTreeMap<usize, f64> {
    hits.iter()
        .map(|(&k, &n)| (k, share(n as f64, total)))
        .collect()
}

/// 0 rather than NaN for an empty set, which JSON could not carry.
pub(crate) fn share(part: f64, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        part / total as f64
    }
}

/// A plain-text table with one row per named mode: gold recall@k and answer
/// recall@k in percent, then MRR@10. A k that a row lacks shows as `-`.
pub fn render_table(rows: &[(String, RetrievalSummary)]) -> String {
    let ks: BTreeSet<usize> = rows
        .iter()
        .flat_map(|(_, s)| s.gold_recall.keys().chain(s.answer_recall.keys()))
        .copied()
        .collect();
    let mut header = vec!["mode".to_string()];
    header.extend(ks.iter().map(|k| format!("gold R@{k}")));
    header.extend(ks.iter().map(|k| format!("answer R@{k}")));
    header.push(format!("MRR@{MRR_CUTOFF}"));
    let body = rows.iter().map(|(mode, summary)| {
        let mut cells = vec![mode.clone()];
        cells.extend(ks.iter().map(|k| percent(summary.gold_recall.get(k))));
        cells.extend(ks.iter().map(|k| percent(summary.answer_recall.get(k))));
        cells.push(format!("{:.3}", summary.mrr_at_10));
        cells
    });
    let table: Vec<Vec<String>> = std::iter::once(header).chain(body).collect();

    let widths: Vec<usize> = (0..table[0].len())
        .map(|column| {
            table
                .iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    table
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                // Names read left to right, numbers line up on the decimal point.
                .map(|(column, (cell, &width))| match column {
                    0 => format!("{cell:<width$}"),
                    _ => format!("{cell:>width$}"),
                })
                .collect();
            cells.join("  ") + "\n"
        })
        .collect()
}

fn percent(fraction: Option<&f64>) -> String {
    fraction.map_or("-".to_string(), |f| format!("{:.1}", f * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(answers: &[&str], gold_ids: &[&str]) -> QaExample {
        QaExample {
            id: "q".into(),
            question: "?".into(),
            answers: answers.iter().map(|s| s.to_string()).collect(),
            gold_ids: gold_ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn passages<'a>(items: &[(&'a str, &'a str)]) -> Vec<Retrieved<'a>> {
        items
            .iter()
            .map(|&(doc_id, text)| Retrieved { doc_id, text })
            .collect()
    }

    #[test]
    fn gold_at_rank_three() {
        let mut metrics = RetrievalMetrics::new(&[1, 5]);
        let ranked = passages(&[
            ("d1", "Berlin is large."),
            ("d2", "Rome is old."),
            ("d3", "The capital is Paris."),
        ]);
        metrics.add(&example(&["Paris"], &["d3"]), &ranked);
        let summary = metrics.summary();
        assert_eq!(summary.gold_recall, BTreeMap::from([(1, 0.0), (5, 1.0)]));
        assert_eq!(summary.answer_recall, BTreeMap::from([(1, 0.0), (5, 1.0)]));
        assert_eq!(summary.mrr_at_10, 1.0 / 3.0);
    }

    #[test]
    fn gold_below_ten_counts_for_recall_but_not_mrr() {
        let mut metrics = RetrievalMetrics::new(&[10, 20]);
        let ids: Vec<String> = (1..=11).map(|i| format!("d{i}")).collect();
        let ranked: Vec<Retrieved> = ids
            .iter()
            .map(|id| Retrieved {
                doc_id: id,
                text: "",
            })
            .collect();
        metrics.add(&example(&["x"], &["d11"]), &ranked);
        let summary = metrics.summary();
        assert_eq!(summary.gold_recall, BTreeMap::from([(10, 0.0), (20, 1.0)]));
        assert_eq!(summary.mrr_at_10, 0.0);
    }

    #[test]
    fn questions_without_gold_count_only_for_answer_recall() {
        let mut metrics = RetrievalMetrics::new(&[1, 5]);
        // Gold at rank 3, answer at rank 3.
        metrics.add(
            &example(&["Paris"], &["d3"]),
            &passages(&[("d1", "Berlin"), ("d2", "Rome"), ("d3", "in Paris")]),
        );
        // No gold; answer at rank 1 once normalised.
        metrics.add(
            &example(&["1,000"], &[]),
            &passages(&[("d9", "about 1000 people")]),
        );
        // Gold at rank 1, answer at rank 2: "Roman" is not the whole word "Rome".
        metrics.add(
            &example(&["Rome"], &["d7"]),
            &passages(&[("d7", "the Roman empire"), ("d8", "Rome fell")]),
        );
        let summary = metrics.summary();
        assert_eq!(summary.questions, 3);
        assert_eq!(summary.questions_with_gold, 2);
        assert_eq!(summary.gold_recall, BTreeMap::from([(1, 0.5), (5, 1.0)]));
        assert_eq!(
            summary.answer_recall,
            BTreeMap::from([(1, 1.0 / 3.0), (5, 1.0)])
        );
        assert_eq!(summary.mrr_at_10, (1.0 / 3.0 + 1.0) / 2.0);
    }

    #[test]
    fn no_questions_give_zeros() {
        let summary = RetrievalMetrics::new(&[1]).summary();
        assert_eq!(summary.gold_recall, BTreeMap::from([(1, 0.0)]));
        assert_eq!(summary.mrr_at_10, 0.0);
    }

    #[test]
    fn table_aligns_modes_and_metrics() {
        let summary = |gold1, gold5, answer1, answer5, mrr| RetrievalSummary {
            questions: 3,
            questions_with_gold: 2,
            gold_recall: BTreeMap::from([(1, gold1), (5, gold5)]),
            answer_recall: BTreeMap::from([(1, answer1), (5, answer5)]),
            mrr_at_10: mrr,
        };
        let rows = [
            (
                "dense".to_string(),
                summary(0.5, 1.0, 1.0 / 3.0, 1.0, 2.0 / 3.0),
            ),
            ("bm25".to_string(), summary(0.0, 0.25, 0.0, 0.125, 0.05)),
        ];
        let expected = "\
mode   gold R@1  gold R@5  answer R@1  answer R@5  MRR@10
dense      50.0     100.0        33.3       100.0   0.667
bm25        0.0      25.0         0.0        12.5   0.050
";
        assert_eq!(render_table(&rows), expected);
    }

    #[test]
    fn summary_survives_json() {
        let mut metrics = RetrievalMetrics::new(&[1, 5, 20, 100]);
        metrics.add(&example(&["a b"], &["d"]), &passages(&[("d", "a b")]));
        let summary = metrics.summary();
        let json = serde_json::to_string(&summary).unwrap();
        assert_eq!(
            serde_json::from_str::<RetrievalSummary>(&json).unwrap(),
            summary
        );
    }
}
