//! Builds the implementations the configuration asks for, and the progress
//! displays people watch while they run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use margin_answer::LoadedGenerator;
use margin_core::config::{DTypeKind, DeviceKind, EncoderBackend, StoreKind};
use margin_core::{Config, Passage};
use margin_encoder::{BertEncoder, BertEncoderOptions, Encoder};
use margin_encoder_onnx::{OnnxEncoder, OnnxEncoderOptions};
use margin_generator::bart::Bart;
use margin_generator::gguf::GgufModel;
use margin_index::{HybridSettings, Index, IndexLock, IndexSettings};
use margin_ingest::{ingest_paths, Chunker, FileOutcome, IngestReport};
use margin_models::{ModelStore, Role};
use margin_store::{EdgeOptions, EdgeStore, QdrantOptions, QdrantStore, VectorStore};

/// The compute device the configuration names.
pub fn device(kind: DeviceKind) -> anyhow::Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda if cfg!(feature = "cuda") => {
            Device::new_cuda(0).context("device = \"cuda\" but no CUDA device could be opened")
        }
        DeviceKind::Cuda => anyhow::bail!(
            "device = \"cuda\" needs a build with `--features cuda`; this binary is CPU-only"
        ),
    }
}

/// The generator `name` (catalogue name or folder; default
/// `models.generator`), pulled into the cache first if needed: a folder
/// holding a `.gguf` file is a decoder LLM, one whose `config.json` says
/// `"model_type": "bart"` a BART checkpoint.
pub fn generator(config: &Config, name: Option<&str>) -> anyhow::Result<LoadedGenerator> {
    let name = name.unwrap_or(&config.models.generator).to_string();
    let dir = ModelStore::from_config(config)?.ensure(&name)?;
    let device = device(config.generator.device)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
    let gguf = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "gguf"));
    if let Some(gguf) = gguf {
        let model = GgufModel::load(&name, &gguf, &device)?;
        return Ok(LoadedGenerator {
            chat_template: model.chat_template().cloned(),
            prompt_bos: model.with_bos(vec![]).first().copied(),
            model: Box::new(model),
            tokenizer,
            name,
        });
    }
    let config_path = dir.join("config.json");
    let model_type = std::fs::read_to_string(&config_path)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v["model_type"].as_str().map(str::to_string));
    anyhow::ensure!(
        model_type.as_deref() == Some("bart"),
        "model `{name}`: {} holds neither a .gguf file nor a BART checkpoint (config.json with \"model_type\": \"bart\")",
        dir.display()
    );
    let dtype = match config.generator.dtype {
        DTypeKind::F32 => DType::F32,
        DTypeKind::F16 => DType::F16,
        DTypeKind::Bf16 => DType::BF16,
    };
    Ok(LoadedGenerator {
        model: Box::new(Bart::load(&dir, &device, dtype)?),
        tokenizer,
        chat_template: None,
        prompt_bos: None,
        name,
    })
}

/// The configured encoder on the configured backend, pulling models (and
/// ONNX Runtime) into the cache first if needed.
pub fn encoder(config: &Config) -> anyhow::Result<Box<dyn Encoder>> {
    let store = ModelStore::from_config(config)?;
    match config.encoder.backend {
        EncoderBackend::Candle => Ok(Box::new(candle_encoder(config, &store)?)),
        EncoderBackend::Onnx => {
            let name = onnx_model_name(config, &store)?.with_context(|| {
                format!(
                    "models.encoder = \"{}\" has no ONNX export; use encoder.backend = \"candle\", or an ONNX model such as all-minilm-l6-v2-int8",
                    config.models.encoder
                )
            })?;
            Ok(Box::new(onnx_encoder(config, &store, &name)?))
        }
        EncoderBackend::Auto => {
            let Some(name) = onnx_model_name(config, &store)? else {
                return Ok(Box::new(candle_encoder(config, &store)?));
            };
            match onnx_encoder(config, &store, &name) {
                Ok(encoder) => Ok(Box::new(encoder)),
                Err(e) => {
                    tracing::warn!(
                        "encoder.backend = \"auto\": the ONNX backend is unavailable ({e:#}); running {} on candle",
                        config.models.encoder
                    );
                    Ok(Box::new(candle_encoder(config, &store)?))
                }
            }
        }
    }
}

