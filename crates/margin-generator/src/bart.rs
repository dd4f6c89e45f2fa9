//! BART (Lewis et al., 2019) as Hugging Face's `BartForConditionalGeneration`
//! lays it out: post-norm encoder and decoder, learned positions offset by 2,
//! `layernorm_embedding`, optional sqrt(d_model) embedding scale, LM head tied
//! to the shared embedding plus `final_logits_bias`.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{layer_norm, linear, Embedding, LayerNorm, LayerNormConfig, Linear, VarBuilder};
use margin_core::{OperationError, OperationResult};
use serde::Deserialize;

use crate::generator::{
    check_contexts, check_parents, check_per_row, distributions_with, gather, score_with,
    Generator, Limits, Session, SpecialTokens,
};

/// The fields of a Hugging Face BART `config.json` that the forward pass uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BartConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Encoder attention heads.
    pub encoder_attention_heads: usize,
    /// Decoder attention heads.
    pub decoder_attention_heads: usize,
    /// Encoder feed-forward size.
    pub encoder_ffn_dim: usize,
    /// Decoder feed-forward size.
    pub decoder_ffn_dim: usize,
    /// Longest input, in positions.
    pub max_position_embeddings: usize,
    /// Feed-forward activation: `gelu`, `relu`, …
    pub activation_function: String,
    /// Whether embeddings are multiplied by sqrt(d_model).
    #[serde(default)]
    pub scale_embedding: bool,
    /// Padding token id.
    pub pad_token_id: u32,
    /// Beginning-of-sequence token id.
    pub bos_token_id: u32,
    /// End-of-sequence token id.
    pub eos_token_id: u32,
    /// First decoder input.
    pub decoder_start_token_id: u32,
    /// Token forced when the maximum length is reached.
    #[serde(default)]
    pub forced_eos_token_id: Option<u32>,
}

/// BART's learned positions start at index 2 (a fairseq legacy).
const POSITION_OFFSET: usize = 2;

/// Hugging Face BART's layer norm epsilon.
const LAYER_NORM_EPS: f64 = 1e-5;

fn model_error(e: impl std::fmt::Display) -> OperationError {
    OperationError::model("bart", e)
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    Gelu,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> OperationResult<Activation> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => Err(OperationError::model(
                "bart",
                format!("activation_function `{other}` is not supported (gelu, relu)"),
            )),
        }
    }

    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            // transformers' "gelu" is the exact, erf-based GELU.
            Activation::Gelu => x.gelu_erf(),
            Activation::Relu => x.relu(),
        }
    }
}

/// Multi-head attention with biases; queries are scaled before the product, as in fairseq.
#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: VarBuilder, d_model: usize, heads: usize) -> candle_core::Result<Attention> {
        Ok(Attention {
            q_proj: linear(d_model, d_model, vb.pp("q_proj"))?,
            k_proj: linear(d_model, d_model, vb.pp("k_proj"))?,
            v_proj: linear(d_model, d_model, vb.pp("v_proj"))?,
            out_proj: linear(d_model, d_model, vb.pp("out_proj"))?,
            heads,
            head_dim: d_model / heads,
        })
    }

    /// [batch, len, d] -> [batch, heads, len, head_dim]
    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        x.reshape((b, l, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `kv`, split into heads.
    fn keys_values(&self, kv: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.k_proj.forward(kv)?)?,
            self.split_heads(&self.v_proj.forward(kv)?)?,
        ))
    }

    /// Attends from `x` to heads of keys `k` and values `v`; `bias` is added
    /// to the scores, broadcast over heads: [batch, 1, q_len, kv_len].
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads(&(self.q_proj.forward(x)? * scale)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = weights.matmul(v)?.transpose(1, 2)?.reshape((b, l, d))?;
        self.out_proj.forward(&out)
    }

    /// Self-attention over `x` alone.
    fn forward(&self, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (k, v) = self.keys_values(x)?;
        self.attend(x, &k, &v, bias)
    }
}

