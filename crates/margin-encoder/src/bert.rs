//! BERT bi-encoders on candle.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config as BertConfig;

use crate::bert_model::BertModel;
use margin_core::{OperationError, OperationResult};
use tokenizers::{EncodeInput, Encoding, Tokenizer};

use crate::pooling::{l2_normalize, pool, PoolingSpec};
use crate::{Encoder, PassageText};

/// How a [`BertEncoder`] runs.
#[derive(Debug, Clone)]
pub struct BertEncoderOptions {
    /// Device the model runs on.
    pub device: Device,
    /// Inputs per forward pass.
    pub batch_size: usize,
    /// Input length cap in tokens; 0 for the model's own maximum.
    pub max_length: usize,
}

impl Default for BertEncoderOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            batch_size: 32,
            max_length: 0,
        }
    }
}

/// How a passage's title and text become one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassageInput {
    /// `[CLS] title [SEP] text [SEP]`, as DPR was trained.
    Pair,
    /// `title: text` as one sequence, for models trained on single texts.
    Joined,
}

/// A BERT-family bi-encoder: one shared model (sentence-transformers) or a
/// question model and a passage model (DPR).
pub struct BertEncoder {
    name: String,
    question_model: BertModel,
    passage_model: Option<BertModel>,
    tokenizer: Tokenizer,
    spec: PoolingSpec,
    passage_input: PassageInput,
    dim: usize,
    max_length: usize,
    pad_id: u32,
    batch_size: usize,
    device: Device,
}

impl BertEncoder {
    /// Loads one model used for both questions and passages.
    pub fn load(
        name: &str,
        dir: &Path,
        options: &BertEncoderOptions,
    ) -> OperationResult<BertEncoder> {
        let loaded = LoadedBert::load(name, dir, options)?;
        Ok(loaded.into_encoder(name, None, options))
    }

    /// Loads DPR's pair: a question encoder and a passage (context) encoder.
    /// Both must share the vocabulary and the hidden size.
    pub fn load_dual(
        name: &str,
        question_dir: &Path,
        passage_dir: &Path,
        options: &BertEncoderOptions,
    ) -> OperationResult<BertEncoder> {
        let question = LoadedBert::load(name, question_dir, options)?;
        let passage = LoadedBert::load(name, passage_dir, options)?;
        if passage.config.hidden_size != question.config.hidden_size {
            return Err(OperationError::model(
                name,
                format!(
                    "question encoder ({}) and passage encoder ({}) have different hidden sizes",
                    question.config.hidden_size, passage.config.hidden_size
                ),
            ));
        }
        Ok(question.into_encoder(name, Some(passage.model), options))
    }

    fn err(&self, e: impl ToString) -> OperationError {
        OperationError::model(&self.name, e)
    }

    /// Encodes tokenized inputs with `model`, in batches of similar length,
    /// returning vectors in input order.
    fn embed(&self, model: &BertModel, encodings: Vec<Encoding>) -> OperationResult<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        // Sorting by length keeps padding, and so wasted work, to a minimum.
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].get_ids().len()));
        let mut out = vec![Vec::new(); encodings.len()];
        for batch in order.chunks(self.batch_size) {
            let width = batch
                .iter()
                .map(|&i| encodings[i].get_ids().len())
                .max()
                .unwrap_or(0)
                .max(1);
            let mut ids = Vec::with_capacity(batch.len() * width);
            let mut types = Vec::with_capacity(batch.len() * width);
            let mut mask = Vec::with_capacity(batch.len() * width);
            for &i in batch {
                let enc = &encodings[i];
                let pad = width - enc.get_ids().len();
                ids.extend_from_slice(enc.get_ids());
                ids.extend(std::iter::repeat_n(self.pad_id, pad));
                types.extend_from_slice(enc.get_type_ids());
                types.extend(std::iter::repeat_n(0, pad));
                mask.extend(std::iter::repeat_n(1u32, enc.get_ids().len()));
                mask.extend(std::iter::repeat_n(0u32, pad));
            }
            let shape = (batch.len(), width);
            let ids = Tensor::from_vec(ids, shape, &self.device).map_err(|e| self.err(e))?;
            let types = Tensor::from_vec(types, shape, &self.device).map_err(|e| self.err(e))?;
            let mask = Tensor::from_vec(mask, shape, &self.device).map_err(|e| self.err(e))?;
            let vectors = model
                .forward(&ids, &types, &mask)
                .and_then(|hidden| pool(&hidden, &mask, self.spec.pooling))
                .and_then(|pooled| {
                    if self.spec.normalize {
                        l2_normalize(&pooled)
                    } else {
                        Ok(pooled)
                    }
                })
                .and_then(|v| v.to_dtype(DType::F32)?.to_vec2::<f32>())
                .map_err(|e| self.err(e))?;
            for (&i, vector) in batch.iter().zip(vectors) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    fn tokenize<'s>(&self, inputs: Vec<EncodeInput<'s>>) -> OperationResult<Vec<Encoding>> {
        self.tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| self.err(format!("tokenizer: {e}")))
    }
}

