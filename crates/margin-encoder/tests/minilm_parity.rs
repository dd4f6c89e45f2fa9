//! Real-model parity: margin's MiniLM embeddings against sentence-transformers'
//! (reference made by tests/fixtures/make_minilm_reference.py).

use margin_encoder::{BertEncoder, BertEncoderOptions, Encoder};
use margin_testkit::check_against_minilm_reference;

#[test]
fn minilm_matches_sentence_transformers() {
    let Some(dir) =
        margin_testkit::real_model("minilm_matches_sentence_transformers", "all-minilm-l6-v2")
    else {
        return;
    };
    let encoder =
        BertEncoder::load("all-minilm-l6-v2", &dir, &BertEncoderOptions::default()).unwrap();
    assert_eq!(encoder.dim(), 384);
    let (worst, max_seq_length) =
        check_against_minilm_reference(|s| encoder.encode_questions(s).unwrap(), 0.9999);
    assert_eq!(encoder.max_length(), max_seq_length);
    eprintln!("minilm parity: lowest cosine {worst:.7}");
}
