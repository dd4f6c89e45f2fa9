//! The `Generator` seam on tiny random GGUF models (llama and Gemma 3 layouts,
//! written here with candle's GGUF writer) and the tiny BART fixture: a
//! padded batch of contexts gives what each context gives alone, stepping,
//! reordering and teacher forcing agree with fresh runs, bad input is refused.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use margin_generator::bart::Bart;
use margin_generator::gguf::GgufModel;
use margin_generator::Generator;

const VOCAB: usize = 64;
const HIDDEN: usize = 32;

/// Deterministic weights in [-scale, scale].
fn weights(seed: &mut u64, shape: &[usize], scale: f32) -> Tensor {
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 33) as f32 / (1u64 << 31) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Writes a tiny random model of `architecture` (llama or gemma3) to `dir`.
fn tiny_gguf(dir: &Path, architecture: &str) -> PathBuf {
    let gemma = architecture == "gemma3";
    let (heads, kv_heads, head_dim, layers) = if gemma { (4, 1, 32, 6) } else { (4, 2, 8, 2) };
    let ffn = 64;
    let mut seed = if gemma { 7 } else { 3 };
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let matrix = |name: String, rows: usize, cols: usize, seed: &mut u64| {
        let t = weights(seed, &[rows, cols], 0.4);
        (name, QTensor::quantize(&t, GgmlDType::Q8_0).unwrap())
    };
    // Norm weights near 1, as trained ones are.
    let norm = |name: String, len: usize, seed: &mut u64| {
        (name, (weights(seed, &[len], 0.2) + 1.0).unwrap())
    };
    tensors.push(matrix("token_embd.weight".into(), VOCAB, HIDDEN, &mut seed));
    let mut vectors: Vec<(String, Tensor)> =
        vec![norm("output_norm.weight".into(), HIDDEN, &mut seed)];
    for i in 0..layers {
        let b = |s: &str| format!("blk.{i}.{s}.weight");
        tensors.push(matrix(b("attn_q"), heads * head_dim, HIDDEN, &mut seed));
        tensors.push(matrix(b("attn_k"), kv_heads * head_dim, HIDDEN, &mut seed));
        tensors.push(matrix(b("attn_v"), kv_heads * head_dim, HIDDEN, &mut seed));
        tensors.push(matrix(
            b("attn_output"),
            HIDDEN,
            heads * head_dim,
            &mut seed,
        ));
        tensors.push(matrix(b("ffn_gate"), ffn, HIDDEN, &mut seed));
        tensors.push(matrix(b("ffn_up"), ffn, HIDDEN, &mut seed));
        tensors.push(matrix(b("ffn_down"), HIDDEN, ffn, &mut seed));
        vectors.push(norm(b("attn_norm"), HIDDEN, &mut seed));
        vectors.push(norm(b("ffn_norm"), HIDDEN, &mut seed));
        if gemma {
            vectors.push(norm(b("attn_q_norm"), head_dim, &mut seed));
            vectors.push(norm(b("attn_k_norm"), head_dim, &mut seed));
            vectors.push(norm(b("post_attention_norm"), HIDDEN, &mut seed));
            vectors.push(norm(b("post_ffw_norm"), HIDDEN, &mut seed));
        }
    }
    for (name, t) in vectors {
        tensors.push((name, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    let key = |k: &str| format!("{architecture}.{k}");
    let mut metadata: Vec<(String, Value)> = vec![
        (
            "general.architecture".into(),
            Value::String(architecture.into()),
        ),
        (key("embedding_length"), Value::U32(HIDDEN as u32)),
        (key("block_count"), Value::U32(layers as u32)),
        (key("attention.head_count"), Value::U32(heads as u32)),
        (key("attention.head_count_kv"), Value::U32(kv_heads as u32)),
        (key("attention.key_length"), Value::U32(head_dim as u32)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        (key("context_length"), Value::U32(128)),
        (key("rope.freq_base"), Value::F32(10_000.0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
    ];
    if gemma {
        // A window shorter than the test prompts, so that it matters.
        metadata.push((key("attention.sliding_window"), Value::U32(4)));
        metadata.push((key("rope.local_freq_base"), Value::F32(100.0)));
    }
    let path = dir.join(format!("tiny-{architecture}.gguf"));
    let mut file = std::fs::File::create(&path).unwrap();
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
    path
}

fn generators(dir: &Path) -> Vec<Box<dyn Generator>> {
    let mut out: Vec<Box<dyn Generator>> = ["llama", "gemma3"]
        .iter()
        .map(|a| {
            Box::new(GgufModel::load(a, &tiny_gguf(dir, a), &Device::Cpu).unwrap())
                as Box<dyn Generator>
        })
        .collect();
    let bart = margin_testkit::workspace_root().join("tests/fixtures/bart/tiny-gelu");
    out.push(Box::new(
        Bart::load(&bart, &Device::Cpu, candle_core::DType::F32).unwrap(),
    ));
    out
}

fn assert_close(name: &str, what: &str, a: &[f32], b: &[f32]) {
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "{name}: {what} differs by {worst}");
}

/// Contexts of different lengths; the first three share a 4-token prefix,
/// which decoder-only generators run once.
fn contexts() -> Vec<Vec<u32>> {
    vec![
        vec![1, 5, 9, 13, 20, 21, 22, 23, 24, 25, 26],
        vec![1, 5, 9, 13, 30],
        vec![1, 5, 9, 13, 40, 41, 42, 43],
        vec![7, 8],
    ]
}

/// Next-token log-probs of `context` followed by `tokens`, prepared alone.
fn alone(g: &dyn Generator, context: &[u32], tokens: &[u32]) -> Vec<f32> {
    if g.output_start().is_empty() {
        let whole: Vec<u32> = context.iter().chain(tokens).copied().collect();
        g.prepare(&[whole]).unwrap().log_probs().unwrap().remove(0)
    } else {
        let mut session = g.prepare(&[context.to_vec()]).unwrap();
        for &t in tokens {
            session.advance(&[t]).unwrap();
        }
        session.log_probs().unwrap().remove(0)
    }
}

#[test]
fn a_padded_batch_gives_what_each_context_gives_alone() {
    let dir = tempfile::tempdir().unwrap();
    for g in generators(dir.path()) {
        let batch = g.prepare(&contexts()).unwrap().log_probs().unwrap();
        assert_eq!(batch.len(), 4);
        for (row, context) in batch.iter().zip(contexts()) {
            assert_eq!(row.len(), g.vocab_size());
            let total: f32 = row.iter().map(|p| p.exp()).sum();
            assert!(
                (total - 1.0).abs() < 1e-4,
                "{}: probabilities sum to {total}",
                g.name()
            );
            assert_close(
                g.name(),
                "batched prefill",
                row,
                &alone(g.as_ref(), &context, &[]),
            );
        }
    }
}

#[test]
fn stepping_and_reordering_rows_agree_with_fresh_runs() {
    let dir = tempfile::tempdir().unwrap();
    for g in generators(dir.path()) {
        let contexts = contexts();
        let prepared = g.prepare(&contexts).unwrap();
        // Row i continues context parents[i]: reordered, duplicated, one dropped;
        // a fork, so that the prepared session stays as it was.
        let parents = [2, 0, 2, 3];
        let mut session = prepared.fork(&parents).unwrap();
        let steps: [[u32; 4]; 3] = [[3, 4, 5, 6], [10, 11, 12, 13], [6, 6, 7, 60]];
        for step in &steps {
            session.advance(step).unwrap();
        }
        let stepped = session.log_probs().unwrap();
        for (i, &p) in parents.iter().enumerate() {
            let tokens: Vec<u32> = steps.iter().map(|s| s[i]).collect();
            let fresh = alone(g.as_ref(), &contexts[p], &tokens);
            assert_close(
                g.name(),
                &format!("row {i} after 3 steps"),
                &stepped[i],
                &fresh,
            );
        }
    }
}

#[test]
fn teacher_forcing_scores_what_stepping_gives() {
    let dir = tempfile::tempdir().unwrap();
    for g in generators(dir.path()) {
        let contexts = contexts();
        let session = g.prepare(&contexts).unwrap();
        let targets = vec![vec![3, 4, 5], vec![9], vec![12, 2, 2, 8], vec![30, 31]];
        let scores = session.score(&targets).unwrap();
        // Whole distributions: normalised, and the targets' entries are the scores.
        let distributions = session.distributions(&targets).unwrap();
        for ((rows, target), got) in distributions.iter().zip(&targets).zip(&scores) {
            assert_eq!(rows.len(), target.len());
            for ((row, &token), score) in rows.iter().zip(target).zip(got) {
                let total: f32 = row.iter().map(|p| p.exp()).sum();
                assert!((total - 1.0).abs() < 1e-4, "{}: sums to {total}", g.name());
                assert_eq!(row[token as usize], *score);
            }
        }
        for ((context, target), got) in contexts.iter().zip(&targets).zip(&scores) {
            assert_eq!(got.len(), target.len());
            let expected: Vec<f32> = (0..target.len())
                .map(|t| alone(g.as_ref(), context, &target[..t])[target[t] as usize])
                .collect();
            assert_close(g.name(), "teacher forcing", got, &expected);
        }
        // Scoring left the session as it was, and it goes on as if never
        // scored (decoder-only sessions share cache buffers with the scoring run).
        let mut session = session;
        let again = session.log_probs().unwrap();
        let fresh = g.prepare(&contexts).unwrap().log_probs().unwrap();
        assert_close(g.name(), "session after score", &again[1], &fresh[1]);
        session.advance(&[40, 41, 42, 43]).unwrap();
        let stepped = session.log_probs().unwrap();
        for (i, context) in contexts.iter().enumerate() {
            let expected = alone(g.as_ref(), context, &[40 + i as u32]);
            assert_close(g.name(), "a step after score", &stepped[i], &expected);
        }
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for g in generators(dir.path()) {
        let err = |r: Result<(), margin_core::OperationError>| r.unwrap_err().to_string();
        assert!(err(g.prepare(&[]).map(|_| ())).contains("at least one"));
        assert!(err(g.prepare(&[vec![1], vec![]]).map(|_| ())).contains("context 1"));
        let outside = vec![1, g.vocab_size() as u32];
        assert!(err(g.prepare(&[outside]).map(|_| ())).contains("outside"));
        let too_long = vec![3; g.limits().max_context_tokens + 1];
        assert!(err(g.prepare(&[too_long]).map(|_| ())).contains("at most"));
        let mut session = g.prepare(&contexts()).unwrap();
        assert!(err(session.select(&[0, 4])).contains("row 4"));
        assert!(err(session.advance(&[1, 2])).contains("2 given for 4 rows"));
        assert!(err(session.score(&[vec![1]]).map(|_| ())).contains("1 given"));
        // A refused call leaves the session usable.
        session.advance(&[1, 2, 3, 4]).unwrap();
        assert_eq!(session.log_probs().unwrap().len(), 4);
    }
}

#[test]
fn long_teacher_forcing_scores_in_chunks_as_whole_distributions_do() {
    // 4 rows x 70 targets = 280 positions: more than one chunk of logits
    // (GGUF: 256 picks); BART (64 positions at most) scores 4 x 60 targets
    // two rows at a time (128 positions).
    let dir = tempfile::tempdir().unwrap();
    for g in generators(dir.path()) {
        let g = g.as_ref();
        let length = if g.output_start().is_empty() { 70 } else { 60 };
        let session = g.prepare(&contexts()).unwrap();
        let targets: Vec<Vec<u32>> = (0..4)
            .map(|r| {
                (0..length)
                    .map(|t| ((r * 13 + t * 7) % 60 + 3) as u32)
                    .collect()
            })
            .collect();
        let scores = session.score(&targets).unwrap();
        let whole = session.distributions(&targets).unwrap();
        for ((rows, target), got) in whole.iter().zip(&targets).zip(&scores) {
            let expected: Vec<f32> = rows
                .iter()
                .zip(target)
                .map(|(row, &t)| row[t as usize])
                .collect();
            assert_close(g.name(), "chunked teacher forcing", got, &expected);
        }
    }
}
