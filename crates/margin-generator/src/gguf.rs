//! Decoder LLMs from GGUF files (llama family, Gemma 3) as [`Generator`]s:
//! the k prompts of a question are prefilled as one padded batch, the prefix
//! they share (system prompt, chat header) once.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

use crate::chat::ChatTemplate;
use crate::generator::{
    check_contexts, check_parents, check_per_row, distributions_with, gather, score_with,
    Generator, Limits, Session, SpecialTokens,
};
use crate::llm::{log_softmax, log_softmax_rows, Llm, LlmCache};
use margin_core::{OperationError, OperationResult};

/// A decoder LLM loaded from one GGUF file.
pub struct GgufModel {
    name: String,
    llm: Llm,
    chat_template: Option<ChatTemplate>,
    eos_token_id: u32,
    bos_token_id: Option<u32>,
    add_bos: bool,
}

impl GgufModel {
    /// Loads `path`, choosing the architecture from its `general.architecture`.
    pub fn load(name: &str, path: &Path, device: &Device) -> OperationResult<GgufModel> {
        let error = |e: &dyn std::fmt::Display| {
            OperationError::model(name, format!("{}: {e}", path.display()))
        };
        let mut file = std::fs::File::open(path).map_err(|e| OperationError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| error(&e))?;
        let meta_u32 = |key: &str| content.metadata.get(key).and_then(|v| v.to_u32().ok());
        let eos_token_id = meta_u32("tokenizer.ggml.eos_token_id")
            .ok_or_else(|| error(&"the file names no end-of-sequence token"))?;
        let bos_token_id = meta_u32("tokenizer.ggml.bos_token_id");
        let add_bos = content
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let architecture = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let llm =
            Llm::from_gguf(&architecture, &content, &mut file, device).map_err(|e| error(&e))?;
        Ok(GgufModel {
            name: name.to_string(),
            chat_template: ChatTemplate::from_gguf(&content),
            llm,
            eos_token_id,
            bos_token_id,
            add_bos,
        })
    }

    /// The chat template in the file's metadata, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// `ids` of a prompt as the model expects them: with BOS in front where
    /// the file asks for one (Gemma) and the tokenizer did not add it.
    pub fn with_bos(&self, ids: Vec<u32>) -> Vec<u32> {
        match self.bos_token_id.filter(|_| self.add_bos) {
            Some(bos) if ids.first() != Some(&bos) => std::iter::once(bos).chain(ids).collect(),
            _ => ids,
        }
    }

    fn error(&self, e: candle_core::Error) -> OperationError {
        OperationError::model(&self.name, e)
    }
}

/// Length of the prefix all `contexts` share, leaving every context at
/// least one token of its own (its last position gives its first log-probs).
fn shared_prefix(contexts: &[Vec<u32>]) -> usize {
    let shortest = contexts.iter().map(Vec::len).min().unwrap_or(0);
    let first = &contexts[0];
    (0..shortest.saturating_sub(1))
        .take_while(|&i| contexts.iter().all(|c| c[i] == first[i]))
        .count()
}

impl Generator for GgufModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocab_size(&self) -> usize {
        self.llm.vocab_size()
    }

    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens {
            eos: self.eos_token_id,
            pad: self.eos_token_id,
            bos: self.bos_token_id,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_context_tokens: self.llm.context_length(),
            max_output_tokens: self.llm.context_length(),
        }
    }

    fn output_start(&self) -> Vec<u32> {
        Vec::new()
    }

    fn prepare(&self, contexts: &[Vec<u32>]) -> OperationResult<Box<dyn Session + '_>> {
        check_contexts(&self.name, contexts, self.limits(), self.vocab_size())?;
        let layers = self.llm.layer_count();
        let shared = if contexts.len() > 1 {
            shared_prefix(contexts)
        } else {
            0
        };
        let (mut cache, rest): (LlmCache, Vec<Vec<u32>>) = if shared > 0 {
            let mut one = LlmCache::new(1, layers);
            self.llm
                .forward(&mut one, &[contexts[0][..shared].to_vec()])
                .map_err(|e| self.error(e))?;
            let all = one
                .select(&vec![0; contexts.len()])
                .map_err(|e| self.error(e))?;
            (all, contexts.iter().map(|c| c[shared..].to_vec()).collect())
        } else {
            (LlmCache::new(contexts.len(), layers), contexts.to_vec())
        };
        let hidden = self
            .llm
            .forward(&mut cache, &rest)
            .map_err(|e| self.error(e))?;
        let picks: Vec<(usize, usize)> = rest
            .iter()
            .enumerate()
            .map(|(r, t)| (r, t.len() - 1))
            .collect();
        let log_probs = self
            .llm
            .logits(&hidden, &picks)
            .and_then(|l| log_softmax_rows(&l))
            .map_err(|e| self.error(e))?;
        Ok(Box::new(GgufSession {
            model: self,
            cache,
            log_probs,
        }))
    }
}

/// Rows of a [`GgufModel`]: their KV cache and next-token log-probabilities.
struct GgufSession<'a> {
    model: &'a GgufModel,
    cache: LlmCache,
    /// [rows][vocab]
    log_probs: Vec<Vec<f32>>,
}

