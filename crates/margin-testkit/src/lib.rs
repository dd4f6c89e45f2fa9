//! Helpers for margin's tests.
//!
//! Tests that need a real model or the shared evaluation data call
//! [`real_model`] or [`shared_eval_file`]: when the file is missing they print
//! why they are skipped and return `None`, unless `MARGIN_REQUIRE_MODELS=1`
//! (set by `.ci/run`), where a missing model fails the test instead of
//! silently passing.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config as BertConfig, HiddenAct};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crate sits in <root>/crates/<name>")
        .to_path_buf()
}

/// Whether missing real models must fail tests rather than skip them.
fn models_required() -> bool {
    std::env::var("MARGIN_REQUIRE_MODELS").is_ok_and(|v| v == "1")
}

/// The model cache tests read: `MARGIN_MODELS_DIR`, else `<root>/data/models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("MARGIN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("data/models"))
}

/// The cached folder of catalogue model `name`, if it has been pulled.
pub fn real_model(test: &str, name: &str) -> Option<PathBuf> {
    let dir = models_dir().join(name);
    if dir.join("margin-manifest.json").is_file() {
        return Some(dir);
    }
    let why = format!(
        "{test}: SKIPPED, model `{name}` is not in {} (run `margin models pull {name}`)",
        models_dir().display()
    );
    if models_required() {
        panic!("{why}, and MARGIN_REQUIRE_MODELS=1");
    }
    eprintln!("{why}");
    None
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// sentence-transformers' MiniLM reference (`tests/fixtures/minilm_reference.json`):
/// `sentences`, their `embeddings` and the `max_seq_length` they were made with.
pub fn minilm_reference() -> serde_json::Value {
    let path = workspace_root().join("tests/fixtures/minilm_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Encodes the sentences of sentence-transformers' MiniLM reference
/// (`tests/fixtures/minilm_reference.json`) with `encode`, checks every vector
/// against the reference at cosine `min_cosine` or more, and returns the
/// lowest cosine and the reference's `max_seq_length`.
pub fn check_against_minilm_reference(
    encode: impl FnOnce(&[&str]) -> Vec<Vec<f32>>,
    min_cosine: f32,
) -> (f32, usize) {
    let reference = minilm_reference();
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(sentences.len() >= 10);
    let expected: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    let ours = encode(&sentences);
    assert_eq!(ours.len(), sentences.len());
    let mut worst = f32::INFINITY;
    for ((sentence, mine), theirs) in sentences.iter().zip(&ours).zip(&expected) {
        let c = cosine(mine, theirs);
        assert!(
            c >= min_cosine,
            "cosine {c} < {min_cosine} for {sentence:?}"
        );
        worst = worst.min(c);
    }
    let max_seq_length = reference["max_seq_length"].as_u64().unwrap() as usize;
    (worst, max_seq_length)
}

/// The ONNX Runtime library tests load: `ORT_DYLIB_PATH` when set, else the
/// model cache's `onnxruntime` (skipped, or failed under
/// `MARGIN_REQUIRE_MODELS=1`, when neither is there).
pub fn onnx_runtime(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let dir = real_model(test, "onnxruntime")?;
    let lib = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime"))
        });
    Some(lib.unwrap_or_else(|| panic!("{test}: no libonnxruntime* in {}", dir.display())))
}

/// A file of `../shared/eval/` beside the workspace, if present.
pub fn shared_eval_file(test: &str, file: &str) -> Option<PathBuf> {
    let path = workspace_root().join("../shared/eval").join(file);
    if path.is_file() {
        return Some(path);
    }
    let why = format!("{test}: SKIPPED, {} not found", path.display());
    if models_required() {
        panic!("{why}, and MARGIN_REQUIRE_MODELS=1");
    }
    eprintln!("{why}");
    None
}

/// Words of the tiny BERT's vocabulary after the special tokens.
pub const TINY_WORDS: &[&str] = &[
    "the", "a", "of", "tide", "moon", "sea", "bee", "honey", "press", "print", "book", "light",
    "house", "ship", "who", "what", "when", "is", "was", "first", "prize", "physics", "nobel",
    "in", "and", ",", ".", "?",
];

/// How a tiny BERT folder is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyBertStyle {
    /// sentence-transformers: modules.json, mean pooling, Normalize.
    SentenceTransformers,
    /// A DPR question encoder: weights under `question_encoder.bert_model`.
    DprQuestion,
    /// A DPR context encoder: weights under `ctx_encoder.bert_model`.
    DprContext,
}

