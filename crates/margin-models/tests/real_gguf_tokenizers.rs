//! The tokenizers margin derives from real GGUF files: lossless round trips,
//! and the same ids as Hugging Face transformers' GGUF tokenizers (reference
//! made by tests/fixtures/make_gguf_tokenizer_reference.py).

use std::collections::BTreeMap;

use serde::Deserialize;
use tokenizers::Tokenizer;

#[derive(Deserialize)]
struct Reference {
    texts: Vec<String>,
    ids: BTreeMap<String, Vec<Vec<u32>>>,
}

fn reference() -> Reference {
    let path =
        margin_testkit::workspace_root().join("tests/fixtures/gguf_tokenizer_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn derived_tokenizer(test: &str, model: &str) -> Option<Tokenizer> {
    let dir = margin_testkit::real_model(test, model)?;
    Some(Tokenizer::from_file(dir.join("tokenizer.json")).unwrap())
}

/// Extra strings beyond the reference set, for the round trip.
const MORE: &[&str] = &[
    "",
    " ",
    "a",
    "\u{00a0}non-breaking\u{2009}thin",
    "🧑‍🔬 zero-width\u{200d}joiner",
    "Straße ÆØÅ ﬁ",
];

fn check_round_trip(tokenizer: &Tokenizer, texts: &[String]) {
    for text in texts.iter().map(String::as_str).chain(MORE.iter().copied()) {
        let enc = tokenizer.encode(text, false).unwrap();
        let back = tokenizer.decode(enc.get_ids(), false).unwrap();
        assert_eq!(
            back,
            text,
            "round trip of {text:?} via {:?}",
            enc.get_tokens()
        );
    }
}

/// Counts reference strings tokenized exactly as transformers does. A string
/// also counts when the only differences are ids transformers assigns beyond
/// the GGUF vocabulary (`vocab_size` and up): its GGUF converter adds tokens the
/// model has no embeddings for (Gemma's runs of spaces), where margin uses the
/// model's own tokens, as llama.cpp does.
fn check_reference(
    model: &str,
    tokenizer: &Tokenizer,
    reference: &Reference,
    vocab_size: u32,
) -> usize {
    let mut same = 0;
    for (text, expected) in reference.texts.iter().zip(&reference.ids[model]) {
        let ours = tokenizer
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        let only_out_of_vocab = ours.len() == expected.len()
            && ours
                .iter()
                .zip(expected)
                .all(|(a, b)| a == b || (*b >= vocab_size && *a < vocab_size));
        if only_out_of_vocab {
            same += 1;
        } else {
            eprintln!("{model}: {text:?}\n  ours {ours:?}\n  hf   {expected:?}");
        }
    }
    same
}

#[test]
fn smollm2_tokenizer_round_trips_and_matches_transformers() {
    let Some(tokenizer) = derived_tokenizer("smollm2_tokenizer", "smollm2-135m-instruct") else {
        return;
    };
    let reference = reference();
    check_round_trip(&tokenizer, &reference.texts);
    let same = check_reference("smollm2-135m-instruct", &tokenizer, &reference, 49_152);
    assert_eq!(
        same,
        reference.texts.len(),
        "every reference string tokenizes as transformers does"
    );
    let chat = tokenizer.encode("<|im_start|>user", false).unwrap();
    assert_eq!(
        chat.get_tokens()[0],
        "<|im_start|>",
        "ChatML markers are single tokens"
    );
}

#[test]
fn gemma3_tokenizer_round_trips_and_matches_transformers() {
    let Some(tokenizer) = derived_tokenizer("gemma3_tokenizer", "gemma3-270m") else {
        return;
    };
    let reference = reference();
    check_round_trip(&tokenizer, &reference.texts);
    let same = check_reference("gemma3-270m", &tokenizer, &reference, 262_144);
    assert_eq!(
        same,
        reference.texts.len(),
        "every reference string tokenizes as transformers does"
    );
    let with_bos = tokenizer.encode("hello", true).unwrap();
    assert_eq!(with_bos.get_tokens()[0], "<bos>", "Gemma adds BOS");
}
