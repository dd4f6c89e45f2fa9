//! `margin eval retrieval`: DPR-style retrieval metrics on a QA set.

use std::path::PathBuf;

use crate::commands::index::{index_passages, Progress};
use anyhow::Context;
use clap::{Args, Subcommand};
use margin_core::config::SearchMode;
use margin_core::Config;
use margin_eval::{read_qa_file, render_table, RetrievalMetrics, RetrievalSummary, Retrieved};

/// Which evaluation.
#[derive(Debug, Subcommand)]
pub enum EvalAction {
    /// Gold-passage recall@k, answer recall@k and MRR@10 per search mode.
    Retrieval(RetrievalArgs),
}

/// Arguments of `margin eval retrieval`.
#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// Questions, JSONL: margin's (`question`, `answers`, `gold_ids`), NQ-open or FlashRAG.
    #[arg(long)]
    pub qa: PathBuf,
    /// Corpus to index first (skipped when already indexed unchanged).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Search modes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "dense,bm25,hybrid",
          value_parser = crate::commands::search::parse_mode)]
    pub modes: Vec<SearchMode>,
    /// Cut-offs k of recall@k, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,5,20,100")]
    pub ks: Vec<usize>,
    /// Evaluate the first N questions only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the metrics as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Questions searched per encoder call.
const QUESTION_BATCH: usize = 64;

/// Runs `margin eval`.
pub fn run(config: &Config, action: EvalAction) -> anyhow::Result<()> {
    match action {
        EvalAction::Retrieval(args) => retrieval(config, args),
    }
}

fn retrieval(config: &Config, args: RetrievalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.ks.is_empty() && !args.ks.contains(&0),
        "--ks: give cut-offs of at least 1"
    );
    let mut examples = read_qa_file(&args.qa)?;
    if let Some(limit) = args.limit {
        examples.truncate(limit);
    }
    anyhow::ensure!(!examples.is_empty(), "{}: no questions", args.qa.display());
    let index = crate::wiring::open_index(config)?;
    let (passages, failed) =
        crate::wiring::passages(config, std::slice::from_ref(&args.corpus), true)?;
    debug_assert_eq!(failed, 0);
    let progress = if args.json {
        Progress::Quiet
    } else {
        Progress::Bar
    };
    let indexed = index_passages(&index, passages, progress)?;
    tracing::info!(
        added = indexed.added,
        unchanged = indexed.unchanged,
        "corpus {} indexed",
        args.corpus.display()
    );

    let depth = *args.ks.iter().max().expect("ks is not empty");
    let mut rows: Vec<(String, RetrievalSummary)> = Vec::new();
    for mode in &args.modes {
        let name = format!("{mode:?}").to_lowercase();
        let bar = crate::wiring::progress(examples.len() as u64, &format!("questions ({name})"));
        let mut metrics = RetrievalMetrics::new(&args.ks);
        for chunk in examples.chunks(QUESTION_BATCH) {
            let questions: Vec<&str> = chunk.iter().map(|e| e.question.as_str()).collect();
            let results = index
                .search_batch(&questions, depth, *mode)
                .with_context(|| format!("searching ({name})"))?;
            for (example, hits) in chunk.iter().zip(&results) {
                let ranked: Vec<Retrieved> = hits
                    .iter()
                    .map(|h| Retrieved {
                        doc_id: &h.passage.doc_id,
                        text: &h.passage.text,
                    })
                    .collect();
                metrics.add(example, &ranked);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        rows.push((name, metrics.summary()));
    }

    let report = serde_json::json!({
        "qa": args.qa,
        "corpus": args.corpus,
        "encoder": index.encoder().name(),
        "questions": examples.len(),
        "modes": rows.iter().map(|(n, s)| (n.clone(), s)).collect::<std::collections::BTreeMap<_, _>>(),
    });
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} questions from {}, corpus {}, encoder {}",
            examples.len(),
            args.qa.display(),
            args.corpus.display(),
            index.encoder().name()
        );
        print!("{}", render_table(&rows));
    }
    Ok(())
}
