//! Decoder-only transformers from GGUF files, written for batches of rows of
//! different lengths: the llama family (SmolLM2, llama-layout exports) and
//! Gemma 3.
//!
//! candle-transformers' `quantized_llama` keeps one KV cache with a single
//! position for the whole batch, so k prompts of different lengths cannot be
//! prefilled together; its `quantized_gemma3` (0.11) gates the feed-forward
//! with SiLU where Gemma uses GELU, which changes most of Gemma 3 270M's
//! next-token choices. Here every row has its own positions, every cache slot
//! remembers which position it holds (or that it is padding), and the
//! attention mask is built from those, so rows can be padded, duplicated and
//! reordered freely.
//!
//! Per layer: RMSNorm → grouped-query attention with rotary positions →
//! residual, then RMSNorm → gated feed-forward → residual. Gemma 3 adds
//! RMSNorm on queries and keys, norms after attention and feed-forward,
//! GELU (tanh) gating, embeddings scaled by sqrt(hidden), and sliding-window
//! layers with their own rotary base, every sixth layer being global.

use std::sync::Arc;

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use crate::attention::{self, AttentionShape};
use crate::q8::Q8Matrix;

type Result<T> = candle_core::Result<T>;

/// In Gemma 3, layers whose index + 1 is a multiple of this attend globally.
const GEMMA_GLOBAL_EVERY: usize = 6;
/// Rotary base of Gemma's sliding-window layers when the file does not say.
const GEMMA_LOCAL_ROPE_BASE: f32 = 10_000.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    Llama,
    Gemma3,
}

struct Layer {
    attn_norm: RmsNorm,
    /// Queries, keys and values from one product.
    qkv: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    post_attn_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    /// Gate and up projections from one product.
    gate_up: Linear,
    down: Linear,
    post_ffn_norm: Option<RmsNorm>,
    /// Keys at most this many positions back are seen; `None`: all.
    window: Option<usize>,
    rope_base: f32,
}

/// The token embedding table.
enum Embeddings {
    /// f32 rows (devices other than the CPU).
    Dense(Tensor),
    /// 8-bit rows, dequantised on lookup.
    Q8(Arc<Q8Matrix>),
}

/// A decoder-only transformer's weights and shape.
pub struct Llm {
    family: Family,
    embeddings: Embeddings,
    embed_scale: f64,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    context_length: usize,
    layers: Vec<Layer>,
    final_norm: RmsNorm,
    output: Linear,
    device: Device,
}

/// Keys and values of every row, and which position each cache slot holds.
///
/// Keys and values live in buffers with room to grow, written in place, so a
/// decoding step copies one position per row instead of the whole cache.
/// Clones made with [`LlmCache::share`] share those buffers: extending a
/// clone writes past the original's length, which the original never reads
/// and overwrites when it extends itself; so a clone may be extended and
/// read (teacher forcing, a step that may fail) while the original waits,
/// but two clones must not both be extended and kept.
pub struct LlmCache {
    /// Per layer: keys and values [rows, kv_heads, capacity, head_dim], the
    /// first `slots[r].len()` positions in use.
    kv: Vec<Option<(Tensor, Tensor)>>,
    /// Per row, per slot: the position of the token there; `None` for padding.
    slots: Vec<Vec<Option<u32>>>,
}

