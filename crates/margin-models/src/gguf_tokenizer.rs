//! Builds a Hugging Face `tokenizers` tokenizer from a GGUF file's metadata.
//!
//! GGUF files carry their vocabulary (`tokenizer.ggml.*`) but no
//! `tokenizer.json`. Two vocabulary kinds matter here:
//! - `gpt2`: byte-level BPE with explicit merges (SmolLM2; the GPT-2 split,
//!   with or without SmolLM2's digit isolation; other pre-tokenizers, such as
//!   Llama 3's or Qwen's, are refused rather than approximated);
//! - `llama`: SentencePiece with per-token scores and byte fallback (Gemma,
//!   Llama 2). SentencePiece's BPE merges the adjacent pair whose union has the
//!   highest score, so the merges are derived from the scores.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use margin_core::error::first_line;
use margin_core::{OperationError, OperationResult};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer};

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

/// The tokenizer part of a GGUF file's metadata.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name (e.g. `smollm`).
    pub pre: String,
    /// Token strings, by id.
    pub tokens: Vec<String>,
    /// SentencePiece scores, by id (empty for `gpt2`).
    pub scores: Vec<f32>,
    /// Token types, by id.
    pub token_types: Vec<i32>,
    /// BPE merges as `"left right"` (empty for `llama`).
    pub merges: Vec<String>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// Unknown token id.
    pub unknown_token_id: Option<u32>,
    /// Whether a BOS token starts every encoded sequence.
    pub add_bos_token: bool,
    /// Whether SentencePiece prepends a space to the input.
    pub add_space_prefix: bool,
}

impl GgufVocab {
    /// Reads the vocabulary from the GGUF file at `path` (metadata only).
    pub fn read(path: &Path) -> OperationResult<GgufVocab> {
        let file = File::open(path).map_err(|e| OperationError::io(path, e))?;
        let content = Content::read(&mut BufReader::new(file)).map_err(|e| {
            OperationError::bad_input(
                path.display().to_string(),
                format!("not a readable GGUF file: {}", first_line(&e.to_string())),
            )
        })?;
        Self::from_metadata(&content.metadata)
            .map_err(|message| OperationError::bad_input(path.display().to_string(), message))
    }

    /// Extracts the vocabulary from GGUF metadata.
    pub fn from_metadata(meta: &HashMap<String, Value>) -> Result<GgufVocab, String> {
        let string = |key: &str| -> Option<String> {
            meta.get(key).and_then(|v| v.to_string().ok()).cloned()
        };
        let array = |key: &str| -> Vec<Value> {
            meta.get(key)
                .and_then(|v| v.to_vec().ok())
                .cloned()
                .unwrap_or_default()
        };
        let id = |key: &str| meta.get(key).and_then(|v| v.to_u32().ok());
        let flag = |key: &str, default: bool| {
            meta.get(key)
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(default)
        };

        let model =
            string("tokenizer.ggml.model").ok_or("no tokenizer.ggml.model in the GGUF metadata")?;
        let tokens = array("tokenizer.ggml.tokens")
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if tokens.is_empty() {
            return Err("no tokenizer.ggml.tokens in the GGUF metadata".into());
        }
        let scores = array("tokenizer.ggml.scores")
            .iter()
            .map(|v| v.to_f32().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let token_types = array("tokenizer.ggml.token_type")
            .iter()
            .map(|v| v.to_i32().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let merges = array("tokenizer.ggml.merges")
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GgufVocab {
            pre: string("tokenizer.ggml.pre").unwrap_or_else(|| "default".into()),
            add_bos_token: flag("tokenizer.ggml.add_bos_token", model == "llama"),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", model == "llama"),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            unknown_token_id: id("tokenizer.ggml.unknown_token_id"),
            model,
            tokens,
            scores,
            token_types,
            merges,
        })
    }

    fn token_type(&self, id: usize) -> i32 {
        self.token_types.get(id).copied().unwrap_or(TOKEN_NORMAL)
    }

    fn vocab_map(&self) -> Vocab {
        self.tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), id as u32))
            .collect()
    }

    /// Control and user-defined tokens, which must never be split by the model.
    fn added_tokens(&self) -> Vec<AddedToken> {
        self.tokens
            .iter()
            .enumerate()
            .filter_map(|(id, token)| match self.token_type(id) {
                TOKEN_CONTROL => Some(AddedToken::from(token.clone(), true)),
                TOKEN_USER_DEFINED => Some(AddedToken::from(token.clone(), false)),
                _ => None,
            })
            .collect()
    }

    /// Merges implied by SentencePiece scores: every way of writing a normal
    /// token as two tokens, ranked by the score of the whole (highest first).
    fn merges_from_scores(&self, vocab: &Vocab) -> Vec<(String, String)> {
        let mut ranked: Vec<(f32, u32, String, String)> = Vec::new();
        for (id, token) in self.tokens.iter().enumerate() {
            if self.token_type(id) != TOKEN_NORMAL {
                continue;
            }
            let score = self.scores.get(id).copied().unwrap_or(0.0);
            for (split, _) in token.char_indices().skip(1) {
                let (left, right) = token.split_at(split);
                let known = |piece: &str| {
                    vocab
                        .get(piece)
                        .is_some_and(|&pid| self.token_type(pid as usize) == TOKEN_NORMAL)
                };
                if known(left) && known(right) {
                    ranked.push((score, id as u32, left.to_string(), right.to_string()));
                }
            }
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.into_iter().map(|(_, _, l, r)| (l, r)).collect()
    }
}

