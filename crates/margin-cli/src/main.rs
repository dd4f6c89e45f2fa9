//! `margin`: the command-line edge of margin.

mod commands;
mod wiring;

// Tensors are large, short-lived buffers; mimalloc reuses them instead of
// returning pages to the kernel and faulting fresh zeroed ones back in.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use margin_core::config::ConfigSources;
use margin_core::Config;

/// margin: retrieval-augmented generation in one binary.
#[derive(Debug, Parser)]
#[command(name = "margin", version, about)]
struct Args {
    /// A TOML file layered over the built-in defaults.
    #[arg(long, global = true, env = "MARGIN_CONFIG")]
    config: Option<PathBuf>,

    /// Data directory (models, indexes); same as `--set data_dir=DIR`.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,

    /// Override any configuration key, e.g. `--set encoder.batch_size=64`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", global = true, value_parser = parse_key_value)]
    overrides: Vec<(String, String)>,

    /// Log filter (tracing syntax), e.g. `info` or `margin_models=debug`.
    #[arg(
        long,
        global = true,
        env = "MARGIN_LOG",
        default_value = "info,qdrant_edge=error,tantivy=warn"
    )]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the effective configuration.
    Config {
        #[command(subcommand)]
        action: commands::config::ConfigAction,
    },
    /// List, fetch and verify models.
    Models {
        #[command(subcommand)]
        action: commands::models::ModelsAction,
    },
    /// Read documents and split them into passages; prints counts per file.
    Ingest(commands::ingest::IngestArgs),
    /// Encode the passages of documents into a vectors file.
    Embed(commands::embed::EmbedArgs),
    /// Index documents (ingest, embed, store), skipping unchanged ones.
    Index(commands::index::IndexArgs),
    /// Search the index: dense, BM25 or hybrid.
    Search(commands::search::SearchArgs),
    /// Delete documents from the index.
    Rm(commands::index::RmArgs),
    /// List the indexed documents.
    Docs(commands::index::ListArgs),
    /// Count documents and passages in each store, and check that they agree.
    Status(commands::index::ListArgs),
    /// Generate text with a generator alone (no retrieval).
    Generate(commands::generate::GenerateArgs),
    /// Answer a question from the index: retrieve k passages, generate with
    /// RAG-Token or RAG-Sequence, cite passages with prior and posterior.
    Ask(commands::ask::AskArgs),
    /// Serve the REST API and web UI (after indexing any `--index` paths).
    Serve(commands::serve::ServeArgs),
    /// Evaluate on a QA set: EM/F1 per answering mode (RAG-Token,
    /// RAG-Sequence, closed book), retrieval recall@k per retriever, latency;
    /// predictions, metrics JSON and an HTML report.
    Eval(Box<commands::eval::EvalArgs>),
    /// Measure throughput and memory.
    Bench {
        #[command(subcommand)]
        action: commands::bench::BenchAction,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let mut overrides = Vec::new();
    if let Some(dir) = &args.data_dir {
        overrides.push(("data_dir".to_string(), dir.display().to_string()));
    }
    overrides.extend(args.overrides.iter().cloned());
    let config = Config::load(&ConfigSources {
        file: args.config.clone(),
        env: None,
        overrides,
    })?;

    match args.command {
        Command::Config { action } => commands::config::run(&config, action),
        Command::Models { action } => commands::models::run(&config, action),
        Command::Ingest(a) => commands::ingest::run(&config, a),
        Command::Embed(a) => commands::embed::run(&config, a),
        Command::Index(a) => commands::index::run(&config, a),
        Command::Search(a) => commands::search::run(&config, a),
        Command::Rm(a) => commands::index::rm(&config, a),
        Command::Docs(a) => commands::index::docs(&config, a),
        Command::Status(a) => commands::index::status(&config, a),
        Command::Generate(a) => commands::generate::run(&config, a),
        Command::Ask(a) => commands::ask::run(&config, a),
        Command::Serve(a) => commands::serve::run(&config, a),
        Command::Eval(a) => commands::eval::run(&config, *a),
        Command::Bench { action } => commands::bench::run(&config, action),
    }
}
