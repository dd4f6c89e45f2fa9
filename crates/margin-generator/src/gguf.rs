//! Decoder LLMs from GGUF files on candle's quantised kernels: the llama
//! family (SmolLM2, Qwen-style llama exports) and Gemma 3.
//!
//! One sequence at a time for now; batched, padded prefill over k contexts
//! is the next step of issue 4.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor, D};
use candle_transformers::models::quantized_llama;

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
}

impl GgufModel {
    /// Loads `path`, choosing the architecture from its `general.architecture`.
    pub fn load(name: &str, path: &Path, device: &Device) -> OperationResult<GgufModel> {
        let error = |e: &dyn std::fmt::Display| {
            OperationError::model(name, format!("{}: {e}", path.display()))
        };
        let mut file = std::fs::File::open(path).map_err(|e| OperationError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| error(&e))?;
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
        })
    }

    /// Log-probabilities of the token after `ids` (a fresh sequence: any
    /// earlier state is dropped).
    pub fn next_token_log_probs(&mut self, ids: &[u32]) -> OperationResult<Vec<f32>> {
        let error = |e: candle_core::Error| OperationError::model(&self.name, e);
        let input = Tensor::new(ids, &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(error)?;
        // Position 0 makes both models start a new cache.
        let logits = match &mut self.weights {
            Weights::Llama(m) => m.forward(&input, 0),
            Weights::Gemma3(m) => m.forward(&input),
        }
        .map_err(error)?;
        candle_nn::ops::log_softmax(&logits.squeeze(0).map_err(error)?, D::Minus1)
            .and_then(|t| t.to_vec1())
            .map_err(|e| OperationError::model(&self.name, e))
    }
}