/// Builds the tokenizer for the GGUF file at `path`.
pub fn tokenizer_from_gguf(path: &Path) -> OperationResult<Tokenizer> {
    let vocab = GgufVocab::read(path)?;
    build_tokenizer(&vocab)
        .map_err(|message| OperationError::bad_input(path.display().to_string(), message))
}

/// Builds the tokenizer a GGUF vocabulary describes.
pub fn build_tokenizer(vocab: &GgufVocab) -> Result<Tokenizer, String> {
    let mut tokenizer = match vocab.model.as_str() {
        "gpt2" => byte_level_bpe(vocab)?,
        "llama" => sentencepiece_bpe(vocab)?,
        other => {
            return Err(format!(
                "tokenizer.ggml.model `{other}` is not supported (supported: gpt2, llama)"
            ))
        }
    };
    let (special, plain): (Vec<AddedToken>, Vec<AddedToken>) =
        vocab.added_tokens().into_iter().partition(|t| t.special);
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| e.to_string())?;
    tokenizer.add_tokens(plain).map_err(|e| e.to_string())?;
    if vocab.add_bos_token {
        let bos_id = vocab
            .bos_token_id
            .ok_or("add_bos_token is set but there is no bos_token_id")?;
        let bos = vocab
            .tokens
            .get(bos_id as usize)
            .ok_or("bos_token_id is outside the vocabulary")?
            .clone();
        let template = TemplateProcessing::builder()
            .try_single(format!("{bos} $A"))
            .and_then(|b| b.try_pair(format!("{bos} $A $B")))
            .map_err(|e| e.to_string())?
            .special_tokens(vec![(bos, bos_id)])
            .build()
            .map_err(|e| e.to_string())?;
        tokenizer.with_post_processor(Some(template));
    }
    Ok(tokenizer)
}

fn byte_level_bpe(vocab: &GgufVocab) -> Result<Tokenizer, String> {
    let merges = vocab
        .merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(l, r)| (l.to_string(), r.to_string()))
                .ok_or_else(|| format!("merge `{m}` is not two tokens separated by a space"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.vocab_map(), merges)
        .build()
        .map_err(|e| e.to_string())?;
    let mut tokenizer = Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    // llama.cpp's `smollm` pre-tokenizer isolates every digit before the GPT-2 split.
    let pre: PreTokenizerWrapper = match vocab.pre.as_str() {
        "smollm" => PreTokenizerSequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        "gpt2" | "default" => byte_level.into(),
        other => {
            return Err(format!(
                "pre-tokenizer `{other}` is not supported yet (supported: smollm, gpt2, default); a tokenizer.json from the model's authors can be put beside the GGUF file"
            ))
        }
    };
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(ByteLevel::new(false, true, true)));
    Ok(tokenizer)
}

