//! The ONNX backend against sentence-transformers' fp32 reference and against
//! the candle backend, on the real int8 MiniLM export. Tests that need ONNX
//! Runtime or a model say SKIPPED without them (and fail under
//! `MARGIN_REQUIRE_MODELS=1`, as `.ci/run` sets).

use std::path::PathBuf;

use margin_encoder::{BertEncoder, BertEncoderOptions, Encoder, PassageText};
use margin_encoder_onnx::{OnnxEncoder, OnnxEncoderOptions, Runtime};
use margin_testkit::{
    check_against_minilm_reference, cosine, minilm_reference, onnx_runtime, real_model,
};

/// Agreement floor per input: the export's weights are int8, so vectors differ
/// from fp32 ones by up to about 0.4% (worst seen: the empty string).
const MIN_COSINE: f32 = 0.99;

/// The int8 model on ONNX Runtime, or `None` (skipped) without either.
fn onnx(test: &str, options: &OnnxEncoderOptions) -> Option<OnnxEncoder> {
    let runtime = onnx_runtime(test)?;
    let dir = real_model(test, "all-minilm-l6-v2-int8")?;
    let runtime = Runtime::load(&runtime).unwrap();
    Some(OnnxEncoder::load("all-minilm-l6-v2-int8", &dir, &runtime, options).unwrap())
}

#[test]
fn onnx_matches_sentence_transformers() {
    const TEST: &str = "onnx_matches_sentence_transformers";
    let Some(encoder) = onnx(TEST, &OnnxEncoderOptions::default()) else {
        return;
    };
    assert_eq!(encoder.dim(), 384);
    assert!(encoder.normalized());
    let (worst, max_seq_length) = check_against_minilm_reference(
        |sentences| {
            let vectors = encoder.encode_questions(sentences).unwrap();
            for v in &vectors {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
            }
            vectors
        },
        MIN_COSINE,
    );
    assert_eq!(encoder.max_length(), max_seq_length);
    eprintln!("onnx vs sentence-transformers: lowest cosine {worst:.5}");
}

#[test]
fn onnx_agrees_with_candle_on_questions_and_passages() {
    const TEST: &str = "onnx_agrees_with_candle_on_questions_and_passages";
    let Some(candle_dir) = real_model(TEST, "all-minilm-l6-v2") else {
        return;
    };
    let Some(onnx) = onnx(TEST, &OnnxEncoderOptions::default()) else {
        return;
    };
    let candle = BertEncoder::load(
        "all-minilm-l6-v2",
        &candle_dir,
        &BertEncoderOptions::default(),
    )
    .unwrap();
    assert_eq!(onnx.dim(), candle.dim());
    assert_eq!(onnx.max_length(), candle.max_length());

    let sentences: Vec<String> =
        serde_json::from_value(minilm_reference()["sentences"].clone()).unwrap();
    let questions: Vec<&str> = sentences.iter().map(String::as_str).collect();
    // Both must cut at 256 tokens: the text changes subject after about 300,
    // so an encoder that read on would give a different vector.
    let long = "the tide rises and falls twice a day as the moon pulls the sea ".repeat(22)
        + &"honeybees dance to show their hive mates where the flowers are ".repeat(30);
    let passages = [
        PassageText {
            title: "Tide",
            text: "Tides are the rise and fall of sea levels.",
        },
        PassageText {
            title: "",
            text: "A passage without a title.",
        },
        PassageText {
            title: "Long",
            text: &long,
        },
        PassageText {
            title: "Röntgen",
            text: "He received the first Nobel Prize in Physics in 1901.",
        },
    ];
    let pairs = [
        (
            onnx.encode_questions(&questions).unwrap(),
            candle.encode_questions(&questions).unwrap(),
        ),
        (
            onnx.encode_passages(&passages).unwrap(),
            candle.encode_passages(&passages).unwrap(),
        ),
    ];
    let mut worst = f32::INFINITY;
    for (ours, theirs) in &pairs {
        assert_eq!(ours.len(), theirs.len());
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            let c = cosine(a, b);
            assert!(c >= MIN_COSINE, "input {i}: cosine {c} < {MIN_COSINE}");
            worst = worst.min(c);
        }
    }
    eprintln!(
        "onnx vs candle: lowest cosine {worst:.5} over {} inputs",
        questions.len() + passages.len()
    );
}

#[test]
fn batches_of_mixed_lengths_give_each_input_its_own_vector() {
    const TEST: &str = "batches_of_mixed_lengths_give_each_input_its_own_vector";
    let options = OnnxEncoderOptions {
        batch_size: 3,
        threads: 1,
        ..Default::default()
    };
    let Some(encoder) = onnx(TEST, &options) else {
        return;
    };
    let texts: Vec<String> = (0..10)
        .map(|i| {
            format!(
                "sentence {i}: {}",
                "the moon pulls the sea ".repeat(i * 3 % 7)
            )
        })
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let together = encoder.encode_questions(&texts).unwrap();
    assert_eq!(together.len(), texts.len());
    for (text, vector) in texts.iter().zip(&together) {
        let alone = &encoder.encode_questions(&[text]).unwrap()[0];
        let diff = alone
            .iter()
            .zip(vector)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "{text:?}: batched and alone differ by {diff}");
    }
    assert!(encoder.encode_questions(&[]).unwrap().is_empty());
}

#[test]
fn a_model_folder_without_an_onnx_file_is_refused_by_name() {
    const TEST: &str = "a_model_folder_without_an_onnx_file_is_refused_by_name";
    let (Some(runtime), Some(candle_dir)) =
        (onnx_runtime(TEST), real_model(TEST, "all-minilm-l6-v2"))
    else {
        return;
    };
    let runtime = Runtime::load(&runtime).unwrap();
    let err = OnnxEncoder::load(
        "mini",
        &candle_dir,
        &runtime,
        &OnnxEncoderOptions::default(),
    )
    .err()
    .expect("no model.onnx")
    .to_string();
    assert!(
        err.contains("no model.onnx") && err.contains("mini"),
        "{err}"
    );
}

#[test]
fn a_missing_or_broken_runtime_library_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let not_a_library = tmp.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, b"not a shared library").unwrap();
    for path in [PathBuf::from("/no/such/libonnxruntime.so"), not_a_library] {
        let err = Runtime::load(&path)
            .err()
            .expect("must not load")
            .to_string();
        for needle in [
            path.to_str().unwrap(),
            "margin models pull onnxruntime",
            "ORT_DYLIB_PATH",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from: {err}");
        }
    }
}
