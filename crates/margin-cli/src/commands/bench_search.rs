//! `margin bench search`: how fast and how exact dense, BM25 and hybrid
//! search are, over the real index or over synthetic vectors at scale.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use margin_core::config::SearchMode;
use margin_core::{Config, Passage};
use margin_store::{DenseSearch, EdgeStore, PassagePoint, VectorStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::commands::bench::peak_rss_mib;

/// Arguments of `margin bench search`.
#[derive(Debug, Args)]
pub struct SearchBench {
    /// Instead of the data directory's index, build a store of this many
    /// synthetic vectors (clustered, like sentence embeddings) and search it.
    #[arg(long)]
    pub synthetic: Option<usize>,
    /// Dimension of synthetic vectors.
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// Where to build the synthetic store (default: a folder in data_dir,
    /// removed afterwards unless --keep).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the synthetic store for another run (which then skips building).
    #[arg(long)]
    pub keep: bool,
    /// Questions for the real index (JSONL with `question`).
    #[arg(long, default_value = "../shared/eval/nq-dev.jsonl")]
    pub qa: PathBuf,
    /// Number of timed queries.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Results per query.
    #[arg(short, long, default_value_t = 20)]
    pub k: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Latency percentiles of one kind of query, in milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    what: String,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
}

#[derive(Debug, Serialize)]
struct SearchReport {
    store: String,
    points: u64,
    dim: usize,
    k: usize,
    queries: usize,
    build_seconds: Option<f64>,
    optimize_seconds: Option<f64>,
    latencies: Vec<Latency>,
    hnsw_recall_at_k: f64,
    peak_rss_mib: Option<f64>,
    disk_mib: f64,
}

/// Runs `margin bench search`.
pub fn run(config: &Config, args: SearchBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.queries > 0 && args.k > 0,
        "--queries and -k must be at least 1"
    );
    let report = match args.synthetic {
        Some(points) => synthetic(config, &args, points)?,
        None => real(config, &args)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}: {} points x {}-d, top-{}, {} queries; HNSW recall@{} vs exact = {:.3}",
        report.store,
        report.points,
        report.dim,
        report.k,
        report.queries,
        report.k,
        report.hnsw_recall_at_k
    );
    if let (Some(b), Some(o)) = (report.build_seconds, report.optimize_seconds) {
        println!("build {b:.1} s (insert + flush), HNSW optimise {o:.1} s");
    }
    for l in &report.latencies {
        println!(
            "  {:<34} p50 {:>8.3} ms  p99 {:>8.3} ms  mean {:>8.3} ms",
            l.what, l.p50_ms, l.p99_ms, l.mean_ms
        );
    }
    println!(
        "peak RSS {}, disk {:.0} MiB",
        report
            .peak_rss_mib
            .map_or("unknown".into(), |m| format!("{m:.0} MiB")),
        report.disk_mib
    );
    Ok(())
}

/// Times `run` once per item and summarises the latencies.
fn time_each<T>(
    what: &str,
    items: &[T],
    mut run: impl FnMut(&T) -> anyhow::Result<()>,
) -> anyhow::Result<Latency> {
    let mut ms = Vec::with_capacity(items.len());
    for item in items {
        let start = Instant::now();
        run(item)?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        what: what.to_string(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
    })
}

/// Mean overlap of HNSW and exact top-k, and the two latencies.
fn dense_latencies(
    store: &dyn VectorStore,
    queries: &[Vec<f32>],
    k: usize,
) -> anyhow::Result<(Vec<Latency>, f64)> {
    let approx = DenseSearch { k, exact: false };
    let exact = DenseSearch { k, exact: true };
    let mut overlap = 0.0;
    for q in queries {
        let found: Vec<String> = store
            .search(q, approx)?
            .into_iter()
            .map(|h| h.passage.id)
            .collect();
        let truth = store.search(q, exact)?;
        let hits = truth
            .iter()
            .filter(|h| found.contains(&h.passage.id))
            .count();
        overlap += hits as f64 / truth.len().max(1) as f64;
    }
    let latencies = vec![
        time_each("dense, HNSW (vector given)", queries, |q| {
            Ok(store.search(q, approx).map(drop)?)
        })?,
        time_each("dense, exact (vector given)", queries, |q| {
            Ok(store.search(q, exact).map(drop)?)
        })?,
    ];
    Ok((latencies, overlap / queries.len() as f64))
}

