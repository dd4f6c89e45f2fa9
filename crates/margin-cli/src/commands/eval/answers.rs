//! `margin eval --qa FILE`: every question answered in each mode (RAG-Token,
//! RAG-Sequence thorough and fast, closed book), scored with SQuAD EM and F1,
//! beside retrieval metrics per retriever; predictions, metrics JSON and an
//! HTML report in the output folder. Runs resume from the predictions there.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use margin_answer::{Answer, Answerer, AskSettings, RagMode};
use margin_core::config::SearchMode;
use margin_core::Config;
use margin_eval::predictions::answered;
use margin_eval::{
    check_unique_ids, exact_match, f1, has_answer, render_html, render_table, AnswerSummary,
    EvalMetrics, Percentiles, PredictedCitation, Prediction, PredictionLog, QaExample, RunSettings,
    StageTimings,
};
use margin_index::SearchHit;
use margin_rag::sequence::SequenceDecoding;

use crate::commands::ask::AnswerOptions;
use crate::commands::search::parse_mode;

/// How a question is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnswerMode {
    /// RAG-Token: passages marginalised at every token.
    Token,
    /// RAG-Sequence, thorough decoding.
    Sequence,
    /// RAG-Sequence, fast decoding.
    SequenceFast,
    /// The generator alone, no passages: the baseline retrieval must beat.
    ClosedBook,
}

impl AnswerMode {
    /// The name in predictions, metrics and the report.
    fn name(self) -> &'static str {
        match self {
            AnswerMode::Token => "token",
            AnswerMode::Sequence => "sequence",
            AnswerMode::SequenceFast => "sequence-fast",
            AnswerMode::ClosedBook => "closed-book",
        }
    }

    fn rag_mode(self) -> RagMode {
        match self {
            AnswerMode::Token | AnswerMode::ClosedBook => RagMode::Token,
            AnswerMode::Sequence => RagMode::Sequence(SequenceDecoding::Thorough),
            AnswerMode::SequenceFast => RagMode::Sequence(SequenceDecoding::Fast),
        }
    }
}

/// Arguments of `margin eval` (the answer evaluation).
#[derive(Debug, Args)]
pub struct AnswersArgs {
    /// Questions, JSONL: margin's (`question`, `answers`, `gold_ids`), NQ-open
    /// (`question`, `answer`) or FlashRAG (`question`, `golden_answers`).
    #[arg(long, required = true)]
    pub qa: Option<PathBuf>,
    /// Corpus to index first (our JSONL, DPR's psgs_w100.tsv, or documents);
    /// documents already indexed unchanged are skipped. Omit to use the
    /// index as it is.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Answering modes, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "token,sequence,sequence-fast,closed-book"
    )]
    pub modes: Vec<AnswerMode>,
    /// Retrievers whose recall is measured, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "dense,bm25,hybrid",
          value_parser = parse_mode)]
    pub retrievers: Vec<SearchMode>,
    /// The retriever the answers' passages come from (default: retrieval.mode).
    #[arg(long, value_parser = parse_mode)]
    pub answer_retriever: Option<SearchMode>,
    /// Passages, beams, answer length, prior, generator.
    #[command(flatten)]
    pub answering: AnswerOptions,
    /// Cut-offs k of recall@k, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,10,20,50,100")]
    pub ks: Vec<usize>,
    /// Evaluate the first N questions only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output folder (default: <data_dir>/eval/<qa file name>); a run with
    /// the same settings resumes from the predictions in it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the metrics as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Runs `margin eval`.
