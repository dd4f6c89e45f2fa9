//! The evaluation as one self-contained HTML page: tables of every metric and
//! SVG plots (recall@k per retriever, EM/F1 per mode, latency histograms,
//! prior against posterior of the gold passage), with no script and nothing
//! fetched.

use std::fmt::Write;

use crate::predictions::{Prediction, StageTimings};
use crate::summary::EvalMetrics;
use crate::svg::{colour, escape, Axis, Chart};

/// Bins of a latency histogram.
const LATENCY_BINS: usize = 20;
/// Questions listed with their answers at the end of the report.
const LISTED_QUESTIONS: usize = 100;

/// The report of `metrics`, with `predictions` (those of the run's questions
/// and modes) for the per-question plots and the answer list.
pub fn render_html(metrics: &EvalMetrics, predictions: &[Prediction]) -> String {
    let s = &metrics.settings;
    let mut html = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>margin eval</title><style>",
    );
    html.push_str(STYLE);
    html.push_str("</style></head><body><main>");
    let _ = write!(
        html,
        "<h1>margin eval: {}</h1><p class=\"settings\">{} questions · corpus {} · encoder {} · generator {} · answers from {} retrieval, k = {} · beams {} · ≤ {} new tokens · prior temperature {}</p>",
        escape(&s.qa.display().to_string()),
        metrics.questions,
        escape(metrics.corpus.as_deref().unwrap_or("(existing index)")),
        escape(&s.encoder),
        escape(&s.generator),
        escape(&s.retriever),
        s.n_docs,
        s.beams,
        s.max_new_tokens,
        s.prior_temperature
    );

    html.push_str("<h2>Answers</h2>");
    html.push_str(&answer_table(metrics));
    html.push_str("<div class=\"charts\">");
    html.push_str(&em_f1_chart(metrics));
    html.push_str(&gold_chart(metrics, predictions));
    html.push_str("</div>");

    html.push_str("<h2>Retrieval</h2>");
    html.push_str(&retrieval_table(metrics));
    html.push_str("<div class=\"charts\">");
    html.push_str(&recall_chart(metrics, "gold passage recall@k", |r| {
        &r.gold_recall
    }));
    html.push_str(&recall_chart(metrics, "answer-string recall@k", |r| {
        &r.answer_recall
    }));
    html.push_str("</div>");

    html.push_str("<h2>Latency</h2>");
    html.push_str(&latency_table(metrics));
    html.push_str("<div class=\"charts\">");
    for (i, (mode, _)) in metrics.answers.iter().enumerate() {
        let totals: Vec<f64> = predictions
            .iter()
            .filter(|p| &p.mode == mode)
            .map(|p| p.timings_ms.total)
            .collect();
        html.push_str(&latency_histogram(mode, i, &totals));
    }
    html.push_str("</div>");

    html.push_str(&prediction_list(metrics, predictions));
    html.push_str("</main></body></html>\n");
    html
}

fn pct(v: f64) -> String {
    format!("{:.1}", v * 100.0)
}

fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut html = String::from("<div class=\"scroll\"><table><thead><tr>");
    for h in header {
        let _ = write!(html, "<th>{}</th>", escape(h));
    }
    html.push_str("</tr></thead><tbody>");
    for row in rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{}</td>", escape(cell));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></div>");
    html
}

fn answer_table(metrics: &EvalMetrics) -> String {
    let header = [
        "mode",
        "questions",
        "EM",
        "F1",
        "contains answer",
        "gold passage in context",
        "gold prior",
        "gold posterior",
    ]
    .map(String::from);
    let optional = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    let rows: Vec<Vec<String>> = metrics
        .answers
        .iter()
        .map(|(mode, a)| {
            vec![
                mode.clone(),
                a.questions.to_string(),
                pct(a.exact_match),
                pct(a.f1),
                pct(a.contains_answer),
                pct(a.gold_in_context),
                optional(a.gold_prior),
                optional(a.gold_posterior),
            ]
        })
        .collect();
    table(&header, &rows)
}

