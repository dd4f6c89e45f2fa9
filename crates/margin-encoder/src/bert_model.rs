//! BERT's encoder stack, written for inference on the CPU: the query, key and
//! value projections run as one matrix product, the attention scale is applied
//! to the queries (s·d values) rather than the scores (s² values), and softmax
//! is one fused pass with the padding mask (softmax.rs). Loads Hugging Face BERT checkpoints.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

/// Embeddings, then `num_hidden_layers` transformer layers.
pub(crate) struct BertModel {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<BertLayer>,
}

struct BertLayer {
    qkv: Linear,
    heads: usize,
    head_dim: usize,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    activation: HiddenAct,
    output: Linear,
    output_norm: LayerNorm,
}

impl BertModel {
    /// Loads the weights under `vb` (the folder holding `embeddings` and `encoder`).
    pub fn load(vb: VarBuilder, config: &Config) -> Result<BertModel> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let emb = vb.pp("embeddings");
        let hidden = config.hidden_size;
        let layers = (0..config.num_hidden_layers)
            .map(|i| BertLayer::load(vb.pp(format!("encoder.layer.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel {
            word_embeddings: embedding(config.vocab_size, hidden, emb.pp("word_embeddings"))?,
            position_embeddings: embedding(
                config.max_position_embeddings,
                hidden,
                emb.pp("position_embeddings"),
            )?,
            token_type_embeddings: embedding(
                config.type_vocab_size,
                hidden,
                emb.pp("token_type_embeddings"),
            )?,
            embeddings_norm: layer_norm(hidden, config.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers,
        })
    }

    /// Hidden states [batch, seq, hidden] for `input_ids`, `token_type_ids`
    /// and `attention_mask` (all [batch, seq], mask 1 for real tokens).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        let positions = Tensor::arange(0u32, seq as u32, input_ids.device())?;
        let x = self
            .word_embeddings
            .forward(input_ids)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?
            .add(&self.token_type_embeddings.forward(token_type_ids)?)?;
        let mut x = self.embeddings_norm.forward(&x)?;
        // Padding gets a large negative score before softmax: [batch, 1, 1, seq].
        let mask_bias = ((attention_mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?
            .unsqueeze(1)?
            .unsqueeze(1)?
            .to_dtype(x.dtype())?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias)?;
        }
        Ok(x)
    }
}

impl BertLayer {
    fn load(vb: VarBuilder, config: &Config) -> Result<BertLayer> {
        let hidden = config.hidden_size;
        let attn = vb.pp("attention");
        let q = linear(hidden, hidden, attn.pp("self.query"))?;
        let k = linear(hidden, hidden, attn.pp("self.key"))?;
        let v = linear(hidden, hidden, attn.pp("self.value"))?;
        let bias = |l: &Linear| {
            l.bias()
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg("attention projection without bias".into()))
        };
        let qkv = Linear::new(
            Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?,
            Some(Tensor::cat(&[bias(&q)?, bias(&k)?, bias(&v)?], 0)?),
        );
        Ok(BertLayer {
            qkv,
            heads: config.num_attention_heads,
            head_dim: hidden / config.num_attention_heads,
            attention_output: linear(hidden, hidden, attn.pp("output.dense"))?,
            attention_norm: layer_norm(hidden, config.layer_norm_eps, attn.pp("output.LayerNorm"))?,
            intermediate: linear(
                hidden,
                config.intermediate_size,
                vb.pp("intermediate.dense"),
            )?,
            activation: config.hidden_act,
            output: linear(config.intermediate_size, hidden, vb.pp("output.dense"))?,
            output_norm: layer_norm(hidden, config.layer_norm_eps, vb.pp("output.LayerNorm"))?,
        })
    }

    fn forward(&self, x: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        // [batch, seq, 3, heads, head_dim] -> [3, batch, heads, seq, head_dim]
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((batch, seq, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let q = (qkv.get(0)? * scale)?;
        let k = qkv.get(1)?;
        let v = qkv.get(2)?;
        let probs = crate::softmax::masked_softmax(&q.matmul(&k.t()?)?, mask_bias)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, seq, hidden))?;
        let attended = self
            .attention_norm
            .forward(&(self.attention_output.forward(&context)? + x)?)?;
        let inner = self.intermediate.forward(&attended)?;
        let inner = match self.activation {
            HiddenAct::Gelu => crate::gelu::gelu_erf(&inner)?,
            HiddenAct::GeluApproximate => inner.gelu()?,
            HiddenAct::Relu => inner.relu()?,
        };
        self.output_norm
            .forward(&(self.output.forward(&inner)? + attended)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};
    use candle_nn::VarMap;

    /// The fused layout must compute exactly what candle-transformers' BERT does.
    #[test]
    fn matches_candle_transformers_bert() {
        let config = Config {
            vocab_size: 50,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 64,
            hidden_dropout_prob: 0.0,
            ..Default::default()
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let reference =
            candle_transformers::models::bert::BertModel::load(vb.clone(), &config).unwrap();
        let ours = BertModel::load(vb, &config).unwrap();
        let ids = Tensor::new(
            &[[2u32, 7, 9, 3, 0, 0], [2, 11, 12, 13, 14, 3]],
            &Device::Cpu,
        )
        .unwrap();
        let types = ids.zeros_like().unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
        let a = reference.forward(&ids, &types, Some(&mask)).unwrap();
        let b = ours.forward(&ids, &types, &mask).unwrap();
        // Compare real (unmasked) positions only: padding rows are never pooled.
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .broadcast_mul(
                &mask
                    .to_dtype(DType::F32)
                    .unwrap()
                    .unsqueeze(D::Minus1)
                    .unwrap(),
            )
            .unwrap();
        let max = diff.max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(max < 1e-5, "max abs difference {max}");
    }
}
