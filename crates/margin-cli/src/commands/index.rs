//! `margin index`, `margin rm`, `margin docs` and `margin status`: the index
//! as a person sees it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use margin_core::Config;
use margin_index::{Index, IndexEvent, IndexSummary};
use serde_json::json;

/// Arguments of `margin index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Files or folders (txt, md, html, pdf, jsonl, tsv).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print progress as JSON lines on stdout (one `committed` event per
    /// durable commit, naming its documents) instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `margin rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Ids of the documents to delete.
    #[arg(required = true)]
    pub doc_ids: Vec<String>,
}

/// Arguments of `margin docs` and `margin status`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `margin index`: indexes every readable file, then fails if any file
/// could not be read.
pub fn run(config: &Config, args: IndexArgs) -> anyhow::Result<()> {
    let index = crate::wiring::open_index(config)?;
    let (passages, failed) = crate::wiring::passages(config, &args.paths, false)?;
    let progress = if args.json {
        Progress::JsonLines
    } else {
        Progress::Bar
    };
    let summary = index_passages(&index, passages, progress)?;
    if args.json {
        println!("{}", json!({"event": "done", "summary": summary}));
    } else {
        println!(
            "{} documents: {} added, {} replaced, {} unchanged; {} passages in {:.1} s",
            summary.documents,
            summary.added,
            summary.replaced,
            summary.unchanged,
            summary.passages,
            summary.seconds
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} file(s) could not be read (see above); the others were indexed");
    }
    Ok(())
}

/// How indexing progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar on stderr.
    Bar,
    /// JSON lines on stdout, for scripts.
    JsonLines,
    /// Nothing (stdout carries another JSON document).
    Quiet,
}

/// Indexes `passages`, showing progress as asked.
pub fn index_passages(
    index: &Index,
    passages: Vec<margin_core::Passage>,
    progress: Progress,
) -> anyhow::Result<IndexSummary> {
    let json = progress == Progress::JsonLines;
    let bar = crate::wiring::progress(0, "passages");
    if progress != Progress::Bar {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut documents_done = 0;
    let mut to_index = 0;
    let summary = index.index(passages, &mut |event| match event {
        IndexEvent::Planned {
            documents,
            unchanged,
            passages,
        } => {
            to_index = documents - unchanged;
            bar.set_length(passages as u64);
            bar.set_message(format!("0/{to_index} documents"));
            if json {
                println!(
                    "{}",
                    json!({"event": "planned", "documents": documents, "unchanged": unchanged, "passages": passages})
                );
            }
        }
        IndexEvent::Embedded { passages } => bar.inc(passages as u64),
        IndexEvent::Committed { documents } => {
            documents_done += documents.len();
            bar.set_message(format!("{documents_done}/{to_index} documents"));
            if json {
                let ids: Vec<&str> = documents.iter().map(|d| d.doc_id.as_str()).collect();
                println!("{}", json!({"event": "committed", "documents": ids}));
                // A reader (a script, the crash test) acts on each commit as it happens.
                let _ = std::io::stdout().flush();
            }
        }
    })?;
    bar.finish_and_clear();
    Ok(summary)
}

/// Runs `margin rm`.
pub fn rm(config: &Config, args: RmArgs) -> anyhow::Result<()> {
    let index = crate::wiring::open_index(config)?;
    for doc_id in &args.doc_ids {
        let record = index
            .remove(doc_id)
            .with_context(|| format!("deleting {doc_id}"))?;
        println!(
            "deleted {} ({} passages, from {})",
            record.doc_id, record.passages, record.source
        );
    }
    Ok(())
}

/// Runs `margin docs`.
pub fn docs(config: &Config, args: ListArgs) -> anyhow::Result<()> {
    let index = crate::wiring::open_index(config)?;
    let documents = index.documents();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&documents)?);
    } else {
        for d in &documents {
            println!(
                "{}\t{} passages\t{}\t{}",
                d.doc_id, d.passages, d.title, d.source
            );
        }
        println!("{} documents", documents.len());
    }
    Ok(())
}

/// Runs `margin status`; fails if the stores disagree with the registry.
pub fn status(config: &Config, args: ListArgs) -> anyhow::Result<()> {
    let index = crate::wiring::open_index(config)?;
    let status = index.status()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!(
            "{} documents, {} passages; {}: {} points; BM25: {} passages",
            status.documents,
            status.passages,
            status.vector_store,
            status.dense_points,
            status.bm25_passages
        );
    }
    anyhow::ensure!(
        status.consistent,
        "the stores do not hold exactly the registered passages"
    );
    Ok(())
}
