//! Loading a BERT tokenizer from a model folder, with margin's own padding.

use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Model, Tokenizer, TruncationParams};

/// Loads `tokenizer.json`, or builds a WordPiece tokenizer from `vocab.txt`
/// (DPR checkpoints ship only that), truncating at `max_length` and never padding.
///
/// sentence-transformers' `tokenizer.json` files often pad every input to a
/// fixed 128 tokens and truncate there; margin pads per batch instead (far less
/// work on short inputs) and truncates at the model's real limit.
pub(crate) fn load_tokenizer(dir: &Path, max_length: usize) -> Result<Tokenizer, String> {
    let json = dir.join("tokenizer.json");
    let mut tokenizer = if json.is_file() {
        Tokenizer::from_file(&json).map_err(|e| format!("{}: {e}", json.display()))?
    } else {
        wordpiece_from_vocab(dir)?
    };
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length,
            ..Default::default()
        }))
        .map_err(|e| format!("cannot truncate at {max_length} tokens: {e}"))?;
    Ok(tokenizer)
}

fn wordpiece_from_vocab(dir: &Path) -> Result<Tokenizer, String> {
    let vocab = dir.join("vocab.txt");
    if !vocab.is_file() {
        return Err(format!(
            "{}: neither tokenizer.json nor vocab.txt is there",
            dir.display()
        ));
    }
    let lowercase = lowercase_from_config(dir);
    let model = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| format!("{}: {e}", vocab.display()))?;
    let id = |token: &str| {
        model
            .token_to_id(token)
            .ok_or_else(|| format!("{}: no {token} token", vocab.display()))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(|e| e.to_string())?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    tokenizer.with_decoder(Some(WordPieceDecoder::default()));
    Ok(tokenizer)
}

/// `do_lower_case` from `tokenizer_config.json`; uncased (true) when absent,
/// as for the DPR and bert-base-uncased checkpoints.
fn lowercase_from_config(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("do_lower_case").and_then(|b| b.as_bool()))
        .unwrap_or(true)
}
