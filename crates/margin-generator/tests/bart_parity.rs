//! BART on candle against Hugging Face transformers, on the tiny random
//! checkpoints of tests/fixtures/bart (made by make_bart_reference.py):
//! logits of teacher-forced decoding, and plain greedy generation.

use std::path::PathBuf;

use candle_core::{Device, Tensor, D};
use margin_generator::bart::Bart;
use serde_json::Value;

const CHECKPOINTS: [&str; 2] = ["tiny-gelu", "tiny-relu-scaled"];

fn fixture(name: &str) -> (Bart, Value) {
    let dir: PathBuf = margin_testkit::workspace_root()
        .join("tests/fixtures/bart")
        .join(name);
    let bart = Bart::load(&dir, &Device::Cpu).unwrap();
    let reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    (bart, reference)
}

fn ids(value: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(value.clone()).unwrap()
}

fn tensor(rows: &[Vec<u32>]) -> Tensor {
    Tensor::new(rows.to_vec(), &Device::Cpu).unwrap()
}

#[test]
fn logits_match_transformers_within_1e_4() {
    for name in CHECKPOINTS {
        let (bart, reference) = fixture(name);
        let input = tensor(&ids(&reference["encoder_input_ids"]));
        let mask = tensor(&ids(&reference["attention_mask"]));
        let decoder = tensor(&ids(&reference["decoder_input_ids"]));
        let encoded = bart.encode(&input, &mask).unwrap();
        let logits: Vec<Vec<Vec<f32>>> = bart
            .decode(&decoder, &encoded, &mask)
            .unwrap()
            .to_vec3()
            .unwrap();
        let expected: Vec<Vec<Vec<f32>>> =
            serde_json::from_value(reference["logits"].clone()).unwrap();
        let worst = logits
            .iter()
            .flatten()
            .flatten()
            .zip(expected.iter().flatten().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{name}: max |logit difference| = {worst:e}");
        assert!(worst < 1e-4, "{name}: {worst}");
    }
}

/// Greedy search as transformers runs it with these checkpoints' settings:
/// an optional forced BOS at the first step, EOS forced at `max_length`,
/// finished rows padded.
fn greedy(
    bart: &Bart,
    input: &Tensor,
    mask: &Tensor,
    max_length: usize,
    forced_bos: Option<u32>,
) -> Vec<Vec<u32>> {
    let c = bart.config();
    let encoded = bart.encode(input, mask).unwrap();
    let batch = input.dim(0).unwrap();
    let mut rows = vec![vec![c.decoder_start_token_id]; batch];
    let mut done = vec![false; batch];
    while rows[0].len() < max_length && !done.iter().all(|d| *d) {
        let step = rows[0].len();
        let log_probs = bart
            .next_token_log_probs(&tensor(&rows), &encoded, mask)
            .unwrap();
        let last = log_probs
            .narrow(1, step - 1, 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        let best: Vec<u32> = last.argmax(D::Minus1).unwrap().to_vec1().unwrap();
        for (i, row) in rows.iter_mut().enumerate() {
            let forced = match step {
                1 => forced_bos,
                _ if step + 1 == max_length => c.forced_eos_token_id,
                _ => None,
            };
            let token = if done[i] {
                c.pad_token_id
            } else {
                forced.unwrap_or(best[i])
            };
            done[i] |= token == c.eos_token_id;
            row.push(token);
        }
    }
    rows
}

#[test]
fn greedy_generation_gives_transformers_token_ids() {
    for name in CHECKPOINTS {
        let (bart, reference) = fixture(name);
        let input = tensor(&ids(&reference["encoder_input_ids"]));
        let mask = tensor(&ids(&reference["attention_mask"]));
        let max_length = reference["greedy"]["max_length"].as_u64().unwrap() as usize;
        let forced_bos = reference["generate_extra"]["forced_bos_token_id"]
            .as_u64()
            .map(|t| t as u32);
        let got = greedy(&bart, &input, &mask, max_length, forced_bos);
        assert_eq!(got, ids(&reference["greedy"]["sequences"]), "{name}");
    }
}
