//! Decoder LLMs from GGUF files on candle's quantised kernels: the llama
//! family (SmolLM2, Qwen-style llama exports) and Gemma 3.
//!
//! One sequence at a time for now; batched, padded prefill over k contexts
//! is the next step of issue 4.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor, D};
use candle_transformers::models::quantized_llama;

use crate::chat::ChatTemplate;
use crate::gemma3::Gemma3;
use margin_core::{OperationError, OperationResult};

enum Weights {
    Llama(quantized_llama::ModelWeights),
    Gemma3(Gemma3),
}

/// A decoder LLM loaded from one GGUF file.
pub struct GgufModel {
    name: String,
    weights: Weights,
    device: Device,
    chat_template: Option<ChatTemplate>,
    eos_token_id: Option<u32>,
    bos_to_add: Option<u32>,
    /// Tokens whose keys and values the model's own cache holds (llama only).
    cached: Vec<u32>,
}

impl GgufModel {
    /// Loads `path`, choosing the architecture from its `general.architecture`.
    pub fn load(name: &str, path: &Path, device: &Device) -> OperationResult<GgufModel> {
        let error = |e: &dyn std::fmt::Display| {
            OperationError::model(name, format!("{}: {e}", path.display()))
        };
        let mut file = std::fs::File::open(path).map_err(|e| OperationError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| error(&e))?;
        let chat_template = ChatTemplate::from_gguf(&content);
        let eos_token_id = content
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok());
        let add_bos = content
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let bos_to_add = content
            .metadata
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.to_u32().ok())
            .filter(|_| add_bos);
        let architecture = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let weights = match architecture.as_str() {
            "llama" => Weights::Llama(
                quantized_llama::ModelWeights::from_gguf(content, &mut file, device)
                    .map_err(|e| error(&e))?,
            ),
            a if a.starts_with("gemma") => Weights::Gemma3(
                Gemma3::from_gguf(content, &mut file, device).map_err(|e| error(&e))?,
            ),
            other => {
                return Err(error(&format!(
                    "architecture `{other}` is not supported (llama, gemma3)"
                )))
            }
        };
        Ok(GgufModel {
            name: name.to_string(),
            weights,
            device: device.clone(),
            chat_template,
            eos_token_id,
            bos_to_add,
            cached: Vec::new(),
        })
    }

    /// The chat template in the file's metadata, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The end-of-sequence token the file names.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }

    /// `ids` of a prompt as the model expects them: with BOS in front where
    /// the file asks for one (Gemma) and the tokenizer did not add it.
    pub fn with_bos(&self, ids: Vec<u32>) -> Vec<u32> {
        match self.bos_to_add {
            Some(bos) if ids.first() != Some(&bos) => std::iter::once(bos).chain(ids).collect(),
            _ => ids,
        }
    }

    /// Log-probabilities of the token after `ids`. When `ids` extends the
    /// previous call's sequence by one token, only that token is run
    /// (llama's own cache); otherwise the whole sequence is.
    pub fn next_token_log_probs(&mut self, ids: &[u32]) -> OperationResult<Vec<f32>> {
        let error = |e: candle_core::Error| OperationError::model(&self.name, e);
        let extends = ids.len() == self.cached.len() + 1 && ids.starts_with(&self.cached);
        let (new, start) = match &self.weights {
            Weights::Llama(_) if extends => (&ids[ids.len() - 1..], self.cached.len()),
            _ => (ids, 0),
        };
        let input = Tensor::new(new, &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(error)?;
        // Position 0 makes llama start a new cache.
        let logits = match &mut self.weights {
            Weights::Llama(m) => m.forward(&input, start),
            Weights::Gemma3(m) => m.forward(&input),
        }
        .map_err(error)?;
        self.cached = ids.to_vec();
        candle_nn::ops::log_softmax(&logits.squeeze(0).map_err(error)?, D::Minus1)
            .and_then(|t| t.to_vec1())
            .map_err(|e| OperationError::model(&self.name, e))
    }
}
