//! `margin eval`: answers and retrieval measured on a QA set the way the RAG
//! and DPR papers measure them; `margin eval retrieval` for retrieval alone.

mod answers;
mod retrieval;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use margin_core::config::SearchMode;
use margin_core::Config;
use margin_eval::{read_qa_file, QaExample, RetrievalMetrics, Retrieved};
use margin_index::{Index, SearchHit};

use crate::commands::index::{index_passages, Progress};

pub use answers::AnswersArgs;
pub use retrieval::RetrievalArgs;

/// Arguments of `margin eval`: an answer evaluation, or a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalArgs {
    /// Another evaluation.
    #[command(subcommand)]
    pub action: Option<EvalAction>,
    /// The answer evaluation's arguments.
    #[command(flatten)]
    pub answers: AnswersArgs,
}

/// Evaluations other than the full one.
#[derive(Debug, Subcommand)]
pub enum EvalAction {
    /// Gold-passage recall@k, answer recall@k and MRR@10 per search mode.
    Retrieval(RetrievalArgs),
}

/// Runs `margin eval`.
pub fn run(config: &Config, args: EvalArgs) -> anyhow::Result<()> {
    match args.action {
        Some(EvalAction::Retrieval(a)) => retrieval::run(config, a),
        None => answers::run(config, args.answers),
    }
}

/// The questions of `qa`, the first `limit` of them if given.
fn questions(qa: &Path, limit: Option<usize>) -> anyhow::Result<Vec<QaExample>> {
    let mut examples = read_qa_file(qa)?;
    if let Some(limit) = limit {
        examples.truncate(limit);
    }
    anyhow::ensure!(!examples.is_empty(), "{}: no questions", qa.display());
    Ok(examples)
}

/// Indexes `corpus` into `index` (documents already indexed unchanged are
/// skipped), with a progress bar unless `quiet`.
fn index_corpus(config: &Config, index: &Index, corpus: &Path, quiet: bool) -> anyhow::Result<()> {
    let (passages, failed) =
        crate::wiring::passages(config, std::slice::from_ref(&corpus.to_path_buf()), true)?;
    debug_assert_eq!(failed, 0);
    let progress = if quiet {
        Progress::Quiet
    } else {
        Progress::Bar
    };
    let indexed = index_passages(index, passages, progress)?;
    tracing::info!(
        added = indexed.added,
        unchanged = indexed.unchanged,
        "corpus {} indexed",
        corpus.display()
    );
    Ok(())
}

/// What one retriever gave for a set of questions.
struct Searched {
    metrics: RetrievalMetrics,
    /// Search time of each question, asked one at a time as a client would.
    latencies: Vec<Duration>,
    /// The best `keep` hits of each question.
    kept: Vec<Vec<SearchHit>>,
}

/// Searches every question `depth` deep with `mode`, counting recall at `ks`
/// and keeping the best `keep` hits of each.
fn search_all(
    index: &Index,
    examples: &[QaExample],
    mode: SearchMode,
    ks: &[usize],
    keep: usize,
    quiet: bool,
) -> anyhow::Result<Searched> {
    let name = mode_name(mode);
    let depth = ks.iter().copied().max().unwrap_or(1).max(keep);
    let bar = crate::wiring::progress(examples.len() as u64, &format!("questions ({name})"));
    if quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut searched = Searched {
        metrics: RetrievalMetrics::new(ks),
        latencies: Vec::with_capacity(examples.len()),
        kept: Vec::with_capacity(examples.len()),
    };
    for example in examples {
        let began = Instant::now();
        let mut hits = index
            .search(&example.question, depth, mode)
            .with_context(|| format!("searching ({name}) for question {}", example.id))?;
        searched.latencies.push(began.elapsed());
        let ranked: Vec<Retrieved> = hits
            .iter()
            .map(|h| Retrieved {
                doc_id: &h.passage.doc_id,
                text: &h.passage.text,
            })
            .collect();
        searched.metrics.add(example, &ranked);
        hits.truncate(keep);
        searched.kept.push(hits);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(searched)
}

/// `dense`, `bm25` or `hybrid`.
fn mode_name(mode: SearchMode) -> String {
    format!("{mode:?}").to_lowercase()
}

/// Writes `text` to `path`, naming the file if that fails.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Default output folder of an evaluation of `qa`: `<data_dir>/eval/<file stem>`.
fn default_out(config: &Config, qa: &Path) -> PathBuf {
    let stem = qa
        .file_stem()
        .map_or("eval".into(), |s| s.to_string_lossy().into_owned());
    config.data_dir.join("eval").join(stem)
}