impl GgufSession<'_> {
    /// Runs `tokens` after each row of `cache`; logits [picks, vocab] after
    /// every (row, index) of `picks`.
    fn run(
        &self,
        cache: &mut LlmCache,
        tokens: &[Vec<u32>],
        picks: &[(usize, usize)],
    ) -> OperationResult<Tensor> {
        let llm = &self.model.llm;
        self.check_tokens(cache, tokens)?;
        (|| {
            let hidden = llm.forward(cache, tokens)?;
            llm.logits(&hidden, picks)
        })()
        .map_err(|e| self.model.error(e))
    }

    /// Refuses tokens outside the vocabulary and rows that would outgrow
    /// the model's context.
    fn check_tokens(&self, cache: &LlmCache, tokens: &[Vec<u32>]) -> OperationResult<()> {
        let llm = &self.model.llm;
        let vocab = llm.vocab_size();
        if let Some(bad) = tokens.iter().flatten().find(|&&t| t as usize >= vocab) {
            return Err(OperationError::bad_input(
                "tokens",
                format!("token {bad} is outside the vocabulary of {vocab}"),
            ));
        }
        let longest = (0..cache.rows())
            .map(|r| cache.len(r) + tokens[r].len())
            .max()
            .unwrap_or(0);
        if longest > llm.context_length() {
            return Err(OperationError::bad_input(
                "tokens",
                format!(
                    "a row would reach {longest} tokens; {} takes at most {}",
                    self.model.name,
                    llm.context_length()
                ),
            ));
        }
        Ok(())
    }
}

impl GgufSession<'_> {
    /// Log-probabilities [picks, vocab] after each picked (row, index) of
    /// `inputs` run after every row; the session's cache is shared, never extended.
    fn teacher_forced(
        &self,
        inputs: &[Vec<u32>],
        picks: &[(usize, usize)],
    ) -> OperationResult<Tensor> {
        let mut cache = self.cache.share();
        let logits = self.run(&mut cache, inputs, picks)?;
        log_softmax(&logits).map_err(|e| self.model.error(e))
    }
}

/// Picks whose logits are materialised at once when only the targets'
/// log-probabilities are wanted (Gemma 3's 262k vocabulary: ~270 MB a chunk).
const SCORE_CHUNK: usize = 256;

impl GgufSession<'_> {
    /// log p(wanted[i] | pick i) for every pick, the logits made a chunk of
    /// picks at a time: thorough rescoring asks for thousands.
    fn teacher_forced_scores(
        &self,
        inputs: &[Vec<u32>],
        picks: &[(usize, usize)],
        wanted: &[u32],
    ) -> OperationResult<Vec<f32>> {
        let llm = &self.model.llm;
        self.check_tokens(&self.cache, inputs)?;
        let mut cache = self.cache.share();
        let hidden = llm
            .forward(&mut cache, inputs)
            .map_err(|e| self.model.error(e))?;
        let mut scores = Vec::with_capacity(picks.len());
        for (picks, wanted) in picks.chunks(SCORE_CHUNK).zip(wanted.chunks(SCORE_CHUNK)) {
            let log_probs = llm
                .logits(&hidden, picks)
                .and_then(|l| log_softmax(&l))
                .map_err(|e| self.model.error(e))?;
            scores.extend(gather(&log_probs, wanted)?);
        }
        Ok(scores)
    }
}

impl Session for GgufSession<'_> {
    fn rows(&self) -> usize {
        self.cache.rows()
    }

    fn log_probs(&self) -> OperationResult<Vec<Vec<f32>>> {
        Ok(self.log_probs.clone())
    }

    fn select(&mut self, parents: &[usize]) -> OperationResult<()> {
        check_parents(self.rows(), parents)?;
        self.cache = self
            .cache
            .select(parents)
            .map_err(|e| self.model.error(e))?;
        self.log_probs = parents.iter().map(|&p| self.log_probs[p].clone()).collect();
        Ok(())
    }

    fn fork(&self, parents: &[usize]) -> OperationResult<Box<dyn Session + '_>> {
        check_parents(self.rows(), parents)?;
        Ok(Box::new(GgufSession {
            model: self.model,
            // Selection copies into new buffers: the fork never writes ours.
            cache: self
                .cache
                .select(parents)
                .map_err(|e| self.model.error(e))?,
            log_probs: parents.iter().map(|&p| self.log_probs[p].clone()).collect(),
        }))
    }

    fn advance(&mut self, tokens: &[u32]) -> OperationResult<()> {
        check_per_row(self.rows(), "tokens", tokens.len())?;
        let rows: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
        let picks: Vec<(usize, usize)> = (0..rows.len()).map(|r| (r, 0)).collect();
        let mut cache = self.cache.share();
        let logits = self.run(&mut cache, &rows, &picks)?;
        self.log_probs = log_softmax_rows(&logits).map_err(|e| self.model.error(e))?;
        self.cache = cache;
        Ok(())
    }

    fn score(&self, targets: &[Vec<u32>]) -> OperationResult<Vec<Vec<f32>>> {
        score_with(
            self,
            self.model.llm.vocab_size(),
            targets,
            |inputs, picks, wanted| self.teacher_forced_scores(inputs, picks, wanted),
        )
    }

    fn distributions(&self, targets: &[Vec<u32>]) -> OperationResult<Vec<Vec<Vec<f32>>>> {
        distributions_with(
            self,
            self.model.llm.vocab_size(),
            targets,
            |inputs, picks| self.teacher_forced(inputs, picks),
        )
    }
}