impl LlmCache {
    /// An empty cache of `rows` rows.
    pub fn new(rows: usize, layers: usize) -> LlmCache {
        LlmCache {
            kv: vec![None; layers],
            slots: vec![Vec::new(); rows],
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.slots.len()
    }

    /// A clone sharing the key and value buffers (see the type's notes).
    pub(crate) fn share(&self) -> LlmCache {
        LlmCache {
            kv: self.kv.clone(),
            slots: self.slots.clone(),
        }
    }

    /// Tokens row `row` holds (padding not counted).
    pub fn len(&self, row: usize) -> usize {
        self.slots[row].iter().filter(|s| s.is_some()).count()
    }

    /// The cache whose row `i` is row `parents[i]` of this one.
    pub fn select(&self, parents: &[usize]) -> Result<LlmCache> {
        let kv = match self.kv.iter().flatten().next() {
            None => vec![None; self.kv.len()],
            Some((k, _)) => {
                let index: Vec<u32> = parents.iter().map(|&p| p as u32).collect();
                let index = Tensor::new(index, k.device())?;
                self.kv
                    .iter()
                    .map(|layer| match layer {
                        Some((k, v)) => Ok(Some((
                            k.index_select(&index, 0)?,
                            v.index_select(&index, 0)?,
                        ))),
                        None => Ok(None),
                    })
                    .collect::<Result<_>>()?
            }
        };
        Ok(LlmCache {
            kv,
            slots: parents.iter().map(|&p| self.slots[p].clone()).collect(),
        })
    }
}

impl Llm {
    /// Reads the model from GGUF `content`; `architecture` is its `general.architecture`.
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        architecture: &str,
        content: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Llm> {
        let family = match architecture {
            "llama" => Family::Llama,
            "gemma3" => Family::Gemma3,
            other => candle_core::bail!("architecture `{other}` is not supported (llama, gemma3)"),
        };
        let meta = |key: &str| {
            content
                .metadata
                .get(&format!("{architecture}.{key}"))
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!("GGUF metadata lacks {architecture}.{key}"))
                })
        };
        let count = |key: &str| -> Result<usize> { Ok(meta(key)?.to_u32()? as usize) };
        let eps = meta("attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let hidden = count("embedding_length")?;
        let heads = count("attention.head_count")?;
        let kv_heads = count("attention.head_count_kv")?;
        if heads == 0 || kv_heads == 0 || hidden == 0 {
            candle_core::bail!(
                "{heads} heads, {kv_heads} key/value heads and width {hidden} do not make a model"
            );
        }
        let head_dim = count("attention.key_length").unwrap_or(hidden / heads);
        if heads % kv_heads != 0 || head_dim == 0 || head_dim % 2 != 0 {
            candle_core::bail!("{heads} heads over {kv_heads} key/value heads of size {head_dim} is not a supported shape");
        }
        if let Ok(rope_dim) = count("rope.dimension_count") {
            if rope_dim != head_dim {
                candle_core::bail!(
                    "partial rotary embeddings ({rope_dim} of {head_dim}) are not supported"
                );
            }
        }
        let global_base = meta("rope.freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(match family {
                Family::Llama => 10_000.0,
                Family::Gemma3 => 1_000_000.0,
            });
        let local_base = meta("rope.local_freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(GEMMA_LOCAL_ROPE_BASE);
        let window = count("attention.sliding_window").ok();
        if family == Family::Gemma3 && window.is_none_or(|w| w == 0) {
            // Local and global layers differ by window and rotary base; without
            // a window they could not be told apart.
            candle_core::bail!("Gemma 3 file without a positive gemma3.attention.sliding_window");
        }
        // Rotary scaling (Llama 3's frequency factors, Gemma 3 4B+'s linear
        // scaling) is not implemented: refuse rather than answer wrongly.
        let scaled = content
            .metadata
            .keys()
            .any(|k| k.starts_with(&format!("{architecture}.rope.scaling")))
            || content.tensor_infos.contains_key("rope_freqs.weight");
        if scaled {
            candle_core::bail!(
                "rotary position scaling (rope.scaling / rope_freqs) is not supported"
            );
        }
        let context_length = count("context_length").unwrap_or(2048);

        let mut tensor = |name: &str| content.tensor(reader, name, device);
        let token_embd = tensor("token_embd.weight")?;
        let vocab = token_embd.shape().dims()[0];
        // Tied embeddings only when the file has no output matrix: a read
        // error is an error.
        let separate_output = if content.tensor_infos.contains_key("output.weight") {
            Some(tensor("output.weight")?)
        } else {
            None
        };
        let (embeddings, output) = if device.is_cpu() && hidden % 32 == 0 {
            // Rows are looked up in the 8-bit table (Gemma 3's 262k x 640
            // would take 670 MB as f32), shared with a tied output layer.
            let table = Arc::new(Q8Matrix::from_qtensor(&token_embd)?);
            let output = match separate_output {
                Some(t) => qmatmul(t)?,
                None => Linear::Q8 {
                    matrix: table.clone(),
                    sizes: vec![vocab],
                },
            };
            (Embeddings::Q8(table), output)
        } else {
            let dense = token_embd.dequantize(device)?;
            let output = match separate_output {
                Some(t) => qmatmul(t)?,
                // Tied to the embeddings (SmolLM2, every Gemma).
                None => qmatmul(token_embd)?,
            };
            (Embeddings::Dense(dense), output)
        };
        let final_norm = RmsNorm::from_qtensor(tensor("output_norm.weight")?, eps)?;
        let gemma = family == Family::Gemma3;
        let layers = (0..count("block_count")?)
            .map(|i| {
                let mut t = |suffix: &str| tensor(&format!("blk.{i}.{suffix}.weight"));
                let mut norm = |suffix: &str| RmsNorm::from_qtensor(t(suffix)?, eps);
                let global = !gemma || (i + 1) % GEMMA_GLOBAL_EVERY == 0;
                let gemma_norm = |n: Result<RmsNorm>| -> Result<Option<RmsNorm>> {
                    if gemma {
                        n.map(Some)
                    } else {
                        Ok(None)
                    }
                };
                Ok(Layer {
                    attn_norm: norm("attn_norm")?,
                    q_norm: gemma_norm(norm("attn_q_norm"))?,
                    k_norm: gemma_norm(norm("attn_k_norm"))?,
                    post_attn_norm: gemma_norm(norm("post_attention_norm"))?,
                    ffn_norm: norm("ffn_norm")?,
                    post_ffn_norm: gemma_norm(norm("post_ffw_norm"))?,
                    qkv: fused(vec![t("attn_q")?, t("attn_k")?, t("attn_v")?])?,
                    o: qmatmul(t("attn_output")?)?,
                    gate_up: fused(vec![t("ffn_gate")?, t("ffn_up")?])?,
                    down: qmatmul(t("ffn_down")?)?,
                    window: if global { None } else { window },
                    rope_base: if global { global_base } else { local_base },
                })
            })
            .collect::<Result<_>>()?;
        Ok(Llm {
            family,
            embeddings,
            embed_scale: if gemma { (hidden as f64).sqrt() } else { 1.0 },
            hidden,
            heads,
            kv_heads,
            head_dim,
            vocab,
            context_length,
            layers,
            final_norm,
            output,
            device: device.clone(),
        })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Longest sequence the model was trained for, in tokens.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Layers, as [`LlmCache::new`] wants them.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Runs `tokens[r]` after what row `r` of `cache` holds (rows may add
    /// different numbers of tokens, none included) and returns the final hidden
    /// states [rows, n, hidden], n being the most tokens any row added; the
    /// states of a row's padding positions are meaningless.
    /// On error the cache is as it was before the call.
    pub fn forward(&self, cache: &mut LlmCache, tokens: &[Vec<u32>]) -> Result<Tensor> {
        // Writes land past the saved length, which the saved cache never reads.
        let saved = cache.share();
        let result = self.forward_unchecked(cache, tokens);
        if result.is_err() {
            *cache = saved;
        }
        result
    }

    fn forward_unchecked(&self, cache: &mut LlmCache, tokens: &[Vec<u32>]) -> Result<Tensor> {
        if let Some(bad) = tokens.iter().flatten().find(|&&t| t as usize >= self.vocab) {
            candle_core::bail!("token {bad} is outside the vocabulary of {}", self.vocab);
        }
        let rows = cache.rows();
        if tokens.len() != rows {
            candle_core::bail!("{} token rows for a cache of {rows} rows", tokens.len());
        }
        let n = tokens.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let past = cache.slots.first().map_or(0, Vec::len);
        // Right-pad every row's new tokens to n; padding runs token 0 and is masked.
        let mut ids = Vec::with_capacity(rows * n);
        let mut positions = Vec::with_capacity(rows * n);
        for (row, new) in cache.slots.iter_mut().zip(tokens) {
            let mut next = row.iter().flatten().count() as u32;
            for i in 0..n {
                ids.push(new.get(i).copied().unwrap_or(0));
                positions.push(next);
                if i < new.len() {
                    row.push(Some(next));
                    next += 1;
                } else {
                    row.push(None);
                }
            }
        }
        let mut x = match &self.embeddings {
            Embeddings::Dense(table) => {
                table.index_select(&Tensor::from_vec(ids, rows * n, &self.device)?, 0)?
            }
            Embeddings::Q8(table) => table.rows(&ids, &self.device)?,
        }
        .reshape((rows, n, self.hidden))?;
        if self.embed_scale != 1.0 {
            x = (x * self.embed_scale)?;
        }
        let tables = Tables::new(self, cache, &positions, past, n)?;
        for (layer, kv) in self.layers.iter().zip(&mut cache.kv) {
            let attended = self.attention(layer, &layer.attn_norm.forward(&x)?, kv, &tables)?;
            let attended = match &layer.post_attn_norm {
                Some(norm) => norm.forward(&attended)?,
                None => attended,
            };
            x = (&x + attended)?;
            let h = layer.ffn_norm.forward(&x)?;
            let [gate, up]: [Tensor; 2] = layer
                .gate_up
                .forward_split(&h)?
                .try_into()
                .map_err(|_| candle_core::Error::Msg("gate and up expected".into()))?;
            let gate = match self.family {
                Family::Llama => candle_nn::ops::silu(&gate)?,
                Family::Gemma3 => gate.gelu()?,
            };
            let ffn = layer.down.forward(&(gate * up)?)?;
            let ffn = match &layer.post_ffn_norm {
                Some(norm) => norm.forward(&ffn)?,
                None => ffn,
            };
            x = (&x + ffn)?;
        }
        Ok(x)
    }

    /// Logits [picks, vocab] at the given (row, index) positions of
    /// [`Llm::forward`]'s hidden states.
    pub fn logits(&self, hidden: &Tensor, picks: &[(usize, usize)]) -> Result<Tensor> {
        let (_, n, d) = hidden.dims3()?;
        let index: Vec<u32> = picks.iter().map(|&(r, i)| (r * n + i) as u32).collect();
        let index = Tensor::new(index, &self.device)?;
        let picked = hidden.reshape(((), d))?.index_select(&index, 0)?;
        self.output.forward(&self.final_norm.forward(&picked)?)
    }

    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        kv: &mut Option<(Tensor, Tensor)>,
        tables: &Tables,
    ) -> Result<Tensor> {
        let (rows, n, _) = x.dims3()?;
        let split = |t: Tensor, heads: usize| {
            t.reshape((rows, n, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let [q, k, v]: [Tensor; 3] = layer
            .qkv
            .forward_split(x)?
            .try_into()
            .map_err(|_| candle_core::Error::Msg("queries, keys and values expected".into()))?;
        let mut q = split(q, self.heads)?;
        let mut k = split(k, self.kv_heads)?;
        let v = split(v, self.kv_heads)?;
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let table = tables.for_layer(layer);
        let (cos, sin) = (&table.cos, &table.sin);
        let rope = match self.family {
            // GGUF llama exports permute q and k for interleaved pairs.
            Family::Llama => candle_nn::rotary_emb::rope_i,
            Family::Gemma3 => candle_nn::rotary_emb::rope,
        };
        let q = rope(&q, cos, sin)?;
        let k = rope(&k, cos, sin)?;
        let past = tables.past;
        // On the CPU the cache is kept in f16: reading it is most of what
        // attention costs when decoding, and half the bytes take half the time.
        let cpu = k.device().is_cpu() && k.dtype() == DType::F32;
        let (k, v) = if cpu {
            (k.to_dtype(DType::F16)?, v.to_dtype(DType::F16)?)
        } else {
            (k, v)
        };
        let (k_buffer, v_buffer) = match kv.take() {
            Some((kb, vb)) if kb.dim(2)? >= past + n => (kb, vb),
            old => {
                // Room for this pass and as much again, so buffers are
                // replaced a logarithmic number of times.
                let capacity = 2 * (past + n).max(32);
                let shape = (rows, self.kv_heads, capacity, self.head_dim);
                let kb = Tensor::zeros(shape, k.dtype(), k.device())?;
                let vb = Tensor::zeros(shape, v.dtype(), v.device())?;
                if let Some((ok, ov)) = old {
                    kb.slice_set(&ok.narrow(2, 0, past)?.contiguous()?, 2, 0)?;
                    vb.slice_set(&ov.narrow(2, 0, past)?.contiguous()?, 2, 0)?;
                }
                (kb, vb)
            }
        };
        k_buffer.slice_set(&k, 2, past)?;
        v_buffer.slice_set(&v, 2, past)?;
        let shape = AttentionShape {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            n,
            slots: past + n,
        };
        let out = if cpu {
            attention::attend(&q, &k_buffer, &v_buffer, &table.visible, &shape)?
        } else {
            attention::attend_candle(&q, &k_buffer, &v_buffer, &table.visible, &shape)?
        };
        *kv = Some((k_buffer, v_buffer));
        layer.o.forward(&out)
    }
}

/// Rotary tables and key visibility of one forward pass for one kind of
/// layer (global, or Gemma's sliding-window ones).
struct PositionTable {
    /// [rows, n, head_dim / 2]
    cos: Tensor,
    sin: Tensor,
    /// [rows, n, slots]: whether query (r, i) sees key slot j.
    visible: Vec<bool>,
}

/// The position tables of one forward pass.
struct Tables {
    /// Cache positions in use before this pass.
    past: usize,
    global: PositionTable,
    local: Option<PositionTable>,
}

impl Tables {
    fn new(
        model: &Llm,
        cache: &LlmCache,
        positions: &[u32],
        past: usize,
        n: usize,
    ) -> Result<Tables> {
        let build = |layer: &Layer| -> Result<PositionTable> {
            let half = model.head_dim / 2;
            let inv_freq: Vec<f32> = (0..half)
                .map(|i| {
                    layer
                        .rope_base
                        .powf(-((2 * i) as f32) / model.head_dim as f32)
                })
                .collect();
            let angles: Vec<f32> = positions
                .iter()
                .flat_map(|&p| inv_freq.iter().map(move |f| p as f32 * f))
                .collect();
            let rows = cache.rows();
            let angles = Tensor::from_vec(angles, (rows, n, half), &model.device)?;
            let slots = past + n;
            let mut visible = Vec::with_capacity(rows * n * slots);
            for (r, row) in cache.slots.iter().enumerate() {
                for i in 0..n {
                    // A padding query sees what the row's last token sees.
                    let query = row[past + i].unwrap_or(positions[r * n + i]);
                    visible.extend(row.iter().map(|slot| {
                        slot.is_some_and(|key| {
                            key <= query
                                && layer.window.is_none_or(|w| ((query - key) as usize) < w)
                        })
                    }));
                }
            }
            Ok(PositionTable {
                cos: angles.cos()?,
                sin: angles.sin()?,
                visible,
            })
        };
        let first = |global: bool| model.layers.iter().find(|l| l.window.is_none() == global);
        let global = build(
            first(true)
                .or(model.layers.first())
                .ok_or_else(|| candle_core::Error::Msg("the model has no layers".into()))?,
        )?;
        let local = first(false).map(build).transpose()?;
        Ok(Tables {
            past,
            global,
            local,
        })
    }

    fn for_layer(&self, layer: &Layer) -> &PositionTable {
        match (&self.local, layer.window) {
            (Some(local), Some(_)) => local,
            _ => &self.global,
        }
    }
}

/// Weight matrices applied to the same input: on the CPU stacked into one
/// of margin's batched 8-bit matrices ([`Q8Matrix`]), so the input is
/// quantised and the rows dispatched once; elsewhere candle's quantised
/// products, one per matrix.
enum Linear {
    Q8 {
        matrix: Arc<Q8Matrix>,
        sizes: Vec<usize>,
    },
    Candle(Vec<QMatMul>),
}

impl Linear {
    /// The product with the one matrix.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_split(x)?
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("no weight matrix".into()))
    }

    /// One product per matrix, in the order given at load.
    fn forward_split(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Linear::Q8 { matrix, sizes } if sizes.len() == 1 => Ok(vec![matrix.forward(x)?]),
            Linear::Q8 { matrix, sizes } => {
                let y = matrix.forward(x)?;
                let last = y.rank() - 1;
                let mut offset = 0;
                sizes
                    .iter()
                    .map(|&size| {
                        let part = y.narrow(last, offset, size)?.contiguous();
                        offset += size;
                        part
                    })
                    .collect()
            }
            Linear::Candle(matrices) => matrices.iter().map(|m| m.forward(x)).collect(),
        }
    }
}