/// One shared BERT model, or DPR's question and passage pair, on candle.
fn candle_encoder(config: &Config, store: &ModelStore) -> anyhow::Result<BertEncoder> {
    let name = &config.models.encoder;
    let dir = store.ensure(name)?;
    let options = BertEncoderOptions {
        device: device(config.encoder.device)?,
        batch_size: config.encoder.batch_size,
        max_length: config.encoder.max_length,
    };
    let passage = &config.models.passage_encoder;
    if passage.is_empty() || passage == name {
        // A DPR question encoder alone would encode passages with the wrong model.
        if let Ok(entry) = store.catalogue().get(name) {
            anyhow::ensure!(
                entry.roles.contains(&Role::PassageEncoder),
                "models.encoder = \"{name}\" encodes questions only; set models.passage_encoder too (e.g. dpr-ctx-encoder-nq)"
            );
        }
        return Ok(BertEncoder::load(name, &dir, &options)?);
    }
    let passage_dir = store.ensure(passage)?;
    Ok(BertEncoder::load_dual(
        &format!("{name}+{passage}"),
        &dir,
        &passage_dir,
        &options,
    )?)
}

/// The ONNX model the onnx backend would run for `models.encoder`: the model
/// itself when it is an ONNX export (a catalogue entry or folder with
/// `model.onnx`), else the export its catalogue entry names; `None` when it
/// has none, or when the configuration needs candle (CUDA, a DPR pair).
pub fn onnx_model_name(config: &Config, store: &ModelStore) -> anyhow::Result<Option<String>> {
    let name = &config.models.encoder;
    let passage = &config.models.passage_encoder;
    if config.encoder.device != DeviceKind::Cpu || !(passage.is_empty() || passage == name) {
        anyhow::ensure!(
            config.encoder.backend != EncoderBackend::Onnx,
            "encoder.backend = \"onnx\" runs one shared model; models.passage_encoder (DPR pairs) needs encoder.backend = \"candle\""
        );
        return Ok(None);
    }
    Ok(match store.catalogue().get(name) {
        Ok(entry) if entry.files.iter().any(|f| f.name == "model.onnx") => Some(name.clone()),
        Ok(entry) => entry.onnx_export.clone(),
        Err(_) => std::path::Path::new(name)
            .join("model.onnx")
            .is_file()
            .then(|| name.clone()),
    })
}

/// The ONNX Runtime library: `ORT_DYLIB_PATH` when set, else the model
/// cache's copy (pulled first if missing).
fn onnx_runtime(store: &ModelStore) -> anyhow::Result<margin_encoder_onnx::Runtime> {
    let path = match margin_encoder_onnx::dylib_from_env() {
        Some(path) => path,
        None => {
            let dir = store.ensure(ONNX_RUNTIME).with_context(|| {
                format!(
                    "encoder.backend = \"onnx\" needs ONNX Runtime: pull it, or set {} to an ONNX Runtime >= {} library",
                    margin_encoder_onnx::DYLIB_ENV,
                    margin_encoder_onnx::MIN_RUNTIME
                )
            })?;
            let file = &store.catalogue().get(ONNX_RUNTIME)?.files[0].name;
            dir.join(file)
        }
    };
    Ok(margin_encoder_onnx::Runtime::load(&path)?)
}

/// The catalogue name of the ONNX Runtime library.
pub const ONNX_RUNTIME: &str = "onnxruntime";

/// The ONNX model `name` on ONNX Runtime.
fn onnx_encoder(config: &Config, store: &ModelStore, name: &str) -> anyhow::Result<OnnxEncoder> {
    let runtime = onnx_runtime(store)?;
    if name != config.models.encoder {
        tracing::info!(
            "running {name}, the ONNX export of {}",
            config.models.encoder
        );
    }
    let dir = store.ensure(name)?;
    let options = OnnxEncoderOptions {
        batch_size: config.encoder.batch_size,
        max_length: config.encoder.max_length,
        threads: config.encoder.threads,
    };
    Ok(OnnxEncoder::load(name, &dir, &runtime, &options)?)
}