/// Writes a tiny random BERT (2 layers, hidden 32, vocab.txt only) into `dir`,
/// with freshly drawn random weights (the tests check properties that hold for any weights).
pub fn write_tiny_bert(dir: &Path, style: TinyBertStyle, max_position_embeddings: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend(TINY_WORDS.iter().map(|s| s.to_string()));
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    let config = BertConfig {
        vocab_size: vocab.len(),
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        hidden_act: HiddenAct::Gelu,
        hidden_dropout_prob: 0.0,
        max_position_embeddings,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        classifier_dropout: None,
        model_type: Some("bert".into()),
        ..Default::default()
    };
    let config_json = serde_json::json!({
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "max_position_embeddings": max_position_embeddings,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "model_type": "bert",
    });
    std::fs::write(dir.join("config.json"), config_json.to_string()).unwrap();

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let vb = match style {
        TinyBertStyle::SentenceTransformers => vb,
        TinyBertStyle::DprQuestion => vb.pp("question_encoder.bert_model"),
        TinyBertStyle::DprContext => vb.pp("ctx_encoder.bert_model"),
    };
    BertModel::load(vb, &config).unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();

    if style == TinyBertStyle::SentenceTransformers {
        std::fs::write(
            dir.join("modules.json"),
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
               {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
               {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}"#,
        )
        .unwrap();
    }
}

/// Rows of token ids without the positions their 0/1 attention mask hides
/// (reference fixtures store padded batches; generators take unpadded rows).
pub fn unpadded(ids: Vec<Vec<u32>>, mask: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
    ids.into_iter()
        .zip(mask)
        .map(|(ids, mask)| {
            ids.into_iter()
                .zip(mask)
                .filter(|(_, m)| *m == 1)
                .map(|(t, _)| t)
                .collect()
        })
        .collect()
}

/// Writes to `out` a slice of the corpus JSONL `corpus`: the gold documents of
/// the first `questions` questions of `qa` (margin's format, with `gold_ids`)
/// and the first `distractors` other documents, in corpus order.
pub fn write_gold_corpus(
    out: &Path,
    qa: &Path,
    corpus: &Path,
    questions: usize,
    distractors: usize,
) {
    use std::io::{BufRead, BufReader, Write};
    let lines = |path: &Path| BufReader::new(std::fs::File::open(path).unwrap()).lines();
    let gold: std::collections::HashSet<String> = lines(qa)
        .take(questions)
        .flat_map(|line| {
            let q: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            q["gold_ids"]
                .as_array()
                .expect("questions with gold_ids")
                .iter()
                .map(|g| g.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut file = std::fs::File::create(out).unwrap();
    let mut distractors = distractors;
    for line in lines(corpus) {
        let line = line.unwrap();
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        let is_gold = gold.contains(record["id"].as_str().unwrap());
        if is_gold || distractors > 0 {
            distractors -= usize::from(!is_gold);
            writeln!(file, "{line}").unwrap();
        }
    }
}

/// Runs the `margin` binary `bin` (a test's `env!("CARGO_BIN_EXE_margin")`)
/// in `dir` with `args`, on the given encoder and generator folders, with the
/// built-in configuration and warnings-only logs.
pub fn run_margin(
    bin: &str,
    dir: &Path,
    encoder: &Path,
    generator: &Path,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(bin)
        .current_dir(dir)
        .env_remove("MARGIN_CONFIG")
        .env("MARGIN_LOG", "warn")
        .args(["--set", &format!("models.encoder={}", encoder.display())])
        .args([
            "--set",
            &format!("models.generator={}", generator.display()),
        ])
        .args(args)
        .output()
        .unwrap()
}
