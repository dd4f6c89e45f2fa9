//! `margin ask "QUESTION"`: retrieve k passages, generate with RAG-Token or
//! RAG-Sequence, and cite the passages with their prior and posterior.

use std::time::Instant;

use clap::{Args, ValueEnum};
use margin_core::config::SearchMode;
use margin_core::Config;
use margin_generator::chat::ChatMessage;
use margin_rag::attribution::{answer_likelihoods, posterior};
use margin_rag::inputs::{bart_context, fill_prompt};
use margin_rag::sequence::{self, SequenceDecoding};
use margin_rag::{document_log_prior, token, DecodeSettings, Question, Timings};
use serde::Serialize;

use crate::commands::search::parse_mode;
use crate::wiring::LoadedGenerator;

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
    /// Passages retrieved and marginalised over (default: rag.n_docs).
    #[arg(long)]
    pub n_docs: Option<usize>,
    /// Beams, 1 for greedy (default: rag.beams).
    #[arg(long)]
    pub beams: Option<usize>,
    /// Most tokens generated (default: rag.max_new_tokens).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Retrieval: dense, bm25 or hybrid (default: retrieval.mode).
    #[arg(long, value_parser = parse_mode)]
    pub search_mode: Option<SearchMode>,
    /// Temperature of the document prior's softmax over retrieval scores
    /// (default: rag.prior_temperature).
    #[arg(long)]
    pub prior_temperature: Option<f32>,
    /// Generator: catalogue name or folder (default: models.generator).
    #[arg(long)]
    pub model: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A passage the answer cites.
#[derive(Debug, Serialize)]
struct Citation {
    passage_id: String,
    title: String,
    source: String,
    /// Retrieval score.
    score: f64,
    /// p(z|x)
    prior: f32,
    /// p(z|x,y)
    posterior: f32,
}

#[derive(Debug, Serialize)]
struct AskReport {
    question: String,
    answer: String,
    mode: String,
    model: String,
    citations: Vec<Citation>,
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

/// Runs `margin ask`.
pub fn run(config: &Config, args: AskArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.question.trim().is_empty(),
        "question: must not be empty"
    );
    let n_docs = args.n_docs.unwrap_or(config.rag.n_docs);
    let beams = args.beams.unwrap_or(config.rag.beams);
    let max_new_tokens = args.max_new_tokens.unwrap_or(config.rag.max_new_tokens);
    anyhow::ensure!(n_docs > 0, "--n-docs: must be at least 1");
    anyhow::ensure!(beams > 0, "--beams: must be at least 1");
    anyhow::ensure!(max_new_tokens > 0, "--max-new-tokens: must be at least 1");
    let began = Instant::now();
    let index = crate::wiring::open_index(config)?;
    let loaded = crate::wiring::generator(config, args.model.as_deref())?;
    let load = began.elapsed();
    let began = Instant::now();
    let mode = args.search_mode.unwrap_or(config.retrieval.mode);
    let hits = index.search(&args.question, n_docs, mode)?;
    let retrieve = began.elapsed();
    anyhow::ensure!(
        !hits.is_empty(),
        "no passages found for the question (is anything indexed? see `margin docs`)"
    );
    let scores: Vec<f32> = hits.iter().map(|h| h.score as f32).collect();
    let temperature = args
        .prior_temperature
        .unwrap_or(config.rag.prior_temperature);
    let prior = document_log_prior(&scores, temperature)?;

