//! `margin bench encode`: throughput and peak memory of passage encoding.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use margin_core::config::EncoderBackend;
use margin_core::Config;
use margin_encoder::PassageText;
use serde::Serialize;

/// Which benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchAction {
    /// Encode N passages of a corpus; report passages/s and peak memory.
    Encode(EncodeBench),
    /// Search latency (p50/p99), HNSW recall against exact search, memory and
    /// disk: over the index in the data directory, or over N synthetic vectors.
    Search(crate::commands::bench_search::SearchBench),
    /// Prefill and decode tokens/s and peak memory of a generator: one
    /// context, k contexts one by one, and k contexts as one batch.
    Generate(crate::commands::bench_generate::GenerateBench),
}

/// Arguments of `margin bench encode`.
#[derive(Debug, Args)]
pub struct EncodeBench {
    /// Corpus to take passages from (any format `margin ingest` reads).
    #[arg(long, default_value = "../shared/eval/corpus.jsonl")]
    pub corpus: PathBuf,
    /// Number of passages encoded.
    #[arg(long, default_value_t = 2000)]
    pub passages: usize,
    /// Encoder backend to measure (default: `encoder.backend`).
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--backend` values, as `encoder.backend` spells them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackendArg {
    /// BERT on candle.
    Candle,
    /// An ONNX export on ONNX Runtime.
    Onnx,
}

impl From<BackendArg> for EncoderBackend {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Candle => EncoderBackend::Candle,
            BackendArg::Onnx => EncoderBackend::Onnx,
        }
    }
}

#[derive(Serialize)]
struct EncodeReport {
    backend: &'static str,
    model: String,
    device: String,
    batch_size: usize,
    max_length: usize,
    passages: usize,
    seconds: f64,
    passages_per_second: f64,
    peak_rss_mib: Option<f64>,
    threads: usize,
}

/// Runs `margin bench`.
pub fn run(config: &Config, action: BenchAction) -> anyhow::Result<()> {
    match action {
        BenchAction::Encode(args) => encode(config, args),
        BenchAction::Search(args) => crate::commands::bench_search::run(config, args),
        BenchAction::Generate(args) => crate::commands::bench_generate::run(config, args),
    }
}

fn encode(config: &Config, args: EncodeBench) -> anyhow::Result<()> {
    let (mut passages, _) =
        crate::wiring::passages(config, std::slice::from_ref(&args.corpus), true)?;
    passages.truncate(args.passages);
    anyhow::ensure!(
        !passages.is_empty(),
        "{} has no passages",
        args.corpus.display()
    );
    let inputs: Vec<PassageText> = passages
        .iter()
        .map(|p| PassageText {
            title: &p.title,
            text: &p.text,
        })
        .collect();

    let mut config = config.clone();
    if let Some(backend) = args.backend {
        config.encoder.backend = backend.into();
        config.validate()?;
    }
    let config = &config;
    let encoder = crate::wiring::encoder(config)?;
    // One warm-up batch so that one-off allocation is not timed.
    encoder.encode_passages(&inputs[..inputs.len().min(config.encoder.batch_size)])?;
    let bar = crate::wiring::spinner(format!("encoding {} passages", inputs.len()));
    let start = Instant::now();
    let vectors = encoder.encode_passages(&inputs)?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    anyhow::ensure!(
        vectors.len() == inputs.len(),
        "encoder returned {} vectors for {} inputs",
        vectors.len(),
        inputs.len()
    );

    let out = EncodeReport {
        backend: encoder.backend(),
        model: encoder.name().to_string(),
        device: format!("{:?}", config.encoder.device).to_lowercase(),
        batch_size: config.encoder.batch_size,
        max_length: encoder.max_length(),
        passages: inputs.len(),
        seconds,
        passages_per_second: inputs.len() as f64 / seconds,
        peak_rss_mib: peak_rss_mib(),
        threads: match (encoder.backend(), config.encoder.threads) {
            ("onnx", n) if n > 0 => n,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} ({}): {} passages in {:.2} s = {:.1} passages/s (batch {}, max {} tokens, {} on {} threads); peak RSS {}",
            out.model,
            out.backend,
            out.passages,
            out.seconds,
            out.passages_per_second,
            out.batch_size,
            out.max_length,
            out.device,
            out.threads,
            out.peak_rss_mib.map_or("unknown".into(), |m| format!("{m:.0} MiB"))
        );
    }
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