fn qmatmul(weights: QTensor) -> Result<Linear> {
    fused(vec![weights])
}

fn fused(weights: Vec<QTensor>) -> Result<Linear> {
    let cpu = weights.iter().all(|w| w.device().is_cpu());
    let inner = |w: &QTensor| w.shape().dims().last().copied().unwrap_or(0);
    if cpu && weights.iter().all(|w| inner(w) % 32 == 0) {
        let sizes = weights.iter().map(|w| w.shape().dims()[0]).collect();
        let parts = weights
            .iter()
            .map(Q8Matrix::from_qtensor)
            .collect::<Result<Vec<_>>>()?;
        return Ok(Linear::Q8 {
            matrix: Arc::new(Q8Matrix::stack(parts)?),
            sizes,
        });
    }
    Ok(Linear::Candle(
        weights
            .into_iter()
            .map(QMatMul::from_qtensor)
            .collect::<Result<_>>()?,
    ))
}

/// Log-softmax of every row of `logits` [rows, vocab], rows spread over
/// candle's worker pool: one pass for the maximum, one for the sum, one to
/// write (candle's composition of operations makes six, with allocations).
pub(crate) fn log_softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let mut rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
    let base = rows.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(rows.len(), |range| {
        for r in range {
            // SAFETY: work item `r` alone touches row `r`, which outlives the pool call.
            let row = unsafe { &mut *(base as *mut Vec<f32>).add(r) };
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|x| (x - max).exp()).sum();
            let shift = max + sum.ln();
            row.iter_mut().for_each(|x| *x -= shift);
        }
    });
    Ok(rows)
}

/// Log-softmax over the last dimension, in f32 whatever the model computes in.
pub(crate) fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, candle_core::D::Minus1)
}
