//! The `Encoder` seam on ONNX Runtime, through fastembed.
//!
//! [`OnnxEncoder`] runs a sentence-transformers model exported to ONNX
//! (`model.onnx` beside the usual tokenizer and pooling files) with the same
//! pooling, normalisation, truncation and passage layout as the candle
//! backend, so the two give the same vectors up to the export's precision.
//!
//! ONNX Runtime is never linked or downloaded at build time: [`Runtime::load`]
//! opens its shared library from a path at run time, and a missing or too old
//! library is an error that says how to get one, so a binary built with this
//! crate still runs the candle backend without it.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fastembed::{InitOptionsUserDefined, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel};
use margin_core::{OperationError, OperationResult};
use margin_encoder::{input_limit, Encoder, PassageText, Pooling, PoolingSpec};

/// Environment variable naming the ONNX Runtime library; it wins over the
/// model cache's copy.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Oldest ONNX Runtime this build can use (fastembed's ort asks for API 24).
pub const MIN_RUNTIME: &str = "1.24";

/// The ONNX Runtime library loaded into this process.
///
/// ONNX Runtime allows one environment per process and ort keeps the first
/// library it loads, so the first successful [`Runtime::load`] is shared by
/// every later one.
#[derive(Clone)]
pub struct Runtime {
    path: PathBuf,
    environment: ort::environment::Environment,
}

/// The runtime loaded so far; a failed load leaves it empty so a later call
/// (say, after `margin models pull onnxruntime`) can still succeed.
static LOADED: Mutex<Option<Runtime>> = Mutex::new(None);

impl Runtime {
    /// Loads the ONNX Runtime shared library at `path` (or returns the one
    /// already loaded from the same path).
    pub fn load(path: &Path) -> OperationResult<Runtime> {
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(runtime) = loaded.as_ref() {
            if runtime.path != path {
                return Err(unavailable(
                    path,
                    format!(
                        "ONNX Runtime is already loaded from {} in this process",
                        runtime.path.display()
                    ),
                ));
            }
            return Ok(runtime.clone());
        }
        if !path.is_file() {
            return Err(unavailable(path, "no such file".into()));
        }
        let environment = ort::init_from(path)
            .map_err(|e| unavailable(path, e.to_string()))?
            .with_name("margin")
            .build()
            .map_err(|e| unavailable(path, e.to_string()))?;
        let runtime = Runtime {
            path: path.to_path_buf(),
            environment,
        };
        *loaded = Some(runtime.clone());
        tracing::info!("ONNX Runtime loaded from {}", path.display());
        Ok(runtime)
    }
}

/// `ORT_DYLIB_PATH` when set and not empty.
pub fn dylib_from_env() -> Option<PathBuf> {
    std::env::var_os(DYLIB_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn unavailable(path: &Path, message: String) -> OperationError {
    OperationError::ModelUnavailable {
        model: "onnxruntime".into(),
        message: format!(
            "cannot load the ONNX Runtime library {}: {message}",
            path.display()
        ),
        hint: format!(
            "run `margin models pull onnxruntime`, or set {DYLIB_ENV} to an ONNX Runtime >= {MIN_RUNTIME} library; encoder.backend = \"candle\" needs no runtime"
        ),
    }
}

/// How an [`OnnxEncoder`] runs.
#[derive(Debug, Clone)]
pub struct OnnxEncoderOptions {
    /// Inputs per `session.run`.
    pub batch_size: usize,
    /// Input length cap in tokens; 0 for the model's own maximum.
    pub max_length: usize,
    /// ONNX Runtime intra-op threads; 0 for one per core.
    pub threads: usize,
}

impl Default for OnnxEncoderOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_length: 0,
            threads: 0,
        }
    }
}

/// A sentence-transformers bi-encoder exported to ONNX, one shared model for
/// questions and passages.
pub struct OnnxEncoder {
    name: String,
    // fastembed's `embed` takes `&mut self`; encoding is already parallel
    // inside ONNX Runtime, so callers queue rather than share.
    model: Mutex<TextEmbedding>,
    dim: usize,
    max_length: usize,
    batch_size: usize,
}

/// The files of a model folder fastembed reads, besides `model.onnx`.
const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

