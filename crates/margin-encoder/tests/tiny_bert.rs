//! Plumbing of the BERT encoder on tiny random checkpoints: batching, padding,
//! truncation, pooling and the DPR layout.

use margin_encoder::{BertEncoder, BertEncoderOptions, Encoder, PassageText};
use margin_testkit::{write_tiny_bert, TinyBertStyle};

fn options(batch_size: usize, max_length: usize) -> BertEncoderOptions {
    BertEncoderOptions {
        batch_size,
        max_length,
        ..Default::default()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const TEXTS: &[&str] = &[
    "the moon",
    "who was the first nobel prize in physics ?",
    "a",
    "the tide of the sea and the moon , the light house and the ship .",
    "honey bee",
];

#[test]
fn batching_and_padding_do_not_change_vectors() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), TinyBertStyle::SentenceTransformers, 64);
    let batched = BertEncoder::load("tiny", dir.path(), &options(2, 0)).unwrap();
    let together = batched.encode_questions(TEXTS).unwrap();
    assert_eq!(together.len(), TEXTS.len());
    for (text, vector) in TEXTS.iter().zip(&together) {
        let alone = batched.encode_questions(&[text]).unwrap();
        assert_eq!(vector.len(), 32);
        assert!(
            max_abs_diff(vector, &alone[0]) < 1e-5,
            "`{text}` differs when padded in a batch: attention mask or order is wrong"
        );
    }
    // Distinct inputs give distinct vectors: the order really is kept.
    assert!(max_abs_diff(&together[0], &together[1]) > 1e-4);
}

#[test]
fn sentence_transformers_style_is_normalized_mean_pooling() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), TinyBertStyle::SentenceTransformers, 64);
    let encoder = BertEncoder::load("tiny", dir.path(), &options(8, 0)).unwrap();
    assert!(encoder.normalized());
    assert_eq!(encoder.dim(), 32);
    for v in encoder.encode_questions(TEXTS).unwrap() {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    // Passages are "title: text" as one sequence for a shared model.
    let passage = encoder
        .encode_passages(&[PassageText {
            title: "moon",
            text: "the tide",
        }])
        .unwrap();
    let joined = encoder.encode_questions(&["moon: the tide"]).unwrap();
    assert!(max_abs_diff(&passage[0], &joined[0]) < 1e-6);
}

#[test]
fn inputs_are_truncated_at_max_length() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), TinyBertStyle::SentenceTransformers, 64);
    let encoder = BertEncoder::load("tiny", dir.path(), &options(4, 8)).unwrap();
    assert_eq!(encoder.max_length(), 8);
    // 8 tokens = [CLS] + 6 words + [SEP]; the rest must be cut.
    let long = "the moon the sea the bee the light the ship";
    let head = "the moon the sea the bee";
    let a = encoder.encode_questions(&[long]).unwrap();
    let b = encoder.encode_questions(&[head]).unwrap();
    assert!(max_abs_diff(&a[0], &b[0]) < 1e-6);
    // Longer than the position table also works (capped by the model's maximum).
    let capped = BertEncoder::load("tiny", dir.path(), &options(4, 0)).unwrap();
    assert_eq!(capped.max_length(), 64);
    let very_long = ["the moon"; 100].join(" ");
    assert_eq!(capped.encode_questions(&[&very_long]).unwrap()[0].len(), 32);
}

#[test]
fn dpr_layout_uses_two_models_cls_pooling_and_title_text_pairs() {
    let q_dir = tempfile::tempdir().unwrap();
    let c_dir = tempfile::tempdir().unwrap();
    write_tiny_bert(q_dir.path(), TinyBertStyle::DprQuestion, 64);
    write_tiny_bert(c_dir.path(), TinyBertStyle::DprContext, 64);
    let encoder =
        BertEncoder::load_dual("tiny-dpr", q_dir.path(), c_dir.path(), &options(4, 0)).unwrap();
    assert!(!encoder.normalized(), "DPR vectors are not normalised");
    let q = encoder.encode_questions(&["the moon"]).unwrap();
    let p = encoder
        .encode_passages(&[PassageText {
            title: "",
            text: "the moon",
        }])
        .unwrap();
    assert!(
        max_abs_diff(&q[0], &p[0]) > 1e-4,
        "questions and passages go through different models"
    );
    let with_title = encoder
        .encode_passages(&[PassageText {
            title: "sea",
            text: "the moon",
        }])
        .unwrap();
    assert!(
        max_abs_diff(&p[0], &with_title[0]) > 1e-4,
        "the title is part of the input"
    );
    let joined = encoder
        .encode_passages(&[PassageText {
            title: "",
            text: "sea: the moon",
        }])
        .unwrap();
    assert!(
        max_abs_diff(&with_title[0], &joined[0]) > 1e-4,
        "DPR passages are the pair (title, text), not one joined string"
    );
    let norm: f32 = q[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 1e-3,
        "no normalisation for CLS pooling"
    );
}

#[test]
fn empty_input_gives_empty_output() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), TinyBertStyle::SentenceTransformers, 64);
    let encoder = BertEncoder::load("tiny", dir.path(), &options(4, 0)).unwrap();
    assert!(encoder.encode_questions(&[]).unwrap().is_empty());
    assert_eq!(encoder.encode_questions(&[""]).unwrap()[0].len(), 32);
}

#[test]
fn missing_or_broken_model_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = BertEncoder::load("tiny", dir.path(), &options(4, 0))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");

    write_tiny_bert(dir.path(), TinyBertStyle::SentenceTransformers, 64);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = BertEncoder::load("tiny", dir.path(), &options(4, 0))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("tiny"),
        "{err}"
    );
}