fn retrieval_table(metrics: &EvalMetrics) -> String {
    let ks: Vec<usize> = metrics
        .retrieval
        .values()
        .next()
        .map(|r| r.gold_recall.keys().copied().collect())
        .unwrap_or_default();
    let mut header = vec!["retriever".to_string()];
    header.extend(ks.iter().map(|k| format!("gold R@{k}")));
    header.extend(ks.iter().map(|k| format!("answer R@{k}")));
    header.extend(["MRR@10", "search p50 ms", "p95", "p99"].map(String::from));
    let rows: Vec<Vec<String>> = metrics
        .retrieval
        .iter()
        .map(|(name, r)| {
            let mut row = vec![name.clone()];
            row.extend(
                ks.iter()
                    .map(|k| r.gold_recall.get(k).map_or("–".into(), |v| pct(*v))),
            );
            row.extend(
                ks.iter()
                    .map(|k| r.answer_recall.get(k).map_or("–".into(), |v| pct(*v))),
            );
            row.push(format!("{:.3}", r.mrr_at_10));
            let latency = metrics.retrieval_latency_ms.get(name);
            row.extend(latency.map_or(vec!["–".into(); 3], |l| {
                [l.p50, l.p95, l.p99].map(|v| format!("{v:.1}")).to_vec()
            }));
            row
        })
        .collect();
    table(&header, &rows)
}

fn latency_table(metrics: &EvalMetrics) -> String {
    let header = [
        "mode", "stage", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms",
    ]
    .map(String::from);
    let rows: Vec<Vec<String>> = metrics
        .answers
        .iter()
        .flat_map(|(mode, a)| {
            // Pipeline order, not the map's alphabetical one.
            let stages = StageTimings::default().stages().map(|(stage, _)| stage);
            stages.into_iter().filter_map(move |stage| {
                let p = a.latency_ms.get(stage)?;
                Some(vec![
                    mode.clone(),
                    stage.to_string(),
                    format!("{:.0}", p.mean),
                    format!("{:.0}", p.p50),
                    format!("{:.0}", p.p95),
                    format!("{:.0}", p.p99),
                    format!("{:.0}", p.max),
                ])
            })
        })
        .collect();
    table(&header, &rows)
}

fn percent_axis(label: &str) -> Axis {
    Axis::linear(label, 0.0, 100.0, 5, |v| format!("{v:.0}%"))
}

fn recall_chart(
    metrics: &EvalMetrics,
    title: &str,
    curve: fn(&crate::RetrievalSummary) -> &std::collections::BTreeMap<usize, f64>,
) -> String {
    let ks: Vec<f64> = metrics
        .retrieval
        .values()
        .flat_map(|r| curve(r).keys().copied())
        .collect::<std::collections::BTreeSet<usize>>()
        .into_iter()
        .map(|k| k as f64)
        .collect();
    let mut chart = Chart::new(
        title,
        Axis::log("k (passages)", &ks),
        percent_axis("questions"),
    );
    for (i, (name, r)) in metrics.retrieval.iter().enumerate() {
        let points: Vec<(f64, f64)> = curve(r)
            .iter()
            .map(|(&k, &v)| (k as f64, v * 100.0))
            .collect();
        chart.line(name, colour(i), false, &points);
    }
    chart.render()
}

fn em_f1_chart(metrics: &EvalMetrics) -> String {
    let modes: Vec<String> = metrics.answers.iter().map(|(m, _)| m.clone()).collect();
    let mut chart = Chart::new(
        "Exact Match, F1 and answer containment by mode",
        Axis::categories("mode", &modes),
        percent_axis("score"),
    );
    for (i, (mode, a)) in metrics.answers.iter().enumerate() {
        let x = i as f64;
        let bars = [
            ("EM", a.exact_match),
            ("F1", a.f1),
            ("contains answer", a.contains_answer),
        ];
        for (j, (name, value)) in bars.iter().enumerate() {
            let left = x + 0.1 + 0.27 * j as f64;
            chart.bar(
                left,
                left + 0.25,
                value * 100.0,
                colour(j),
                &format!("{mode} {name} {}", pct(*value)),
            );
        }
    }
    for (j, name) in ["EM", "F1", "contains answer"].iter().enumerate() {
        chart.legend(name, colour(j));
    }
    chart.render()
}

fn gold_chart(metrics: &EvalMetrics, predictions: &[Prediction]) -> String {
    let unit = |label| Axis::linear(label, 0.0, 1.0, 5, |v| format!("{v:.1}"));
    let mut chart = Chart::new(
        "Gold passage: prior p(z|x) vs posterior p(z|x,y)",
        unit("prior"),
        unit("posterior"),
    );
    chart.guide((0.0, 0.0), (1.0, 1.0));
    for (i, (mode, _)) in metrics.answers.iter().enumerate() {
        let points: Vec<(f64, f64)> = predictions
            .iter()
            .filter(|p| &p.mode == mode)
            .filter_map(Prediction::gold_prior_posterior)
            .map(|(prior, posterior)| (prior as f64, posterior as f64))
            .collect();
        if !points.is_empty() {
            chart.points(mode, colour(i), &points);
        }
    }
    chart.render()
}

