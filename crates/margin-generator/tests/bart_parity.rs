//! BART on candle against Hugging Face transformers, on the tiny random
//! checkpoints of tests/fixtures/bart (made by make_bart_reference.py):
//! logits of teacher-forced decoding, greedy search (plain, and with
//! no-repeat n-grams and a minimum length) and beam search, each both
//! recomputing the decoder over the whole prefix and incrementally with the
//! cached, reordered decoder state of a [`Generator`] session.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use margin_generator::bart::Bart;
use margin_generator::decoding::{beam_search, greedy_search, BeamSettings, StepRules};
use margin_generator::{Generator, Stepper};
use serde_json::Value;

const CHECKPOINTS: [&str; 2] = ["tiny-gelu", "tiny-relu-scaled"];

fn fixture(name: &str) -> (Bart, Value) {
    let dir: PathBuf = margin_testkit::workspace_root()
        .join("tests/fixtures/bart")
        .join(name);
    let bart = Bart::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    (bart, reference)
}

fn ids(value: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(value.clone()).unwrap()
}

/// The encoder inputs without their padding, as a generator takes them.
fn contexts(reference: &Value) -> Vec<Vec<u32>> {
    margin_testkit::unpadded(
        ids(&reference["encoder_input_ids"]),
        ids(&reference["attention_mask"]),
    )
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

#[test]
fn half_precision_stays_close_to_f32() {
    let (_, reference) = fixture("tiny-gelu");
    let dir = margin_testkit::workspace_root().join("tests/fixtures/bart/tiny-gelu");
    let contexts = contexts(&reference);
    let f32_log_probs = Bart::load(&dir, &Device::Cpu, DType::F32)
        .unwrap()
        .prepare(&contexts)
        .unwrap()
        .log_probs()
        .unwrap();
    // bf16 keeps 8 bits of mantissa, f16 11: log-probs within a few hundredths.
    for (dtype, tolerance) in [(DType::F16, 0.02), (DType::BF16, 0.1)] {
        let half = Bart::load(&dir, &Device::Cpu, dtype).unwrap();
        let got = half.prepare(&contexts).unwrap().log_probs().unwrap();
        let worst = got
            .iter()
            .flatten()
            .zip(f32_log_probs.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{dtype:?}: max |log p difference| = {worst}");
        assert!(worst < tolerance, "{dtype:?}: {worst}");
    }
}

#[test]
fn a_pytorch_pickle_checkpoint_loads_the_same_weights() {
    let (safetensors, reference) = fixture("tiny-gelu");
    let dir = margin_testkit::workspace_root().join("tests/fixtures/bart/tiny-gelu-bin");
    let pickle = Bart::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let input = tensor(&ids(&reference["encoder_input_ids"]));
    let mask = tensor(&ids(&reference["attention_mask"]));
    let decoder = tensor(&ids(&reference["decoder_input_ids"]));
    let logits = |bart: &Bart| -> Vec<f32> {
        let encoded = bart.encode(&input, &mask).unwrap();
        bart.decode(&decoder, &encoded, &mask)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(logits(&pickle), logits(&safetensors));
    let missing = Bart::load(&dir.join("nowhere"), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("config.json"), "{missing}");
}

/// Next-token log-probabilities of `rows`, row `r` conditioned on input
/// `r / rows_per_input`, recomputing the decoder over the whole prefix.
fn scorer<'a>(
    bart: &'a Bart,
    input: &'a Tensor,
    mask: &'a Tensor,
    rows_per_input: usize,
) -> impl FnMut(&[Vec<u32>]) -> margin_core::OperationResult<Vec<Vec<f32>>> + 'a {
    let encoded = bart.encode(input, mask).unwrap();
    move |rows| {
        let of_input: Vec<u32> = (0..rows.len())
            .map(|r| (r / rows_per_input) as u32)
            .collect();
        let of_input = Tensor::new(of_input, &Device::Cpu).unwrap();
        let encoded = encoded.index_select(&of_input, 0).unwrap();
        let mask = mask.index_select(&of_input, 0).unwrap();
        let step = rows[0].len() - 1;
        let log_probs = bart.next_token_log_probs(&tensor(rows), &encoded, &mask)?;
        Ok(log_probs
            .narrow(1, step, 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .to_vec2()
            .unwrap())
    }
}

fn rules(bart: &Bart, reference: &Value, run: &Value) -> StepRules {
    let c = bart.config();
    let number = |v: &Value| v.as_u64().map(|n| n as usize);
    StepRules {
        eos_token_id: c.eos_token_id,
        max_length: number(&run["max_length"]).unwrap(),
        min_length: number(&run["min_length"]).unwrap_or(0),
        no_repeat_ngram_size: number(&run["no_repeat_ngram_size"]).unwrap_or(0),
        forced_bos_token_id: reference["generate_extra"]["forced_bos_token_id"]
            .as_u64()
            .map(|t| t as u32),
        forced_eos_token_id: c.forced_eos_token_id,
    }
}

#[test]
fn greedy_generation_gives_transformers_token_ids() {
    for name in CHECKPOINTS {
        let (bart, reference) = fixture(name);
        let input = tensor(&ids(&reference["encoder_input_ids"]));
        let mask = tensor(&ids(&reference["attention_mask"]));
        for run in ["greedy", "greedy_no_repeat"] {
            let starts = vec![vec![bart.config().decoder_start_token_id]; input.dim(0).unwrap()];
            let rules = rules(&bart, &reference, &reference[run]);
            let expected = ids(&reference[run]["sequences"]);
            let pad = bart.config().pad_token_id;
            let full = scorer(&bart, &input, &mask, 1);
            let got = greedy_search(starts.clone(), &rules, pad, full).unwrap();
            assert_eq!(got, expected, "{name} {run}");
            let mut cached = Stepper::new(bart.prepare(&contexts(&reference)).unwrap(), 1);
            let got =
                greedy_search(starts, &rules, pad, |rows| cached.next_log_probs(rows)).unwrap();
            assert_eq!(got, expected, "{name} {run}, incremental");
        }
    }
}

#[test]
fn beam_search_gives_transformers_token_ids_and_scores() {
    for name in CHECKPOINTS {
        let (bart, reference) = fixture(name);
        let run = &reference["beam"];
        let input = tensor(&ids(&reference["encoder_input_ids"]));
        let mask = tensor(&ids(&reference["attention_mask"]));
        let settings = BeamSettings {
            num_beams: run["num_beams"].as_u64().unwrap() as usize,
            length_penalty: run["length_penalty"].as_f64().unwrap() as f32,
            early_stopping: run["early_stopping"].as_bool().unwrap(),
            num_return_sequences: run["num_return_sequences"].as_u64().unwrap() as usize,
            pad_token_id: bart.config().pad_token_id,
        };
        let starts = vec![vec![bart.config().decoder_start_token_id]; input.dim(0).unwrap()];
        let rules = rules(&bart, &reference, run);
        let expected: Vec<f32> = serde_json::from_value(run["sequences_scores"].clone()).unwrap();
        let full = scorer(&bart, &input, &mask, settings.num_beams);
        let full = beam_search(starts.clone(), &rules, &settings, full).unwrap();
        let session = bart.prepare(&contexts(&reference)).unwrap();
        let mut cached = Stepper::new(session, settings.num_beams);
        let incremental = beam_search(starts, &rules, &settings, |rows| {
            cached.next_log_probs(rows)
        })
        .unwrap();
        for (how, got) in [("full recompute", full), ("incremental", incremental)] {
            let tokens: Vec<Vec<u32>> = got.iter().flatten().map(|h| h.tokens.clone()).collect();
            assert_eq!(tokens, ids(&run["sequences"]), "{name}, {how}");
            for (h, e) in got.iter().flatten().zip(&expected) {
                assert!(
                    (h.score - e).abs() < 1e-4,
                    "{name}, {how}: score {} vs {e}",
                    h.score
                );
            }
        }
    }
}
