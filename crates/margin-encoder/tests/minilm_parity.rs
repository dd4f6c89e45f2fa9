//! Real-model parity: margin's MiniLM embeddings against sentence-transformers'
//! (reference made by tests/fixtures/make_minilm_reference.py).

use margin_encoder::{BertEncoder, BertEncoderOptions, Encoder};
use margin_testkit::cosine;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

#[test]
fn minilm_matches_sentence_transformers() {
    let Some(dir) =
        margin_testkit::real_model("minilm_matches_sentence_transformers", "all-minilm-l6-v2")
    else {
        return;
    };
    let path = margin_testkit::workspace_root().join("tests/fixtures/minilm_reference.json");
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(reference.sentences.len() >= 10);

    let encoder =
        BertEncoder::load("all-minilm-l6-v2", &dir, &BertEncoderOptions::default()).unwrap();
    assert_eq!(encoder.dim(), 384);
    assert_eq!(encoder.max_length(), reference.max_seq_length);
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let ours = encoder.encode_questions(&sentences).unwrap();
    let mut worst = f32::INFINITY;
    for ((sentence, mine), theirs) in sentences.iter().zip(&ours).zip(&reference.embeddings) {
        let c = cosine(mine, theirs);
        assert!(c >= 0.9999, "cosine {c} < 0.9999 for {sentence:?}");
        worst = worst.min(c);
    }
    eprintln!(
        "minilm parity: lowest cosine {worst:.7} over {} sentences",
        sentences.len()
    );
}