pub fn run(config: &Config, args: AnswersArgs) -> anyhow::Result<()> {
    let qa = args.qa.clone().context("--qa: required")?;
    anyhow::ensure!(
        !args.ks.is_empty() && !args.ks.contains(&0),
        "--ks: give cut-offs of at least 1"
    );
    let n_docs = args.answering.n_docs(config)?;
    let base = args.answering.settings(config, RagMode::Token)?;
    let modes: Vec<AnswerMode> = dedup(&args.modes);
    let answer_retriever = args.answer_retriever.unwrap_or(config.retrieval.mode);
    let mut retrievers = dedup(&args.retrievers);
    if !retrievers.contains(&answer_retriever) {
        retrievers.push(answer_retriever);
    }

    let examples = super::questions(&qa, args.limit)?;
    check_unique_ids(&qa, &examples)?;
    let index = crate::wiring::open_index(config)?;
    if let Some(corpus) = &args.corpus {
        super::index_corpus(config, &index, corpus, args.json)?;
    }
    let answerer = Answerer::new(
        crate::wiring::generator(config, args.answering.model.as_deref())?,
        config.rag.clone(),
    );
    let settings = RunSettings {
        // The same file however it is named from where the run starts.
        qa: std::fs::canonicalize(&qa).unwrap_or_else(|_| qa.clone()),
        encoder: index.encoder().name().to_string(),
        generator: answerer.model_name().to_string(),
        retriever: super::mode_name(answer_retriever),
        n_docs,
        beams: base.beams,
        max_new_tokens: base.max_new_tokens,
        prior_temperature: base.prior_temperature,
        prompt: config.rag.prompt.clone(),
        closed_book_prompt: config.rag.closed_book_prompt.clone(),
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| super::default_out(config, &qa));
    let (mut log, mut predictions) = PredictionLog::open(&out, &settings)?;
    if !predictions.is_empty() && !args.json {
        eprintln!(
            "resuming: {} predictions already in {}",
            predictions.len(),
            out.display()
        );
    }

    let mut retrieval = BTreeMap::new();
    let mut retrieval_latency_ms = BTreeMap::new();
    let mut contexts: Vec<(Vec<SearchHit>, Duration)> = Vec::new();
    for &mode in &retrievers {
        let keep = if mode == answer_retriever { n_docs } else { 0 };
        let searched = super::search_all(&index, &examples, mode, &args.ks, keep, args.json)?;
        let name = super::mode_name(mode);
        retrieval_latency_ms.insert(name.clone(), Percentiles::of(&millis(&searched.latencies)));
        retrieval.insert(name, searched.metrics.summary());
        if mode == answer_retriever {
            contexts = searched.kept.into_iter().zip(searched.latencies).collect();
        }
    }

    let done = answered(&predictions);
    // Per question, the modes it still lacks.
    let todo: Vec<(usize, Vec<AnswerMode>)> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let missing = modes
                .iter()
                .copied()
                .filter(|m| !done.contains(&(e.id.clone(), m.name().to_string())))
                .collect::<Vec<_>>();
            (i, missing)
        })
        .filter(|(_, missing)| !missing.is_empty())
        .collect();
    let bar = crate::wiring::progress(todo.iter().map(|(_, m)| m.len() as u64).sum(), "answers");
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    for (i, missing) in todo {
        let example = &examples[i];
        bar.set_message(example.id.clone());
        let (hits, retrieve) = &contexts[i];
        let answered = answer_question(&answerer, example, &missing, base, hits, *retrieve)
            .with_context(|| format!("question {}", example.id))?;
        for prediction in answered {
            log.append(&prediction)?;
            predictions.push(prediction);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    // The run's questions and modes only: the folder may hold more from a
    // run with a larger --limit or other modes.
    let ids: HashSet<&str> = examples.iter().map(|e| e.id.as_str()).collect();
    let names: Vec<&str> = modes.iter().map(|m| m.name()).collect();
    predictions.retain(|p| ids.contains(p.id.as_str()) && names.contains(&p.mode.as_str()));
    let metrics = EvalMetrics {
        settings,
        corpus: args.corpus.as_ref().map(|c| c.display().to_string()),
        questions: examples.len(),
        retrieval,
        retrieval_latency_ms,
        answers: names
            .iter()
            .map(|&name| {
                let of_mode: Vec<&Prediction> =
                    predictions.iter().filter(|p| p.mode == name).collect();
                (name.to_string(), AnswerSummary::of(&of_mode))
            })
            .collect(),
    };
    let json = serde_json::to_string_pretty(&metrics)?;
    super::write_file(&out.join("metrics.json"), &(json.clone() + "\n"))?;
    super::write_file(
        &out.join("report.html"),
        &render_html(&metrics, &predictions),
    )?;

    if args.json {
        println!("{json}");
        return Ok(());
    }
    println!(
        "{} questions from {}; answers from {} retrieval, k = {}, generator {}",
        examples.len(),
        qa.display(),
        metrics.settings.retriever,
        n_docs,
        metrics.settings.generator
    );
    let rows: Vec<_> = metrics.retrieval.clone().into_iter().collect();
    print!("{}", render_table(&rows));
    println!();
    print!("{}", metrics.answer_table());
    println!(
        "\npredictions, metrics.json and report.html in {}",
        out.display()
    );
    Ok(())
}

/// Answers `example` in each of `modes`, in that order: the RAG modes from
/// `hits` with one shared prefill, closed book from the question alone.
fn answer_question(
    answerer: &Answerer,
    example: &QaExample,
    modes: &[AnswerMode],
    base: AskSettings,
    hits: &[SearchHit],
    retrieve: Duration,
) -> anyhow::Result<Vec<Prediction>> {
    let (closed, rag): (Vec<AnswerMode>, Vec<AnswerMode>) =
        modes.iter().partition(|&&m| m == AnswerMode::ClosedBook);
    let mut predictions = Vec::with_capacity(modes.len());
    if !rag.is_empty() {
        let began = Instant::now();
        let prepared = answerer.prepare(&example.question, hits.to_vec(), base)?;
        let preparing = began.elapsed();
        let rag_modes: Vec<RagMode> = rag.iter().map(|m| m.rag_mode()).collect();
        let answers = answerer.answer_in_modes(std::slice::from_ref(&prepared), &rag_modes)?;
        for (&mode, mut answers) in rag.iter().zip(answers) {
            predictions.push(prediction(
                example,
                mode,
                answers.remove(0),
                retrieve,
                preparing,
            ));
        }
    }
    if !closed.is_empty() {
        let began = Instant::now();
        let prepared = answerer.prepare_closed_book(&example.question, base)?;
        let preparing = began.elapsed();
        let answer = answerer
            .answer(std::slice::from_ref(&prepared), &mut |_, _| {})?
            .remove(0);
        predictions.push(prediction(
            example,
            AnswerMode::ClosedBook,
            answer,
            Duration::ZERO,
            preparing,
        ));
    }
    predictions.sort_by_key(|p| modes.iter().position(|m| m.name() == p.mode));
    Ok(predictions)
}

/// `answer` to `example` in `mode`, scored. Its total is what the mode costs
/// alone: retrieval, building the inputs, the (shared) prefill and the mode's
/// own decoding, rescoring and attribution.
fn prediction(
    example: &QaExample,
    mode: AnswerMode,
    answer: Answer,
    retrieve: Duration,
    preparing: Duration,
) -> Prediction {
    let t = answer.timings;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Prediction {
        id: example.id.clone(),
        question: example.question.clone(),
        mode: mode.name().to_string(),
        exact_match: exact_match(&answer.answer, &example.answers),
        f1: f1(&answer.answer, &example.answers),
        contains_answer: has_answer(&example.answers, &answer.answer),
        answer: answer.answer,
        references: example.answers.clone(),
        citations: answer
            .citations
            .into_iter()
            .map(|c| PredictedCitation {
                passage_id: c.passage_id,
                doc_id: c.doc_id,
                title: c.title,
                score: c.score,
                prior: c.prior,
                posterior: c.posterior,
            })
            .collect(),
        gold_ids: example.gold_ids.clone(),
        timings_ms: StageTimings {
            retrieve: ms(retrieve),
            prefill: ms(t.prefill),
            decode: ms(t.decode),
            rescore: ms(t.rescore),
            attribute: ms(t.attribute),
            total: ms(retrieve + preparing + t.prefill + t.decode + t.rescore + t.attribute),
        },
    }
}

fn millis(durations: &[Duration]) -> Vec<f64> {
    durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect()
}

/// `items` without repeats, first occurrences in order.
fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut unique = Vec::new();
    for &item in items {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    unique
}