/// Search latencies over the index in the data directory, for questions of a QA file.
fn real(config: &Config, args: &SearchBench) -> anyhow::Result<SearchReport> {
    let index = crate::wiring::open_index(config)?;
    let status = index.status()?;
    anyhow::ensure!(
        status.passages > 0,
        "the index is empty: run `margin index` first"
    );
    let mut questions: Vec<String> = margin_eval::read_qa_file(&args.qa)?
        .into_iter()
        .map(|e| e.question)
        .collect();
    questions.truncate(args.queries);
    let vectors = index
        .encoder()
        .encode_questions(&questions.iter().map(String::as_str).collect::<Vec<_>>())?;
    let (mut latencies, recall) = dense_latencies(index.vector_store(), &vectors, args.k)?;
    latencies.push(time_each("encode question", &questions, |q| {
        Ok(index.encoder().encode_questions(&[q.as_str()]).map(drop)?)
    })?);
    for mode in [SearchMode::Dense, SearchMode::Bm25, SearchMode::Hybrid] {
        latencies.push(time_each(
            &format!("{mode:?} end to end").to_lowercase(),
            &questions,
            |q| Ok(index.search(q, args.k, mode).map(drop)?),
        )?);
    }
    Ok(SearchReport {
        store: status.vector_store,
        points: status.dense_points,
        dim: index.encoder().dim(),
        k: args.k,
        queries: questions.len(),
        build_seconds: None,
        optimize_seconds: None,
        latencies,
        hnsw_recall_at_k: recall,
        peak_rss_mib: peak_rss_mib(),
        disk_mib: disk_mib(index.dir()),
    })
}

/// A unit vector near `centre`, as sentence embeddings cluster by topic.
fn near(rng: &mut StdRng, centre: &[f32], spread: f32) -> Vec<f32> {
    let mut v: Vec<f32> = centre.iter().map(|c| c + spread * gaussian(rng)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// A standard normal sample (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u: f32 = rng.random_range(f32::EPSILON..1.0);
    let v: f32 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// Points per cluster of the synthetic data.
const CLUSTER_SIZE: usize = 1000;

/// Search latencies over `points` synthetic vectors in a fresh embedded store.
fn synthetic(config: &Config, args: &SearchBench, points: usize) -> anyhow::Result<SearchReport> {
    anyhow::ensure!(
        points > 0 && args.dim > 0,
        "--synthetic and --dim must be at least 1"
    );
    let dir = args.dir.clone().unwrap_or_else(|| {
        config
            .data_dir
            .join(format!("bench-search-{points}x{}", args.dim))
    });
    let mut rng = StdRng::seed_from_u64(7);
    let clusters = points.div_ceil(CLUSTER_SIZE).max(1);
    // Per-coordinate noise such that a point keeps cosine ~0.7 to its centre.
    let spread = 1.0 / (args.dim as f32).sqrt();
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| near(&mut rng, &vec![0.0; args.dim], 1.0))
        .collect();
    let store = EdgeStore::open(&dir, crate::wiring::edge_options(config, args.dim))?;
    let existing = store.count()?;
    let (mut build_seconds, mut optimize_seconds) = (None, None);
    if existing != points as u64 {
        anyhow::ensure!(
            existing == 0,
            "{} holds {existing} points, not {points}: remove it or pass another --dir",
            dir.display()
        );
        let bar = crate::wiring::progress(points as u64, "vectors");
        let start = Instant::now();
        let mut next = 0;
        while next < points {
            let end = (next + 1024).min(points);
            let passages: Vec<Passage> = (next..end)
                .map(|i| Passage {
                    id: format!("syn-{i}#0"),
                    doc_id: format!("syn-{i}"),
                    title: String::new(),
                    text: String::new(),
                    source: "synthetic".into(),
                    position: 0,
                })
                .collect();
            let vectors: Vec<Vec<f32>> = (next..end)
                .map(|i| near(&mut rng, &centres[i % clusters], spread))
                .collect();
            let batch: Vec<PassagePoint> = passages
                .iter()
                .zip(&vectors)
                .map(|(passage, vector)| PassagePoint {
                    passage,
                    generation: "0",
                    vector,
                })
                .collect();
            store.upsert(&batch)?;
            bar.inc((end - next) as u64);
            next = end;
        }
        store.flush()?;
        bar.finish_and_clear();
        build_seconds = Some(start.elapsed().as_secs_f64());
        let spinner = crate::wiring::spinner("building the HNSW graph".into());
        let start = Instant::now();
        store.optimize()?;
        optimize_seconds = Some(start.elapsed().as_secs_f64());
        spinner.finish_and_clear();
    }
    let queries: Vec<Vec<f32>> = (0..args.queries)
        .map(|_| {
            let c = rng.random_range(0..clusters);
            near(&mut rng, &centres[c], spread)
        })
        .collect();
    let (latencies, recall) = dense_latencies(&store, &queries, args.k)?;
    let report = SearchReport {
        store: store.describe(),
        points: store.count()?,
        dim: args.dim,
        k: args.k,
        queries: queries.len(),
        build_seconds,
        optimize_seconds,
        latencies,
        hnsw_recall_at_k: recall,
        peak_rss_mib: peak_rss_mib(),
        disk_mib: disk_mib(&dir),
    };
    drop(store);
    if !args.keep && args.dir.is_none() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(report)
}

/// Bytes on disk under `dir` (allocated blocks, as `du` counts), in MiB.
fn disk_mib(dir: &Path) -> f64 {
    fn walk(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return 0;
        };
        if meta.is_dir() {
            std::fs::read_dir(path)
                .map(|entries| entries.flatten().map(|e| walk(&e.path())).sum())
                .unwrap_or(0)
        } else {
            meta.blocks() * 512
        }
    }
    walk(dir) as f64 / (1024.0 * 1024.0)
}