fn latency_histogram(mode: &str, series: usize, totals_ms: &[f64]) -> String {
    let seconds: Vec<f64> = totals_ms.iter().map(|ms| ms / 1000.0).collect();
    let top = seconds.iter().copied().fold(0.0, f64::max).max(1e-3);
    let width = top / LATENCY_BINS as f64;
    let mut counts = [0usize; LATENCY_BINS];
    for s in &seconds {
        counts[((s / width) as usize).min(LATENCY_BINS - 1)] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut chart = Chart::new(
        &format!("Latency per question: {mode}"),
        Axis::linear("seconds (retrieval to answer)", 0.0, top, 5, |v| {
            format!("{v:.1}")
        }),
        Axis::linear("questions", 0.0, most, 4, |v| format!("{v:.0}")),
    );
    for (bin, &n) in counts.iter().enumerate() {
        let from = bin as f64 * width;
        chart.bar(
            from,
            from + width * 0.92,
            n as f64,
            colour(series),
            &format!("{from:.2}–{:.2} s: {n}", from + width),
        );
    }
    chart.render()
}

fn prediction_list(metrics: &EvalMetrics, predictions: &[Prediction]) -> String {
    let modes: Vec<&String> = metrics.answers.iter().map(|(m, _)| m).collect();
    let mut ids: Vec<&str> = Vec::new();
    for p in predictions {
        if !ids.contains(&p.id.as_str()) {
            ids.push(&p.id);
            if ids.len() == LISTED_QUESTIONS {
                break;
            }
        }
    }
    let mut html = format!(
        "<h2>Answers to the first {} questions</h2><p>✓ marks an exact match.</p>",
        ids.len()
    );
    let mut header = vec!["question".to_string(), "references".to_string()];
    header.extend(modes.iter().map(|m| m.to_string()));
    let rows: Vec<Vec<String>> = ids
        .iter()
        .map(|id| {
            let of_id: Vec<&Prediction> = predictions.iter().filter(|p| p.id == *id).collect();
            let mut row = vec![of_id[0].question.clone(), of_id[0].references.join(" | ")];
            row.extend(modes.iter().map(|mode| {
                of_id
                    .iter()
                    .find(|p| &p.mode == *mode)
                    .map_or("–".into(), |p| {
                        format!("{}{}", if p.exact_match { "✓ " } else { "" }, p.answer)
                    })
            }));
            row
        })
        .collect();
    html.push_str(&table(&header, &rows));
    html
}

const STYLE: &str = "\
:root{color-scheme:light dark;font-family:system-ui,sans-serif}\
main{max-width:1200px;margin:auto;padding:1rem}\
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}\
th,td{border:1px solid #8884;padding:.25rem .5rem;text-align:left;vertical-align:top}\
td{font-variant-numeric:tabular-nums}\
.settings{color:#777}\
.scroll{overflow-x:auto}\
.charts{display:flex;flex-wrap:wrap;gap:1rem}\
svg{background:#fff;border:1px solid #8884;max-width:100%;height:auto;font-size:11px;fill:#222}\
svg .chart-title{font-size:13px;font-weight:600}\
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predictions::{PredictedCitation, RunSettings};
    use crate::qa::QaExample;
    use crate::summary::AnswerSummary;
    use crate::{RetrievalMetrics, Retrieved};
    use std::collections::BTreeMap;

    fn prediction(id: usize, mode: &str, answer: &str) -> Prediction {
        let references = vec!["Paris".to_string()];
        Prediction {
            id: format!("q{id}"),
            question: format!("Where <is> question {id}?"),
            mode: mode.into(),
            answer: answer.into(),
            exact_match: crate::exact_match(answer, &references),
            f1: crate::f1(answer, &references),
            contains_answer: crate::has_answer(&references, answer),
            references,
            citations: if mode == "closed-book" {
                vec![]
            } else {
                vec![PredictedCitation {
                    passage_id: "g#0".into(),
                    doc_id: "g".into(),
                    title: "G".into(),
                    score: 0.8,
                    prior: 0.4,
                    posterior: 0.8,
                }]
            },
            gold_ids: vec!["g".into()],
            timings_ms: StageTimings {
                total: 100.0 * id as f64,
                ..Default::default()
            },
        }
    }

    fn metrics(predictions: &[Prediction]) -> EvalMetrics {
        let mut retrieval = RetrievalMetrics::new(&[1, 5, 20]);
        let example = QaExample {
            id: "q".into(),
            question: "?".into(),
            answers: vec!["Paris".into()],
            gold_ids: vec!["g".into()],
        };
        retrieval.add(
            &example,
            &[
                Retrieved {
                    doc_id: "x",
                    text: "Lyon",
                },
                Retrieved {
                    doc_id: "g",
                    text: "Paris",
                },
            ],
        );
        let modes = ["token", "closed-book"];
        EvalMetrics {
            settings: RunSettings {
                qa: "nq & co.jsonl".into(),
                ..crate::predictions::tests::settings()
            },
            corpus: Some("corpus.jsonl".into()),
            questions: 3,
            retrieval: BTreeMap::from([
                ("dense".to_string(), retrieval.summary()),
                ("bm25".to_string(), retrieval.summary()),
            ]),
            retrieval_latency_ms: BTreeMap::from([(
                "dense".to_string(),
                crate::Percentiles::of(&[3.0]),
            )]),
            answers: modes
                .iter()
                .map(|m| {
                    let of_mode: Vec<&Prediction> =
                        predictions.iter().filter(|p| p.mode == *m).collect();
                    (m.to_string(), AnswerSummary::of(&of_mode))
                })
                .collect(),
        }
    }

    #[test]
    fn the_report_is_self_contained_and_holds_every_section() {
        let predictions: Vec<Prediction> = (1..=3)
            .flat_map(|i| {
                [
                    prediction(i, "token", "Paris"),
                    prediction(i, "closed-book", "Rome"),
                ]
            })
            .collect();
        let html = render_html(&metrics(&predictions), &predictions);
        for needle in [
            "<h2>Answers</h2>",
            "<h2>Retrieval</h2>",
            "<h2>Latency</h2>",
            "Exact Match, F1 and answer containment by mode",
            "gold passage recall@k",
            "answer-string recall@k",
            "Latency per question: token",
            "Latency per question: closed-book",
            "Gold passage: prior p(z|x) vs posterior p(z|x,y)",
            "nq &amp; co.jsonl",
            "Where &lt;is&gt; question 1?",
            "✓ Paris",
        ] {
            assert!(html.contains(needle), "missing {needle}");
        }
        // Stages in pipeline order.
        let at = |stage: &str| html.find(&format!("<td>{stage}</td>")).unwrap();
        assert!(at("retrieve") < at("prefill") && at("prefill") < at("decode"));
        assert!(at("attribute") < at("total"));
        // Nothing is fetched: no scripts, stylesheets or images from elsewhere.
        for banned in ["<script", "<link", "<img", "src=", "@import", "url("] {
            assert!(!html.contains(banned), "{banned}");
        }
        // Every chart is well-formed SVG.
        let mut rest = html.as_str();
        let mut charts = 0;
        while let Some(start) = rest.find("<svg") {
            let end = rest[start..].find("</svg>").unwrap() + start + "</svg>".len();
            roxmltree::Document::parse(&rest[start..end]).unwrap();
            charts += 1;
            rest = &rest[end..];
        }
        // EM/F1, gold, two recall charts, a histogram per mode.
        assert_eq!(charts, 6);
    }

    #[test]
    fn em_f1_bars_follow_the_scores() {
        let predictions: Vec<Prediction> = (1..=4)
            .flat_map(|i| {
                [
                    prediction(i, "token", if i == 1 { "Lyon" } else { "Paris" }),
                    prediction(i, "closed-book", "Rome"),
                ]
            })
            .collect();
        let m = metrics(&predictions);
        assert_eq!(m.answers_of("token").unwrap().exact_match, 0.75);
        let svg = em_f1_chart(&m);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let heights: Vec<f64> = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .map(|n| n.attribute("height").unwrap().parse().unwrap())
            .collect();
        // token EM, F1 and containment 75 %; closed-book 0, 0 and 0.
        assert_eq!(heights.len(), 6);
        assert!(heights[..3]
            .iter()
            .all(|&h| (h - heights[0]).abs() < 1e-9 && h > 0.0));
        assert_eq!(&heights[3..], &[0.0, 0.0, 0.0]);
        let full = Chart::new("", Axis::categories("", &[]), percent_axis(""));
        let plot_height = full.py(0.0) - full.py(100.0);
        assert!((heights[0] - 0.75 * plot_height).abs() < 0.11);
    }

    #[test]
    fn histogram_counts_every_question() {
        let totals = [100.0, 150.0, 900.0, 1000.0];
        let svg = latency_histogram("token", 0, &totals);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let counts: usize = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .map(|n| {
                let tip = n.first_element_child().unwrap().text().unwrap();
                tip.rsplit(": ").next().unwrap().parse::<usize>().unwrap()
            })
            .sum();
        assert_eq!(counts, totals.len());
    }
}