/// Two-layer feed-forward block.
#[derive(Debug)]
struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl FeedForward {
    fn load(
        vb: &VarBuilder,
        d_model: usize,
        ffn: usize,
        activation: Activation,
    ) -> candle_core::Result<Self> {
        Ok(FeedForward {
            fc1: linear(d_model, ffn, vb.pp("fc1"))?,
            fc2: linear(ffn, d_model, vb.pp("fc2"))?,
            activation,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2
            .forward(&self.activation.apply(&self.fc1.forward(x)?)?)
    }
}

fn norm(vb: VarBuilder, d_model: usize) -> candle_core::Result<LayerNorm> {
    layer_norm(d_model, LayerNormConfig::from(LAYER_NORM_EPS), vb)
}

#[derive(Debug)]
struct EncoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    ffn: FeedForward,
    final_layer_norm: LayerNorm,
}

impl EncoderLayer {
    fn forward(&self, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let x = self
            .self_attn_layer_norm
            .forward(&(x + self.self_attn.forward(x, bias)?)?)?;
        self.final_layer_norm
            .forward(&(&x + self.ffn.forward(&x)?)?)
    }
}

#[derive(Debug)]
struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    ffn: FeedForward,
    final_layer_norm: LayerNorm,
}

impl DecoderLayer {
    /// Runs new positions `x`, extending `cache` (this layer's self-attention
    /// keys and values so far) and reading the encoder's keys and values.
    fn forward(
        &self,
        x: &Tensor,
        causal: &Tensor,
        cache: &mut LayerCache,
        cross_bias: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (k, v) = self.self_attn.keys_values(x)?;
        let (k, v) = match cache.self_kv.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        let attended = self.self_attn.attend(x, &k, &v, causal)?;
        cache.self_kv = Some((k, v));
        let x = self.self_attn_layer_norm.forward(&(x + attended)?)?;
        let (ck, cv) = &cache.cross_kv;
        let x = self
            .encoder_attn_layer_norm
            .forward(&(&x + self.encoder_attn.attend(&x, ck, cv, cross_bias)?)?)?;
        self.final_layer_norm
            .forward(&(&x + self.ffn.forward(&x)?)?)
    }
}

/// One decoder layer's keys and values: self-attention's so far, and the
/// encoder output's (computed once per input).
#[derive(Debug, Clone)]
struct LayerCache {
    self_kv: Option<(Tensor, Tensor)>,
    cross_kv: (Tensor, Tensor),
}

/// What incremental decoding keeps between steps, one row per hypothesis.
#[derive(Debug, Clone)]
pub struct DecoderState {
    layers: Vec<LayerCache>,
    cross_bias: Tensor,
    /// Decoder positions already run.
    len: usize,
}

impl DecoderState {
    /// The state with rows taken from `rows` of this one (beam search's
    /// reorder and duplication: row `i` of the result is row `rows[i]`).
    pub fn select_rows(&self, rows: &[u32]) -> OperationResult<DecoderState> {
        (|| {
            let index = Tensor::new(rows, self.cross_bias.device())?;
            let pick = |t: &Tensor| t.index_select(&index, 0);
            let layers = self
                .layers
                .iter()
                .map(|l| {
                    Ok(LayerCache {
                        self_kv: match &l.self_kv {
                            Some((k, v)) => Some((pick(k)?, pick(v)?)),
                            None => None,
                        },
                        cross_kv: (pick(&l.cross_kv.0)?, pick(&l.cross_kv.1)?),
                    })
                })
                .collect::<candle_core::Result<_>>()?;
            Ok::<_, candle_core::Error>(DecoderState {
                layers,
                cross_bias: pick(&self.cross_bias)?,
                len: self.len,
            })
        })()
        .map_err(model_error)
    }

    /// Decoder positions already run.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no decoder position has been run yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Token + learned position embeddings, scaled, then `layernorm_embedding`.
#[derive(Debug)]
struct Embeddings {
    positions: Embedding,
    layernorm_embedding: LayerNorm,
    scale: f64,
}

impl Embeddings {
    fn load(vb: VarBuilder, config: &BartConfig) -> candle_core::Result<Embeddings> {
        let rows = config.max_position_embeddings + POSITION_OFFSET;
        Ok(Embeddings {
            positions: Embedding::new(
                vb.get((rows, config.d_model), "embed_positions.weight")?,
                config.d_model,
            ),
            layernorm_embedding: norm(vb.pp("layernorm_embedding"), config.d_model)?,
            scale: if config.scale_embedding {
                (config.d_model as f64).sqrt()
            } else {
                1.0
            },
        })
    }