    let model = loaded.model.as_ref();
    let contexts = hits
        .iter()
        .map(|h| {
            context(
                &loaded,
                config,
                max_new_tokens,
                &h.passage.title,
                &h.passage.text,
                &args.question,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let question = Question {
        contexts,
        doc_log_prior: prior.clone(),
    };
    let start = model.output_start();
    let special = model.special_tokens();
    let settings = DecodeSettings {
        num_beams: beams,
        max_length: start.len() + max_new_tokens,
        min_length: 0,
        no_repeat_ngram_size: 0,
        length_penalty: 1.0,
        early_stopping: true,
        forced_bos_token_id: None,
        forced_eos_token_id: None,
    };
    let mut timings = Timings::default();
    let (tokens, per_doc, attribute) = match args.mode {
        RagMode::Token => {
            let tokens = token::generate(
                model,
                std::slice::from_ref(&question),
                &settings,
                &mut timings,
            )?
            .remove(0);
            let began = Instant::now();
            // The answer as generated, its end of sequence included.
            let generated = answer_tokens(&tokens, start.len(), special.eos, special.pad);
            let ended = tokens.get(start.len() + generated.len()) == Some(&special.eos);
            let scored: Vec<u32> = generated
                .iter()
                .copied()
                .chain(ended.then_some(special.eos))
                .collect();
            let per_doc = answer_likelihoods(model, &question, &scored)?;
            (tokens, per_doc, began.elapsed())
        }
        RagMode::Sequence => {
            let decoding = match args.decoding {
                Decoding::Thorough => SequenceDecoding::Thorough,
                Decoding::Fast => SequenceDecoding::Fast,
            };
            let best = sequence::generate(
                model,
                std::slice::from_ref(&question),
                &settings,
                decoding,
                1,
                &mut timings,
            )?
            .remove(0)
            .remove(0);
            (best.tokens, best.per_doc, std::time::Duration::ZERO)
        }
    };
    let answer = loaded.detokenize(&answer_tokens(
        &tokens,
        start.len(),
        special.eos,
        special.pad,
    ))?;
    let posteriors = posterior(&prior, &per_doc);
    let mut citations: Vec<Citation> = hits
        .iter()
        .zip(&prior)
        .zip(&posteriors)
        .map(|((hit, p), post)| Citation {
            passage_id: hit.passage.id.clone(),
            title: hit.passage.title.clone(),
            source: hit.passage.source.clone(),
            score: hit.score,
            prior: p.exp(),
            posterior: *post,
        })
        .collect();
    citations.sort_by(|a, b| b.posterior.total_cmp(&a.posterior));
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let report = AskReport {
        question: args.question.clone(),
        answer: answer.trim().to_string(),
        mode: match args.mode {
            RagMode::Token => "token".into(),
            RagMode::Sequence => format!("sequence ({:?})", args.decoding).to_lowercase(),
        },
        model: loaded.name.clone(),
        citations,
        timings_ms: TimingsMs {
            load: ms(load),
            retrieve: ms(retrieve),
            prefill: ms(timings.prefill),
            decode: ms(timings.decode),
            rescore: ms(timings.rescore),
            attribute: ms(attribute),
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}", report.answer);
    println!();
    println!("  {:>5} {:>9}  passage", "prior", "posterior");
    for c in &report.citations {
        println!(
            "  {:>5.3} {:>9.3}  {}  [{}]  {}",
            c.prior, c.posterior, c.passage_id, c.title, c.source
        );
    }
    let t = &report.timings_ms;
    eprintln!(
        "RAG-{}, {} passages, {}: load {:.0} ms, retrieve {:.0} ms, prefill {:.0} ms, decode {:.0} ms, rescore {:.0} ms, attribute {:.0} ms",
        report.mode, hits.len(), report.model, t.load, t.retrieve, t.prefill, t.decode, t.rescore, t.attribute
    );
    Ok(())
}

/// The generator input for one passage: BART's "title / text // question",
/// cut to rag.max_context_tokens, or rag.prompt through a decoder LLM's chat
/// template.
fn context(
    loaded: &LoadedGenerator,
    config: &Config,
    max_new_tokens: usize,
    title: &str,
    text: &str,
    question: &str,
) -> anyhow::Result<Vec<u32>> {
    let limit = loaded.model.limits().max_context_tokens;
    if !loaded.model.output_start().is_empty() {
        // With BART's special tokens, as transformers' RAG tokenises them;
        // truncation keeps the closing EOS.
        let mut ids = loaded
            .tokenizer
            .encode(bart_context(title, text, question), true)
            .map_err(|e| anyhow::anyhow!("tokenizing for {}: {e}", loaded.name))?
            .get_ids()
            .to_vec();
        let cut = match config.rag.max_context_tokens {
            0 => limit,
            n => n.min(limit),
        };
        if ids.len() > cut && cut > 1 {
            let last = ids[ids.len() - 1];
            ids.truncate(cut - 1);
            ids.push(last);
        }
        return Ok(ids);
    }
    let prompt = fill_prompt(&config.rag.prompt, title, text, question);
    let text = match &loaded.chat_template {
        Some(template) => template.render(&[ChatMessage::new("user", prompt)], true)?,
        None => prompt,
    };
    let ids = loaded.tokenize(&text)?;
    // The answer follows the prompt in the same context window.
    anyhow::ensure!(
        ids.len() + max_new_tokens <= limit,
        "a passage prompt has {} tokens and the answer may take {max_new_tokens} more; {} takes at most {limit}",
        ids.len(),
        loaded.name
    );
    Ok(ids)
}

/// The generated tokens after the start tokens, up to (not including) EOS,
/// without the padding a finished row is filled with.
fn answer_tokens(tokens: &[u32], start: usize, eos: u32, pad: u32) -> Vec<u32> {
    let mut answer: Vec<u32> = tokens[start.min(tokens.len())..]
        .iter()
        .copied()
        .take_while(|&t| t != eos)
        .collect();
    while answer.last() == Some(&pad) {
        answer.pop();
    }
    answer
}