impl OnnxEncoder {
    /// Loads the model in `dir` (`model.onnx`, tokenizer files,
    /// sentence-transformers' `modules.json` and pooling config) on `runtime`.
    pub fn load(
        name: &str,
        dir: &Path,
        runtime: &Runtime,
        options: &OnnxEncoderOptions,
    ) -> OperationResult<OnnxEncoder> {
        let fail =
            |message: String| OperationError::model(name, format!("{}: {message}", dir.display()));
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|e| fail(format!("{file}: {e}")))
        };
        let onnx = dir.join("model.onnx");
        if !onnx.is_file() {
            return Err(fail(
                "no model.onnx: encoder.backend = \"onnx\" needs an ONNX export (e.g. models.encoder = \"all-minilm-l6-v2-int8\")".into(),
            ));
        }
        let spec = PoolingSpec::from_dir(dir).map_err(fail)?;
        let pooling = match spec.pooling {
            Pooling::Mean => fastembed::Pooling::Mean,
            Pooling::Cls => fastembed::Pooling::Cls,
            Pooling::Max => {
                return Err(fail(
                    "max pooling is not supported by the ONNX backend".into(),
                ))
            }
        };
        // fastembed always L2-normalises; an unnormalised model would change meaning.
        if !spec.normalize {
            return Err(fail(
                "the model declares no Normalize module, and the ONNX backend always L2-normalises; use encoder.backend = \"candle\"".into(),
            ));
        }
        let config: serde_json::Value = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| fail(format!("config.json: {e}")))?;
        let field = |key: &str| {
            config[key]
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| fail(format!("config.json has no numeric `{key}`")))
        };
        let dim = field("hidden_size")?;
        let max_length = input_limit(dir, field("max_position_embeddings")?, options.max_length);

        let [tokenizer, config_file, special_tokens, tokenizer_config] = TOKENIZER_FILES.map(read);
        let model = UserDefinedEmbeddingModel::new(
            read("model.onnx")?,
            TokenizerFiles {
                tokenizer_file: tokenizer?,
                config_file: config_file?,
                special_tokens_map_file: special_tokens?,
                tokenizer_config_file: tokenizer_config?,
            },
        )
        .with_pooling(pooling);
        let mut init = InitOptionsUserDefined::new()
            .with_environment(runtime.environment.clone())
            .with_max_length(max_length);
        if options.threads > 0 {
            init = init.with_intra_threads(options.threads);
        }
        let model = TextEmbedding::try_new_from_user_defined(model, init)
            .map_err(|e| fail(format!("ONNX Runtime could not load model.onnx: {e}")))?;
        Ok(OnnxEncoder {
            name: name.to_string(),
            model: Mutex::new(model),
            dim,
            max_length,
            batch_size: options.batch_size.max(1),
        })
    }

    /// Embeds `texts` in batches of similar length, returning vectors in input order.
    fn embed(&self, texts: &[&str]) -> OperationResult<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // fastembed pads each batch to its longest input; sorting by length
        // (bytes stand in for tokens) keeps that padding, and so wasted work, small.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let sorted: Vec<&str> = order.iter().map(|&i| texts[i]).collect();
        let mut model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let mut vectors = Vec::with_capacity(texts.len());
        // One batch per call: fastembed keeps every batch's token-level output
        // until the whole call is pooled, so one call over thousands of
        // passages would hold gigabytes.
        for batch in sorted.chunks(self.batch_size) {
            vectors.extend(
                model
                    .embed(batch, Some(self.batch_size))
                    .map_err(|e| OperationError::model(&self.name, e))?,
            );
        }
        drop(model);
        if vectors.len() != texts.len() || vectors.iter().any(|v| v.len() != self.dim) {
            return Err(OperationError::model(
                &self.name,
                format!(
                    "ONNX model returned {} vectors for {} inputs, or not of size {}",
                    vectors.len(),
                    texts.len(),
                    self.dim
                ),
            ));
        }
        let mut out = vec![Vec::new(); texts.len()];
        for (i, vector) in order.into_iter().zip(vectors) {
            out[i] = vector;
        }
        Ok(out)
    }
}

impl Encoder for OnnxEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> &'static str {
        "onnx"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn max_length(&self) -> usize {
        self.max_length
    }

    fn normalized(&self) -> bool {
        true
    }

    fn encode_questions(&self, questions: &[&str]) -> OperationResult<Vec<Vec<f32>>> {
        self.embed(questions)
    }

    fn encode_passages(&self, passages: &[PassageText<'_>]) -> OperationResult<Vec<Vec<f32>>> {
        let joined: Vec<_> = passages.iter().map(PassageText::joined).collect();
        let texts: Vec<&str> = joined.iter().map(|t| t.as_ref()).collect();
        self.embed(&texts)
    }
}