fn sentencepiece_bpe(vocab: &GgufVocab) -> Result<Tokenizer, String> {
    if vocab.scores.len() != vocab.tokens.len() {
        return Err("a `llama` vocabulary needs one score per token".into());
    }
    let map = vocab.vocab_map();
    let merges = vocab.merges_from_scores(&map);
    let mut builder = BPE::builder()
        .vocab_and_merges(map, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = vocab
        .unknown_token_id
        .and_then(|id| vocab.tokens.get(id as usize))
    {
        builder = builder.unk_token(unk.clone());
    }
    let bpe = builder.build().map_err(|e| e.to_string())?;
    let mut tokenizer = Tokenizer::new(bpe);
    let to_visible_space = Replace::new(" ", SPM_SPACE).map_err(|e| e.to_string())?;
    let normalizer: NormalizerWrapper = if vocab.add_space_prefix {
        NormalizerSequence::new(vec![
            Prepend::new(SPM_SPACE.into()).into(),
            to_visible_space.into(),
        ])
        .into()
    } else {
        to_visible_space.into()
    };
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| e.to_string())?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPM_SPACE, " ")
            .map_err(|e| e.to_string())?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if vocab.add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: &[&str] = &[
        "Hello, world!",
        "who got the first nobel prize in physics",
        "Wilhelm Conrad Röntgen, 1901 — 150,782 SEK",
        "日本語のテキストと emoji 🎉🚀",
        "  leading and   repeated spaces\nand a newline\ttab",
        "Ελληνικά, русский, עברית, العربية",
        "<|im_start|>user\nHi<|im_end|>",
    ];

    fn byte_level_vocab() -> GgufVocab {
        // The 256 byte-level symbols plus a few merges: enough to encode any text.
        let mut tokens: Vec<String> = (0u8..=255).map(|b| byte_char(b).to_string()).collect();
        tokens.extend(["He", "ll", "Hell", "<|im_start|>", "<|im_end|>"].map(String::from));
        let mut token_types = vec![TOKEN_NORMAL; tokens.len()];
        let n = token_types.len();
        token_types[n - 2] = TOKEN_CONTROL;
        token_types[n - 1] = TOKEN_CONTROL;
        GgufVocab {
            model: "gpt2".into(),
            pre: "smollm".into(),
            tokens,
            token_types,
            merges: vec!["H e".into(), "l l".into(), "He ll".into()],
            ..Default::default()
        }
    }

    /// GPT-2's printable stand-in for a byte.
    fn byte_char(b: u8) -> char {
        let printable = |b: u8| {
            (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
        };
        if printable(b) {
            return b as char;
        }
        let offset = (0u8..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + offset).unwrap()
    }

    fn sentencepiece_vocab() -> GgufVocab {
        let mut tokens = vec![
            "<pad>".to_string(),
            "<eos>".into(),
            "<bos>".into(),
            "<unk>".into(),
        ];
        let mut types = vec![TOKEN_CONTROL, TOKEN_CONTROL, TOKEN_CONTROL, 2];
        for b in 0u8..=255 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for piece in ["▁", "t", "h", "e", "th", "the", "▁the", "o", "▁o"] {
            tokens.push(piece.into());
            types.push(TOKEN_NORMAL);
        }
        let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
        GgufVocab {
            model: "llama".into(),
            pre: "default".into(),
            tokens,
            scores,
            token_types: types,
            bos_token_id: Some(2),
            unknown_token_id: Some(3),
            add_bos_token: true,
            add_space_prefix: false,
            ..Default::default()
        }
    }

    fn round_trip(tokenizer: &Tokenizer, text: &str) -> String {
        let encoding = tokenizer.encode(text, false).unwrap();
        tokenizer.decode(encoding.get_ids(), false).unwrap()
    }

    #[test]
    fn byte_level_round_trips_and_uses_merges() {
        let tokenizer = build_tokenizer(&byte_level_vocab()).unwrap();
        for text in SAMPLES {
            assert_eq!(&round_trip(&tokenizer, text), text);
        }
        let ids = tokenizer.encode("Hell", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![258], "H+e, l+l, He+ll merge into one token");
        let chat = tokenizer.encode("<|im_start|>", false).unwrap();
        assert_eq!(chat.get_ids(), &[259], "control tokens are never split");
    }

    #[test]
    fn smollm_pre_tokenizer_splits_digits() {
        let tokenizer = build_tokenizer(&byte_level_vocab()).unwrap();
        let tokens = tokenizer
            .encode("1901", false)
            .unwrap()
            .get_tokens()
            .to_vec();
        assert_eq!(tokens, vec!["1", "9", "0", "1"]);
    }

    #[test]
    fn sentencepiece_round_trips_with_byte_fallback() {
        let tokenizer = build_tokenizer(&sentencepiece_vocab()).unwrap();
        for text in SAMPLES {
            assert_eq!(&round_trip(&tokenizer, text), text);
        }
        let encoding = tokenizer.encode("the", true).unwrap();
        assert_eq!(
            encoding.get_tokens(),
            &["<bos>", "the"],
            "bos added, highest-scored merge chain"
        );
        let bytes = tokenizer.encode("é", false).unwrap();
        assert_eq!(bytes.get_tokens(), &["<0xC3>", "<0xA9>"]);
    }

    #[test]
    fn unknown_pre_tokenizer_is_refused() {
        let vocab = GgufVocab {
            pre: "llama-bpe".into(),
            ..byte_level_vocab()
        };
        assert!(build_tokenizer(&vocab).unwrap_err().contains("llama-bpe"));
    }

    #[test]
    fn unsupported_model_is_named() {
        let vocab = GgufVocab {
            model: "rwkv".into(),
            tokens: vec!["a".into()],
            ..Default::default()
        };
        assert!(build_tokenizer(&vocab).unwrap_err().contains("rwkv"));
    }
}