    fn forward(
        &self,
        shared: &Embedding,
        ids: &Tensor,
        start: usize,
    ) -> candle_core::Result<Tensor> {
        let len = ids.dim(1)?;
        let positions = Tensor::arange(
            (start + POSITION_OFFSET) as u32,
            (start + POSITION_OFFSET + len) as u32,
            ids.device(),
        )?;
        let tokens = (shared.forward(ids)? * self.scale)?;
        let x = tokens.broadcast_add(&self.positions.forward(&positions)?)?;
        self.layernorm_embedding.forward(&x)
    }
}

/// `BartForConditionalGeneration`.
#[derive(Debug)]
pub struct Bart {
    config: BartConfig,
    shared: Embedding,
    encoder_embeddings: Embeddings,
    encoder_layers: Vec<EncoderLayer>,
    decoder_embeddings: Embeddings,
    decoder_layers: Vec<DecoderLayer>,
    final_logits_bias: Tensor,
    device: Device,
    dtype: DType,
}

/// Score bias that keeps attention off a position (as transformers, the
/// dtype's lowest value would overflow when added twice; this cannot).
const MASKED: f32 = -1e9;

impl Bart {
    /// Loads a Hugging Face checkpoint folder (`config.json` and
    /// `model.safetensors`, or `pytorch_model.bin` as older hub checkpoints
    /// such as `facebook/bart-large` ship), computing in `dtype` (f32 is the
    /// reference; f16 and bf16 are for GPUs).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> OperationResult<Bart> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| OperationError::io(&config_path, e))?;
        let config: BartConfig = serde_json::from_str(&text).map_err(|e| {
            OperationError::bad_input(config_path.display().to_string(), e.to_string())
        })?;
        let safetensors = dir.join("model.safetensors");
        let pickle = dir.join("pytorch_model.bin");
        let vb = if safetensors.is_file() {
            // SAFETY: the file is memory-mapped read-only; margin never writes model files while they are loaded.
            unsafe { VarBuilder::from_mmaped_safetensors(&[&safetensors], dtype, device) }
        } else if pickle.is_file() {
            VarBuilder::from_pth(&pickle, dtype, device)
        } else {
            return Err(OperationError::model(
                "bart",
                format!(
                    "{} has neither model.safetensors nor pytorch_model.bin",
                    dir.display()
                ),
            ));
        }
        .map_err(model_error)?;
        Self::from_var_builder(config, vb, device).map_err(model_error)
    }

