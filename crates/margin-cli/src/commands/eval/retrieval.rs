//! `margin eval retrieval`: DPR-style retrieval metrics on a QA set.

use std::path::PathBuf;

use clap::Args;
use margin_core::config::SearchMode;
use margin_core::Config;
use margin_eval::{render_table, RetrievalSummary};

/// Arguments of `margin eval retrieval`.
#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// Questions, JSONL: margin's (`question`, `answers`, `gold_ids`), NQ-open or FlashRAG.
    #[arg(long)]
    pub qa: PathBuf,
    /// Corpus to index first (skipped when already indexed unchanged); omit
    /// to search the index as it is.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
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

/// Runs `margin eval retrieval`.
pub fn run(config: &Config, args: RetrievalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.ks.is_empty() && !args.ks.contains(&0),
        "--ks: give cut-offs of at least 1"
    );
    let examples = super::questions(&args.qa, args.limit)?;
    let index = crate::wiring::open_index(config)?;
    if let Some(corpus) = &args.corpus {
        super::index_corpus(config, &index, corpus, args.json)?;
    }
    let mut rows: Vec<(String, RetrievalSummary)> = Vec::new();
    for &mode in &args.modes {
        let searched = super::search_all(&index, &examples, mode, &args.ks, 0, args.json)?;
        rows.push((super::mode_name(mode), searched.metrics.summary()));
    }

    let report = serde_json::json!({
        "qa": args.qa,
        "corpus": args.corpus,
        "encoder": index.encoder().name(),
        "questions": examples.len(),
        "modes": rows.iter().map(|(n, s)| (n.clone(), s)).collect::<std::collections::BTreeMap<_, _>>(),
    });
    if let Some(out) = &args.out {
        super::write_file(out, &serde_json::to_string_pretty(&report)?)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} questions from {}, corpus {}, encoder {}",
            examples.len(),
            args.qa.display(),
            args.corpus
                .as_ref()
                .map_or("(the index as it is)".into(), |c| c.display().to_string()),
            index.encoder().name()
        );
        print!("{}", render_table(&rows));
    }
    Ok(())
}
