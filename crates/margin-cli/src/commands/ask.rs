//! `margin ask "QUESTION"`: retrieve k passages, generate with RAG-Token or
//! RAG-Sequence, and cite the passages with their prior and posterior.

use std::time::Instant;

use clap::{Args, ValueEnum};
use margin_answer::{Answerer, AskSettings, Citation};
use margin_core::config::SearchMode;
use margin_core::Config;
use margin_rag::sequence::SequenceDecoding;
use serde::Serialize;

use crate::commands::search::parse_mode;

/// Which marginalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RagMode {
    /// Marginalise over passages at every token.
    Token,
    /// Marginalise over passages once per whole answer.
    Sequence,
}

/// RAG-Sequence decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Decoding {
    /// Every hypothesis scored against every passage.
    Thorough,
    /// Hypotheses scored only by the beams that found them.
    Fast,
}

/// Arguments of `margin ask`.
#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question.
    pub question: String,
    /// token or sequence.
    #[arg(long, value_enum, default_value = "token")]
    pub mode: RagMode,
    /// RAG-Sequence decoding: thorough or fast.
    #[arg(long, value_enum, default_value = "thorough")]
    pub decoding: Decoding,
    /// Retrieval: dense, bm25 or hybrid (default: retrieval.mode).
    #[arg(long, value_parser = parse_mode)]
    pub search_mode: Option<SearchMode>,
    /// Passages, beams, answer length, prior, generator.
    #[command(flatten)]
    pub answering: AnswerOptions,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct AskReport<'a> {
    question: &'a str,
    answer: &'a str,
    mode: String,
    model: &'a str,
    citations: &'a [Citation],
    timings_ms: TimingsMs,
}

#[derive(Debug, Serialize)]
struct TimingsMs {
    /// Opening the index and loading the encoder and generator.
    load: f64,
    retrieve: f64,
    prefill: f64,
    decode: f64,
    rescore: f64,
    attribute: f64,
}

/// How questions are answered, shared by `margin ask` and `margin eval`;
/// unset options take the `[rag]` configuration.
#[derive(Debug, Args)]
pub struct AnswerOptions {
    /// Passages retrieved and marginalised over (default: rag.n_docs).
    #[arg(long)]
    pub n_docs: Option<usize>,
    /// Beams, 1 for greedy (default: rag.beams).
    #[arg(long)]
    pub beams: Option<usize>,
    /// Most tokens generated (default: rag.max_new_tokens).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Temperature of the document prior's softmax over retrieval scores
    /// (default: rag.prior_temperature).
    #[arg(long)]
    pub prior_temperature: Option<f32>,
    /// Generator: catalogue name or folder (default: models.generator).
    #[arg(long)]
    pub model: Option<String>,
}

impl AnswerOptions {
    /// Passages per question, checked.
    pub fn n_docs(&self, config: &Config) -> anyhow::Result<usize> {
        let n_docs = self.n_docs.unwrap_or(config.rag.n_docs);
        anyhow::ensure!(n_docs > 0, "--n-docs: must be at least 1");
        Ok(n_docs)
    }

    /// The answering settings for `mode`, defaults from `config`, checked.
    pub fn settings(
        &self,
        config: &Config,
        mode: margin_answer::RagMode,
    ) -> anyhow::Result<AskSettings> {
        let defaults = AskSettings::from_config(&config.rag, mode);
        let settings = AskSettings {
            beams: self.beams.unwrap_or(defaults.beams),
            max_new_tokens: self.max_new_tokens.unwrap_or(defaults.max_new_tokens),
            prior_temperature: self.prior_temperature.unwrap_or(defaults.prior_temperature),
            ..defaults
        };
        settings.check().map_err(|e| anyhow::anyhow!("--{e}"))?;
        Ok(settings)
    }
}

impl AskArgs {
    /// The marginalisation these arguments ask for.
    fn rag_mode(&self) -> margin_answer::RagMode {
        match (self.mode, self.decoding) {
            (RagMode::Token, _) => margin_answer::RagMode::Token,
            (RagMode::Sequence, Decoding::Thorough) => {
                margin_answer::RagMode::Sequence(SequenceDecoding::Thorough)
            }
            (RagMode::Sequence, Decoding::Fast) => {
                margin_answer::RagMode::Sequence(SequenceDecoding::Fast)
            }
        }
    }
}

/// Runs `margin ask`.
pub fn run(config: &Config, args: AskArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.question.trim().is_empty(),
        "question: must not be empty"
    );
    let n_docs = args.answering.n_docs(config)?;
    let settings = args.answering.settings(config, args.rag_mode())?;
    let began = Instant::now();
    let index = crate::wiring::open_index(config)?;
    let answerer = Answerer::new(
        crate::wiring::generator(config, args.answering.model.as_deref())?,
        config.rag.clone(),
    );
    let load = began.elapsed();
    let began = Instant::now();
    let mode = args.search_mode.unwrap_or(config.retrieval.mode);
    let hits = index.search(&args.question, n_docs, mode)?;
    let retrieve = began.elapsed();
    anyhow::ensure!(
        !hits.is_empty(),
        "no passages found for the question (is anything indexed? see `margin docs`)"
    );
    let passages = hits.len();
    let prepared = answerer.prepare(&args.question, hits, settings)?;
    let answer = answerer
        .answer(std::slice::from_ref(&prepared), &mut |_, _| {})?
        .remove(0);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let report = AskReport {
        question: &args.question,
        answer: &answer.answer,
        mode: settings.mode_name(),
        model: answerer.model_name(),
        citations: &answer.citations,
        timings_ms: TimingsMs {
            load: ms(load),
            retrieve: ms(retrieve),
            prefill: ms(answer.timings.prefill),
            decode: ms(answer.timings.decode),
            rescore: ms(answer.timings.rescore),
            attribute: ms(answer.timings.attribute),
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}", report.answer);
    println!();
    println!("  {:>5} {:>9}  passage", "prior", "posterior");
    for c in report.citations {
        println!(
            "  {:>5.3} {:>9.3}  {}  [{}]  {}",
            c.prior, c.posterior, c.passage_id, c.title, c.source
        );
    }
    let t = &report.timings_ms;
    eprintln!(
        "RAG-{}, {} passages, {}: load {:.0} ms, retrieve {:.0} ms, prefill {:.0} ms, decode {:.0} ms, rescore {:.0} ms, attribute {:.0} ms",
        report.mode, passages, report.model, t.load, t.retrieve, t.prefill, t.decode, t.rescore, t.attribute
    );
    Ok(())
}
