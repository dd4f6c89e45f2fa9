//! RAG-Token and RAG-Sequence against transformers' RagTokenForGeneration and
//! RagSequenceForGeneration on the tiny random BART of the generator parity
//! tests, given the same contextualised inputs and document scores:
//! identical token ids, and get_nll within 1e-4.
//! Fixture: tests/fixtures/rag_reference.json (make_rag_reference.py).

use candle_core::{DType, Device};
use margin_generator::bart::Bart;
use margin_rag::nll::{sequence_nll, token_nll, NllOptions};
use margin_rag::sequence::{self, SequenceDecoding};
use margin_rag::{document_log_prior, token, DecodeSettings, Question, Timings};
use serde_json::Value;

fn setup() -> (Bart, Value, Vec<Question>) {
    let root = margin_testkit::workspace_root();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/rag_reference.json")).unwrap(),
    )
    .unwrap();
    let bart = Bart::load(
        &root.join("tests/fixtures/bart/tiny-gelu"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let ids: Vec<Vec<u32>> =
        serde_json::from_value(reference["context_input_ids"].clone()).unwrap();
    let mask: Vec<Vec<u32>> =
        serde_json::from_value(reference["context_attention_mask"].clone()).unwrap();
    let contexts = margin_testkit::unpadded(ids, mask);
    let scores: Vec<Vec<f32>> = serde_json::from_value(reference["doc_scores"].clone()).unwrap();
    let n = reference["n_docs"].as_u64().unwrap() as usize;
    let questions = scores
        .iter()
        .enumerate()
        .map(|(q, s)| Question {
            contexts: contexts[q * n..(q + 1) * n].to_vec(),
            doc_log_prior: document_log_prior(s, 1.0).unwrap(),
        })
        .collect();
    (bart, reference, questions)
}

fn settings(reference: &Value, run: &Value) -> DecodeSettings {
    DecodeSettings {
        num_beams: run["num_beams"].as_u64().unwrap_or(1) as usize,
        max_length: reference["max_length"].as_u64().unwrap() as usize,
        min_length: 0,
        no_repeat_ngram_size: run["no_repeat_ngram_size"].as_u64().unwrap_or(0) as usize,
        length_penalty: 1.0,
        early_stopping: false,
        forced_bos_token_id: None,
        // The tiny BART's generation config forces EOS at max_length.
        forced_eos_token_id: Some(2),
    }
}

fn expected(run: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(run["sequences"].clone()).unwrap()
}

#[test]
fn rag_token_greedy_and_beam_give_transformers_ids() {
    let (bart, reference, questions) = setup();
    for run in ["token_greedy", "token_greedy_no_repeat", "token_beam"] {
        let run_ref = &reference[run];
        let mut previews = vec![Vec::new(); questions.len()];
        let got = token::generate(
            &bart,
            &questions,
            &settings(&reference, run_ref),
            &mut Timings::default(),
            &mut |q, tokens| previews[q] = tokens.to_vec(),
        )
        .unwrap();
        let got: Vec<Vec<u32>> = got.into_iter().map(|a| a.tokens).collect();
        assert_eq!(got, expected(run_ref), "{run}");
        if run != "token_beam" {
            // Greedy previews are the answer as it grows.
            for (answer, preview) in got.iter().zip(&previews) {
                assert!(
                    !preview.is_empty() && answer.starts_with(preview),
                    "{run}: {preview:?} / {answer:?}"
                );
            }
        }
    }
}

#[test]
fn rag_sequence_thorough_gives_transformers_ids() {
    let (bart, reference, mut questions) = setup();
    let run = &reference["sequence_thorough"];
    // transformers runs these beams without masking padding: equal-length contexts.
    let contexts: Vec<Vec<u32>> = serde_json::from_value(run["context_input_ids"].clone()).unwrap();
    for (q, question) in questions.iter_mut().enumerate() {
        question.contexts = contexts[q * 3..(q + 1) * 3].to_vec();
    }
    let answers = sequence::generate(
        &bart,
        &questions,
        &settings(&reference, run),
        SequenceDecoding::Thorough,
        1,
        &mut Timings::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let want = expected(run);
    let width = want[0].len();
    let got: Vec<Vec<u32>> = answers
        .iter()
        .map(|a| {
            let mut t = a[0].tokens.clone();
            t.resize(width, 1);
            t
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn nll_matches_get_nll_within_1e_4() {
    let (bart, reference, questions) = setup();
    let labels: Vec<Vec<u32>> = serde_json::from_value(reference["labels"].clone()).unwrap();
    // The generator's start token is the labels' first; the rest are targets.
    let targets: Vec<Vec<u32>> = labels.iter().map(|l| l[1..].to_vec()).collect();
    for case in reference["nll"].as_array().unwrap() {
        let options = NllOptions {
            epsilon: case["epsilon"].as_f64().unwrap() as f32,
            exclude_bos_score: case["exclude_bos_score"].as_bool().unwrap(),
            mask_token: Some(1),
        };
        let got = match case["model"].as_str().unwrap() {
            "token" => token_nll(&bart, &questions, &targets, options).unwrap(),
            _ => sequence_nll(&bart, &questions, &targets, options).unwrap(),
        };
        let want: Vec<f32> = serde_json::from_value(case["loss"].clone()).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{case}: {g} vs {w}");
        }
    }
}
