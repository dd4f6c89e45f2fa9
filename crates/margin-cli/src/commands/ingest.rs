//! `margin ingest PATH...`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use margin_core::{Config, Passage};
use margin_ingest::FileOutcome;

/// Arguments of `margin ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files or folders (txt, md, html, pdf, jsonl, tsv).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write every passage, one JSON object per line, to this file.
    #[arg(long, value_name = "FILE")]
    pub passages_out: Option<PathBuf>,
}

/// Runs `margin ingest`; fails (after reading every file) if any file failed.
pub fn run(config: &Config, args: IngestArgs) -> anyhow::Result<()> {
    let report = crate::wiring::ingest(config, &args.paths)?;
    if let Some(path) = &args.passages_out {
        write_passages(path, &report.passages)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for file in &report.files {
            match &file.outcome {
                FileOutcome::Ingested => println!(
                    "{}: {} documents, {} passages",
                    file.path, file.documents, file.passages
                ),
                FileOutcome::Skipped { reason } => println!("{}: skipped: {reason}", file.path),
                FileOutcome::Failed { error } => println!("FAILED: {error}"),
            }
        }
        let t = &report.totals;
        println!(
            "total: {} passages from {} documents; {} files ingested, {} skipped, {} failed",
            t.passages, t.documents, t.files_ingested, t.files_skipped, t.files_failed
        );
    }
    if report.totals.files_failed > 0 {
        anyhow::bail!(
            "{} file(s) could not be read (see above); the others were ingested",
            report.totals.files_failed
        );
    }
    Ok(())
}

fn write_passages(path: &Path, passages: &[Passage]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for passage in passages {
        serde_json::to_writer(&mut out, passage)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}