/// The embedded store's settings for vectors of `dim` dimensions.
pub fn edge_options(config: &Config, dim: usize) -> EdgeOptions {
    EdgeOptions {
        dim,
        hnsw_m: config.retrieval.hnsw_m,
        hnsw_ef_construct: config.retrieval.hnsw_ef_construct,
        hnsw_ef: config.retrieval.hnsw_ef,
    }
}

/// The configured vector store for vectors of `dim` dimensions; the embedded
/// one lives in the locked index folder.
fn vector_store(
    config: &Config,
    lock: &IndexLock,
    dim: usize,
) -> anyhow::Result<Box<dyn VectorStore>> {
    Ok(match config.retrieval.store {
        StoreKind::Edge => Box::new(EdgeStore::open(
            &lock.dir().join("vectors"),
            edge_options(config, dim),
        )?),
        StoreKind::Qdrant => {
            let q = &config.qdrant;
            Box::new(QdrantStore::connect(QdrantOptions {
                url: q.url.clone(),
                api_key: q.api_key.is_set().then(|| q.api_key.expose().to_string()),
                collection: q.collection.clone(),
                dim,
                distance: format!("{:?}", q.distance).to_lowercase(),
                shard_number: q.shard_number,
                replication_factor: q.replication_factor,
                upsert_batch: q.upsert_batch,
                retries: q.retries,
                timeout_secs: q.timeout_secs,
                hnsw_ef: config.retrieval.hnsw_ef,
            })?)
        }
    })
}

/// Opens the index under the data directory with the configured encoder and
/// vector store (pulling the encoder first if needed).
pub fn open_index(config: &Config) -> anyhow::Result<Index> {
    let lock = IndexLock::acquire(&config.data_dir.join("index"))?;
    let encoder: Arc<dyn Encoder> = Arc::from(encoder(config)?);
    let vectors = vector_store(config, &lock, encoder.dim())?;
    let r = &config.retrieval;
    let settings = IndexSettings {
        commit_passages: r.commit_passages,
        chunking: format!(
            "words={} overlap={} max_length={}",
            config.chunking.words, config.chunking.overlap, config.encoder.max_length
        ),
        hybrid: HybridSettings {
            dense_weight: r.dense_weight,
            bm25_weight: r.bm25_weight,
            candidates: r.hybrid_candidates,
        },
    };
    Ok(Index::open(lock, vectors, encoder, settings)?)
}

/// Reads and splits `paths` as the configuration says.
pub fn ingest(config: &Config, paths: &[PathBuf]) -> anyhow::Result<IngestReport> {
    Ok(ingest_paths(paths, &Chunker::new(config.chunking)?))
}

/// The passages of `paths` and how many files failed, each failure reported
/// on stderr; with `strict`, any failed file is an error.
pub fn passages(
    config: &Config,
    paths: &[PathBuf],
    strict: bool,
) -> anyhow::Result<(Vec<Passage>, usize)> {
    let report = ingest(config, paths)?;
    for file in &report.files {
        if let FileOutcome::Failed { error } = &file.outcome {
            eprintln!("FAILED: {error}");
        }
    }
    let t = &report.totals;
    tracing::info!(
        "read {} files ({} skipped, {} failed): {} documents, {} passages",
        t.files_ingested + t.files_skipped + t.files_failed,
        t.files_skipped,
        t.files_failed,
        t.documents,
        t.passages
    );
    let failed = report.totals.files_failed;
    if strict && failed > 0 {
        anyhow::bail!("{failed} file(s) could not be read");
    }
    Ok((report.passages, failed))
}

/// A spinner for waits of unknown length.
pub fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar counting `unit`s towards `total`, with rate and ETA.
pub fn progress(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}}) {{msg}}"
        ))
        .expect("valid template"),
    );
    bar
}