impl Encoder for BertEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend(&self) -> &'static str {
        "candle"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn max_length(&self) -> usize {
        self.max_length
    }

    fn normalized(&self) -> bool {
        self.spec.normalize
    }

    fn encode_questions(&self, questions: &[&str]) -> OperationResult<Vec<Vec<f32>>> {
        let encodings = self.tokenize(questions.iter().map(|q| EncodeInput::from(*q)).collect())?;
        self.embed(&self.question_model, encodings)
    }

    fn encode_passages(&self, passages: &[PassageText<'_>]) -> OperationResult<Vec<Vec<f32>>> {
        let inputs: Vec<EncodeInput> = passages
            .iter()
            .map(|p| match (self.passage_input, p.title.is_empty()) {
                (_, true) => EncodeInput::from(p.text),
                (PassageInput::Pair, false) => EncodeInput::from((p.title, p.text)),
                (PassageInput::Joined, false) => EncodeInput::from(p.joined().into_owned()),
            })
            .collect();
        let encodings = self.tokenize(inputs)?;
        let model = self.passage_model.as_ref().unwrap_or(&self.question_model);
        self.embed(model, encodings)
    }
}

/// One BERT checkpoint read from a folder.
struct LoadedBert {
    model: BertModel,
    config: BertConfig,
    tokenizer: Tokenizer,
    spec: PoolingSpec,
    max_length: usize,
}

impl LoadedBert {
    fn load(name: &str, dir: &Path, options: &BertEncoderOptions) -> OperationResult<LoadedBert> {
        let fail =
            |message: String| OperationError::model(name, format!("{}: {message}", dir.display()));
        let config_path = dir.join("config.json");
        let config_text = std::fs::read_to_string(&config_path)
            .map_err(|e| OperationError::io(&config_path, e))?;
        let config: BertConfig = serde_json::from_str(&config_text)
            .map_err(|e| fail(format!("config.json is not a BERT configuration: {e}")))?;
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(fail(format!(
                "config.json: hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        let projection = serde_json::from_str::<serde_json::Value>(&config_text)
            .ok()
            .and_then(|v| v.get("projection_dim").and_then(|p| p.as_u64()))
            .unwrap_or(0);
        if projection > 0 {
            return Err(fail(format!(
                "config.json: DPR projection_dim {projection} is not supported"
            )));
        }

        let vb = weights(dir, &options.device).map_err(fail)?;
        // DPR checkpoints nest BERT under `question_encoder.bert_model` or `ctx_encoder.bert_model`.
        let vb = ["question_encoder.bert_model", "ctx_encoder.bert_model"]
            .into_iter()
            .find(|prefix| {
                vb.contains_tensor(&format!("{prefix}.embeddings.word_embeddings.weight"))
            })
            .map(|prefix| vb.pp(prefix))
            .unwrap_or(vb);
        let model = BertModel::load(vb, &config)
            .map_err(|e| fail(format!("weights do not fit the configuration: {e}")))?;

        let max_length = input_limit(dir, config.max_position_embeddings, options.max_length);
        let tokenizer = crate::tokenize::load_tokenizer(dir, max_length).map_err(fail)?;
        let spec = PoolingSpec::from_dir(dir).map_err(fail)?;
        Ok(LoadedBert {
            model,
            config,
            tokenizer,
            spec,
            max_length,
        })
    }

    fn into_encoder(
        self,
        name: &str,
        passage_model: Option<BertModel>,
        options: &BertEncoderOptions,
    ) -> BertEncoder {
        let passage_input = if passage_model.is_some() {
            PassageInput::Pair
        } else {
            PassageInput::Joined
        };
        BertEncoder {
            name: name.to_string(),
            question_model: self.model,
            passage_model,
            tokenizer: self.tokenizer,
            spec: self.spec,
            passage_input,
            dim: self.config.hidden_size,
            max_length: self.max_length,
            pad_id: self.config.pad_token_id as u32,
            batch_size: options.batch_size.max(1),
            device: options.device.clone(),
        }
    }
}

/// Memory-maps `model.safetensors`, or reads `pytorch_model.bin`.
fn weights(dir: &Path, device: &Device) -> Result<VarBuilder<'static>, String> {
    let safetensors = dir.join("model.safetensors");
    if safetensors.is_file() {
        // SAFETY: the cache never rewrites a published file in place (pulls
        // publish a new folder), so the mapping stays valid while in use. A
        // folder given by path must likewise not be rewritten while margin runs.
        return unsafe { VarBuilder::from_mmaped_safetensors(&[&safetensors], DType::F32, device) }
            .map_err(|e| format!("model.safetensors: {e}"));
    }
    let pth = dir.join("pytorch_model.bin");
    if pth.is_file() {
        return VarBuilder::from_pth(&pth, DType::F32, device)
            .map_err(|e| format!("pytorch_model.bin: {e}"));
    }
    Err("no model.safetensors or pytorch_model.bin".into())
}

/// The input length cap of the model in `dir`, in tokens: its position
/// embeddings, lowered to sentence-transformers' `max_seq_length` (from
/// `sentence_bert_config.json`) when declared and to `cap` unless 0.
pub fn input_limit(dir: &Path, max_position_embeddings: usize, cap: usize) -> usize {
    let declared = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("max_seq_length")?.as_u64())
        .map_or(usize::MAX, |n| n as usize);
    let cap = if cap > 0 { cap } else { usize::MAX };
    max_position_embeddings.min(declared).min(cap)
}