    fn from_var_builder(
        config: BartConfig,
        vb: VarBuilder,
        device: &Device,
    ) -> candle_core::Result<Bart> {
        let activation =
            Activation::parse(&config.activation_function).map_err(candle_core::Error::wrap)?;
        let d = config.d_model;
        let shared = Embedding::new(vb.get((config.vocab_size, d), "model.shared.weight")?, d);
        let encoder = vb.pp("model.encoder");
        let decoder = vb.pp("model.decoder");
        let encoder_layers = (0..config.encoder_layers)
            .map(|i| {
                let vb = encoder.pp(format!("layers.{i}"));
                Ok(EncoderLayer {
                    self_attn: Attention::load(
                        vb.pp("self_attn"),
                        d,
                        config.encoder_attention_heads,
                    )?,
                    self_attn_layer_norm: norm(vb.pp("self_attn_layer_norm"), d)?,
                    ffn: FeedForward::load(&vb, d, config.encoder_ffn_dim, activation)?,
                    final_layer_norm: norm(vb.pp("final_layer_norm"), d)?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        let decoder_layers = (0..config.decoder_layers)
            .map(|i| {
                let vb = decoder.pp(format!("layers.{i}"));
                Ok(DecoderLayer {
                    self_attn: Attention::load(
                        vb.pp("self_attn"),
                        d,
                        config.decoder_attention_heads,
                    )?,
                    self_attn_layer_norm: norm(vb.pp("self_attn_layer_norm"), d)?,
                    encoder_attn: Attention::load(
                        vb.pp("encoder_attn"),
                        d,
                        config.decoder_attention_heads,
                    )?,
                    encoder_attn_layer_norm: norm(vb.pp("encoder_attn_layer_norm"), d)?,
                    ffn: FeedForward::load(&vb, d, config.decoder_ffn_dim, activation)?,
                    final_layer_norm: norm(vb.pp("final_layer_norm"), d)?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Bart {
            encoder_embeddings: Embeddings::load(encoder, &config)?,
            decoder_embeddings: Embeddings::load(decoder, &config)?,
            final_logits_bias: vb.get((1, config.vocab_size), "final_logits_bias")?,
            shared,
            encoder_layers,
            decoder_layers,
            config,
            device: device.clone(),
            dtype: vb.dtype(),
        })
    }

    /// The checkpoint's configuration.
    pub fn config(&self) -> &BartConfig {
        &self.config
    }

    /// Additive key bias from a 0/1 mask [batch, kv_len]: [batch, 1, 1, kv_len].
    fn padding_bias(&self, mask: &Tensor) -> candle_core::Result<Tensor> {
        let mask = mask.to_dtype(DType::F32)?;
        ((1.0 - mask)? * MASKED as f64)?
            .to_dtype(self.dtype)?
            .unsqueeze(1)?
            .unsqueeze(1)
    }

    /// Encodes `input_ids` [batch, len] with its 0/1 `attention_mask`: [batch, len, d].
    pub fn encode(&self, input_ids: &Tensor, attention_mask: &Tensor) -> OperationResult<Tensor> {
        (|| {
            let bias = self.padding_bias(attention_mask)?;
            let mut x = self
                .encoder_embeddings
                .forward(&self.shared, input_ids, 0)?;
            for layer in &self.encoder_layers {
                x = layer.forward(&x, &bias)?;
            }
            Ok::<_, candle_core::Error>(x)
        })()
        .map_err(model_error)
    }

    /// A decoder state over `encoder_out` (one row per input), before any
    /// decoder token.
    pub fn start_decoding(
        &self,
        encoder_out: &Tensor,
        attention_mask: &Tensor,
    ) -> OperationResult<DecoderState> {
        (|| {
            let layers = self
                .decoder_layers
                .iter()
                .map(|layer| {
                    Ok(LayerCache {
                        self_kv: None,
                        cross_kv: layer.encoder_attn.keys_values(encoder_out)?,
                    })
                })
                .collect::<candle_core::Result<_>>()?;
            Ok::<_, candle_core::Error>(DecoderState {
                layers,
                cross_bias: self.padding_bias(attention_mask)?,
                len: 0,
            })
        })()
        .map_err(model_error)
    }

    /// Runs `tokens` [rows, n] after what `state` holds and returns the
    /// logits [rows, n, vocab] of the token after each; `state` then holds them too.
    pub fn decode_step(
        &self,
        state: &mut DecoderState,
        tokens: &Tensor,
    ) -> OperationResult<Tensor> {
        (|| {
            let (n, past) = (tokens.dim(1)?, state.len);
            // New position i (absolute past + i) sees keys 0..=past + i.
            let causal: Vec<f32> = (0..n)
                .flat_map(|i| (0..past + n).map(move |j| if j > past + i { MASKED } else { 0.0 }))
                .collect();
            let causal = Tensor::from_vec(causal, (1, 1, n, past + n), &self.device)?
                .to_dtype(self.dtype)?;
            let mut x = self
                .decoder_embeddings
                .forward(&self.shared, tokens, past)?;
            for (layer, cache) in self.decoder_layers.iter().zip(&mut state.layers) {
                x = layer.forward(&x, &causal, cache, &state.cross_bias)?;
            }
            state.len += n;
            x.broadcast_matmul(&self.shared.embeddings().t()?)?
                .broadcast_add(&self.final_logits_bias)
        })()
        .map_err(model_error)
    }

    /// Next-token logits [batch, dec_len, vocab] for teacher-forced
    /// `decoder_input_ids` over `encoder_out`.
    pub fn decode(
        &self,
        decoder_input_ids: &Tensor,
        encoder_out: &Tensor,
        attention_mask: &Tensor,
    ) -> OperationResult<Tensor> {
        let mut state = self.start_decoding(encoder_out, attention_mask)?;
        self.decode_step(&mut state, decoder_input_ids)
    }

    /// Log-probabilities of the next token after each prefix: log-softmax of [`Bart::decode`].
    pub fn next_token_log_probs(
        &self,
        decoder_input_ids: &Tensor,
        encoder_out: &Tensor,
        attention_mask: &Tensor,
    ) -> OperationResult<Tensor> {
        let logits = self.decode(decoder_input_ids, encoder_out, attention_mask)?;
        candle_nn::ops::log_softmax(
            &logits.to_dtype(DType::F32).map_err(model_error)?,
            D::Minus1,
        )
        .map_err(model_error)
    }
}

impl Generator for Bart {
    fn name(&self) -> &str {
        "bart"
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens {
            eos: self.config.eos_token_id,
            pad: self.config.pad_token_id,
            bos: Some(self.config.bos_token_id),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_context_tokens: self.config.max_position_embeddings,
            max_output_tokens: self.config.max_position_embeddings,
        }
    }

    fn output_start(&self) -> Vec<u32> {
        vec![self.config.decoder_start_token_id]
    }

    fn prepare(&self, contexts: &[Vec<u32>]) -> OperationResult<Box<dyn Session + '_>> {
        check_contexts("bart", contexts, self.limits(), self.vocab_size())?;
        let longest = contexts.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(contexts.len() * longest);
        let mut mask = Vec::with_capacity(contexts.len() * longest);
        for context in contexts {
            ids.extend(context.iter().copied());
            ids.extend(std::iter::repeat_n(
                self.config.pad_token_id,
                longest - context.len(),
            ));
            mask.extend((0..longest).map(|i| u32::from(i < context.len())));
        }
        let shape = (contexts.len(), longest);
        let ids = Tensor::from_vec(ids, shape, &self.device).map_err(model_error)?;
        let mask = Tensor::from_vec(mask, shape, &self.device).map_err(model_error)?;
        let encoded = self.encode(&ids, &mask)?;
        let mut state = self.start_decoding(&encoded, &mask)?;
        let start = vec![self.output_start(); contexts.len()];
        let log_probs = self.step_log_probs(&mut state, &start)?;
        Ok(Box::new(BartSession {
            bart: self,
            state,
            log_probs,
        }))
    }
}

impl Bart {
    /// Runs `tokens` (one equally long row per state row) and returns the
    /// log-probabilities [rows, n, vocab] after each.
    fn step_log_probs(
        &self,
        state: &mut DecoderState,
        tokens: &[Vec<u32>],
    ) -> OperationResult<Tensor> {
        if let Some(bad) = tokens
            .iter()
            .flatten()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(OperationError::bad_input(
                "tokens",
                format!(
                    "token {bad} is outside the vocabulary of {}",
                    self.config.vocab_size
                ),
            ));
        }
        let longest = state.len + tokens.iter().map(Vec::len).max().unwrap_or(0);
        if longest > self.config.max_position_embeddings {
            return Err(OperationError::bad_input(
                "tokens",
                format!(
                    "outputs would reach {longest} tokens; bart takes at most {}",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let tokens = Tensor::new(tokens.to_vec(), &self.device).map_err(model_error)?;
        let logits = self.decode_step(state, &tokens)?;
        candle_nn::ops::log_softmax(
            &logits.to_dtype(DType::F32).map_err(model_error)?,
            D::Minus1,
        )
        .map_err(model_error)
    }
}

/// Rows of a [`Bart`]: the encoder's keys and values, the decoder's cache
/// and every row's next-token log-probabilities.
struct BartSession<'a> {
    bart: &'a Bart,
    state: DecoderState,
    /// [rows, n, vocab]: the last position is the next token's.
    log_probs: Tensor,
}

impl BartSession<'_> {
    fn last(&self) -> candle_core::Result<Tensor> {
        let n = self.log_probs.dim(1)?;
        self.log_probs.narrow(1, n - 1, 1)?.squeeze(1)
    }
}

/// Target positions whose whole log-probability rows exist at once when
/// scoring (bart-large's 50k vocabulary: ~26 MB).
const SCORE_POSITIONS: usize = 128;

impl BartSession<'_> {
    /// Log-probabilities [picks, vocab] after each picked (row, index) of
    /// `inputs` run after every row, the state left as it was.
    fn teacher_forced(
        &self,
        inputs: &[Vec<u32>],
        picks: &[(usize, usize)],
    ) -> OperationResult<Tensor> {
        // All rows run equally long: shorter ones are padded at the end,
        // which the causal mask keeps from mattering.
        let n = inputs.iter().map(Vec::len).max().unwrap_or(0);
        let padded: Vec<Vec<u32>> = inputs
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.resize(n, self.bart.config.pad_token_id);
                t
            })
            .collect();
        let mut state = self.state.clone();
        let log_probs = self.bart.step_log_probs(&mut state, &padded)?;
        let index: Vec<u32> = picks.iter().map(|&(r, i)| (r * n + i) as u32).collect();
        (|| {
            let index = Tensor::new(index, &self.bart.device)?;
            let vocab = log_probs.dim(2)?;
            log_probs.reshape(((), vocab))?.index_select(&index, 0)
        })()
        .map_err(model_error)
    }
}

impl Session for BartSession<'_> {
    fn rows(&self) -> usize {
        self.log_probs.dims()[0]
    }

    fn log_probs(&self) -> OperationResult<Vec<Vec<f32>>> {
        self.last().and_then(|t| t.to_vec2()).map_err(model_error)
    }

    fn select(&mut self, parents: &[usize]) -> OperationResult<()> {
        check_parents(self.rows(), parents)?;
        let index: Vec<u32> = parents.iter().map(|&p| p as u32).collect();
        self.state = self.state.select_rows(&index)?;
        let index = Tensor::new(index, &self.bart.device).map_err(model_error)?;
        self.log_probs = self
            .last()
            .and_then(|t| t.index_select(&index, 0)?.unsqueeze(1))
            .map_err(model_error)?;
        Ok(())
    }

    fn fork(&self, parents: &[usize]) -> OperationResult<Box<dyn Session + '_>> {
        let mut fork = BartSession {
            bart: self.bart,
            state: self.state.clone(),
            log_probs: self.log_probs.clone(),
        };
        fork.select(parents)?;
        Ok(Box::new(fork))
    }

    fn advance(&mut self, tokens: &[u32]) -> OperationResult<()> {
        check_per_row(self.rows(), "tokens", tokens.len())?;
        let rows: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
        let mut state = self.state.clone();
        self.log_probs = self.bart.step_log_probs(&mut state, &rows)?;
        self.state = state;
        Ok(())
    }

    fn score(&self, targets: &[Vec<u32>]) -> OperationResult<Vec<Vec<f32>>> {
        // BART's forward materialises every position's whole distribution:
        // many long targets are scored a few rows at a time.
        let longest = targets.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let chunk = (SCORE_POSITIONS / longest).max(1);
        if targets.len() > chunk {
            check_per_row(self.rows(), "targets", targets.len())?;
            let mut scores = Vec::with_capacity(targets.len());
            for (c, part) in targets.chunks(chunk).enumerate() {
                let rows: Vec<usize> = (c * chunk..c * chunk + part.len()).collect();
                scores.extend(self.fork(&rows)?.score(part)?);
            }
            return Ok(scores);
        }
        score_with(
            self,
            self.bart.config.vocab_size,
            targets,
            |inputs, picks, wanted| gather(&self.teacher_forced(inputs, picks)?, wanted),
        )
    }

    fn distributions(&self, targets: &[Vec<u32>]) -> OperationResult<Vec<Vec<Vec<f32>>>> {
        distributions_with(
            self,
            self.bart.config.vocab_size,
            targets,
            |inputs, picks| self.teacher_forced(inputs, picks),
        )
    }
}
