//! Questions in, cited answers out. An [`Answerer`] owns a generator with its
//! tokenizer; [`Answerer::prepare`] turns a question and its retrieved
//! passages into generator inputs and a document prior, and
//! [`Answerer::answer`] decodes any number of prepared questions that share
//! [`AskSettings`] as one batch of generator rows (the CLI asks one; the
//! server batches the questions waiting in its queue), then attributes each
//! answer to its passages.

#![warn(missing_docs)]

use std::time::Duration;

use margin_core::config::RagConfig;
use margin_core::{OperationError, OperationResult};
use margin_generator::chat::{ChatMessage, ChatTemplate};
use margin_generator::Generator;
use margin_index::SearchHit;
use margin_rag::attribution::posterior;
use margin_rag::inputs::{bart_context, fill_prompt};
use margin_rag::sequence::{self, SequenceDecoding};
use margin_rag::{document_log_prior, token, DecodeSettings, Prefilled, Question, Timings};
use serde::Serialize;

/// A generator with what turns text into its tokens and back.
pub struct LoadedGenerator {
    /// Catalogue name or folder it was loaded from.
    pub name: String,
    /// The model.
    pub model: Box<dyn Generator>,
    /// Its tokenizer (`tokenizer.json` beside the weights).
    pub tokenizer: tokenizers::Tokenizer,
    /// The chat template a GGUF file carries, for decoder-only models.
    pub chat_template: Option<ChatTemplate>,
    /// Beginning-of-sequence token to put in front of prompts the tokenizer
    /// left without one (Gemma).
    pub prompt_bos: Option<u32>,
}

impl LoadedGenerator {
    /// Token ids of `text` as the model takes a prompt.
    pub fn tokenize(&self, text: &str) -> OperationResult<Vec<u32>> {
        let ids = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| self.error(format!("tokenizing: {e}")))?
            .get_ids()
            .to_vec();
        Ok(match self.prompt_bos {
            Some(bos) if ids.first() != Some(&bos) => std::iter::once(bos).chain(ids).collect(),
            _ => ids,
        })
    }

    /// Text of generated `ids`, special tokens left out.
    pub fn detokenize(&self, ids: &[u32]) -> OperationResult<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| self.error(format!("decoding output: {e}")))
    }

    fn error(&self, message: String) -> OperationError {
        OperationError::Model {
            model: self.name.clone(),
            message,
        }
    }
}

/// Which marginalisation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RagMode {
    /// RAG-Token: the passages are marginalised at every token.
    Token,
    /// RAG-Sequence: once per whole answer, with the given decoding.
    Sequence(SequenceDecoding),
}

/// How questions are answered; questions batch together only when these agree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AskSettings {
    /// RAG-Token or RAG-Sequence.
    pub mode: RagMode,
    /// Beams (1: greedy).
    pub beams: usize,
    /// Most tokens in an answer.
    pub max_new_tokens: usize,
    /// The prior is softmax(score / this).
    pub prior_temperature: f32,
}

impl AskSettings {
    /// The configured defaults for `mode`.
    pub fn from_config(rag: &RagConfig, mode: RagMode) -> AskSettings {
        AskSettings {
            mode,
            beams: rag.beams,
            max_new_tokens: rag.max_new_tokens,
            prior_temperature: rag.prior_temperature,
        }
    }

    /// Refuses settings no answer can come from.
    pub fn check(&self) -> OperationResult<()> {
        for (what, value) in [
            ("beams", self.beams),
            ("max_new_tokens", self.max_new_tokens),
        ] {
            if value == 0 {
                return Err(OperationError::bad_input(what, "must be at least 1"));
            }
        }
        if !(self.prior_temperature > 0.0 && self.prior_temperature.is_finite()) {
            return Err(OperationError::bad_input(
                "prior_temperature",
                "must be a number above 0",
            ));
        }
        Ok(())
    }

    /// The name of the mode as people read it: `token`, `sequence (thorough)`.
    pub fn mode_name(&self) -> String {
        match self.mode {
            RagMode::Token => "token".into(),
            RagMode::Sequence(d) => format!("sequence ({d:?})").to_lowercase(),
        }
    }
}

/// A question made ready for the generator.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The question as asked.
    pub question: String,
    /// Its retrieved passages, best first.
    pub hits: Vec<SearchHit>,
    /// Generator inputs and document prior.
    pub rag: Question,
    /// How it is to be answered.
    pub settings: AskSettings,
    /// Whether [`Answerer::answer`]'s `on_text` hears this question's
    /// previews (off by default: making them detokenizes at every step).
    pub previews: bool,
}

impl Prepared {
    /// Whether `other` can be decoded in the same batch as this question.
    pub fn batches_with(&self, other: &Prepared) -> bool {
        self.settings == other.settings && self.rag.contexts.len() == other.rag.contexts.len()
    }
}

/// A passage an answer cites.
#[derive(Debug, Clone, Serialize)]
pub struct Citation {
    /// Passage id (`doc#position`).
    pub passage_id: String,
    /// Its document's id.
    pub doc_id: String,
    /// Title.
    pub title: String,
    /// Where the document came from.
    pub source: String,
    /// The passage text.
    pub text: String,
    /// Retrieval score.
    pub score: f64,
    /// p(z|x)
    pub prior: f32,
    /// p(z|x,y)
    pub posterior: f32,
}

/// Where answering spent its time; shared by every question of a batch.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AnswerTimings {
    /// Contexts through the generator.
    pub prefill: Duration,
    /// Choosing tokens.
    pub decode: Duration,
    /// RAG-Sequence thorough rescoring.
    pub rescore: Duration,
    /// Posterior of each passage (RAG-Token: a teacher-forced pass).
    pub attribute: Duration,
    /// Questions decoded in the same batch.
    pub batch: usize,
}

/// An answer with its citations, most probable passage first.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The answer text.
    pub answer: String,
    /// One per retrieved passage, by posterior, highest first.
    pub citations: Vec<Citation>,
    /// Where the time went.
    pub timings: AnswerTimings,
}

/// Answers questions with one generator.
pub struct Answerer {
    generator: LoadedGenerator,
    rag: RagConfig,
}

impl Answerer {
    /// An answerer over `generator`, building inputs as `rag` says.
    pub fn new(generator: LoadedGenerator, rag: RagConfig) -> Answerer {
        Answerer { generator, rag }
    }

    /// The generator's name.
    pub fn model_name(&self) -> &str {
        &self.generator.name
    }

    /// The generator and its tokenizer.
    pub fn generator(&self) -> &LoadedGenerator {
        &self.generator
    }

    /// Builds the generator inputs and prior of `question` over `hits`.
    pub fn prepare(
        &self,
        question: &str,
        hits: Vec<SearchHit>,
        settings: AskSettings,
    ) -> OperationResult<Prepared> {
        check_question(question, &settings)?;
        if hits.is_empty() {
            return Err(OperationError::bad_input(
                "question",
                "no passages found for it: is anything indexed?",
            ));
        }
        let scores: Vec<f32> = hits.iter().map(|h| h.score as f32).collect();
        let doc_log_prior = document_log_prior(&scores, settings.prior_temperature)?;
        let contexts = hits
            .iter()
            .map(|h| {
                self.context(
                    settings.max_new_tokens,
                    Some((&h.passage.title, &h.passage.text)),
                    question,
                )
            })
            .collect::<OperationResult<Vec<_>>>()?;
        Ok(Prepared {
            question: question.to_string(),
            hits,
            rag: Question {
                contexts,
                doc_log_prior,
            },
            settings,
            previews: false,
        })
    }

    /// The closed-book baseline of `question`: the generator answers from its
    /// own weights, with no passages (one context, prior 1; the answer has no
    /// citations). Decoded like any other prepared question.
    pub fn prepare_closed_book(
        &self,
        question: &str,
        settings: AskSettings,
    ) -> OperationResult<Prepared> {
        check_question(question, &settings)?;
        Ok(Prepared {
            question: question.to_string(),
            hits: Vec::new(),
            rag: Question {
                contexts: vec![self.context(settings.max_new_tokens, None, question)?],
                doc_log_prior: vec![0.0],
            },
            settings,
            previews: false,
        })
    }

    /// Answers `batch` (questions that [`Prepared::batches_with`] the first)
    /// as one batch of generator rows. `on_text` hears, while decoding, the
    /// leading hypothesis of each question that asked for [`Prepared::previews`], as text (a preview: beam search and
    /// RAG-Sequence rescoring may still choose another).
    pub fn answer(
        &self,
        batch: &[Prepared],
        on_text: &mut dyn FnMut(usize, &str),
    ) -> OperationResult<Vec<Answer>> {
        let mode = check_batch(batch)?.mode;
        Ok(self.decode(batch, &[mode], on_text)?.remove(0))
    }

    /// Answers `batch` in each of `modes` (the other settings as the batch
    /// has them), reading the passages once: the prefill is shared, and each
    /// answer's `timings.prefill` is that one prefill, so its timings are
    /// what the mode costs alone. Answers per mode, then per question.
    pub fn answer_in_modes(
        &self,
        batch: &[Prepared],
        modes: &[RagMode],
    ) -> OperationResult<Vec<Vec<Answer>>> {
        check_batch(batch)?;
        self.decode(batch, modes, &mut |_, _| {})
    }

    /// Decodes a checked batch once per mode from one prefill.
    fn decode(
        &self,
        batch: &[Prepared],
        modes: &[RagMode],
        on_text: &mut dyn FnMut(usize, &str),
    ) -> OperationResult<Vec<Vec<Answer>>> {
        let settings = batch[0].settings;
        let model = self.generator.model.as_ref();
        let start = model.output_start();
        let special = model.special_tokens();
        let decode = DecodeSettings {
            num_beams: settings.beams,
            max_length: start.len() + settings.max_new_tokens,
            min_length: 0,
            no_repeat_ngram_size: 0,
            length_penalty: 1.0,
            early_stopping: true,
            forced_bos_token_id: None,
            forced_eos_token_id: None,
        };
        let questions: Vec<Question> = batch.iter().map(|p| p.rag.clone()).collect();
        let mut shared = Timings::default();
        let prefilled = Prefilled::new(model, questions, &mut shared)?;
        let mut preview = |q: usize, tokens: &[u32]| {
            if !batch[q].previews {
                return;
            }
            let answer = answer_tokens(tokens, start.len(), special.eos, special.pad);
            if let Ok(text) = self.generator.detokenize(&answer) {
                on_text(q, text.trim_start());
            }
        };
        let mut by_mode = Vec::with_capacity(modes.len());
        for &mode in modes {
            let mut timings = shared;
            // Per question: the output tokens and log p(y|x,z) per passage.
            let outputs: Vec<(Vec<u32>, Vec<f32>)> = match mode {
                RagMode::Token => token::generate_prefilled(
                    model,
                    &prefilled,
                    &decode,
                    &mut timings,
                    &mut preview,
                )?
                .into_iter()
                .map(|a| (a.tokens, a.per_doc))
                .collect(),
                RagMode::Sequence(decoding) => sequence::generate_prefilled(
                    model,
                    &prefilled,
                    &decode,
                    decoding,
                    1,
                    &mut timings,
                    &mut preview,
                )?
                .into_iter()
                .map(|mut answers| {
                    let best = answers.remove(0);
                    (best.tokens, best.per_doc)
                })
                .collect(),
            };
            let timings = AnswerTimings {
                prefill: timings.prefill,
                decode: timings.decode,
                rescore: timings.rescore,
                attribute: timings.attribute,
                batch: batch.len(),
            };
            let answers = outputs
                .into_iter()
                .zip(batch)
                .map(|((tokens, per_doc), prepared)| {
                    let text = self.generator.detokenize(&answer_tokens(
                        &tokens,
                        start.len(),
                        special.eos,
                        special.pad,
                    ))?;
                    Ok(Answer {
                        answer: text.trim().to_string(),
                        citations: citations(prepared, &per_doc),
                        timings,
                    })
                })
                .collect::<OperationResult<Vec<_>>>()?;
            by_mode.push(answers);
        }
        Ok(by_mode)
    }

    /// The generator input for one passage: BART's "title / text // question",
    /// cut to rag.max_context_tokens, or rag.prompt through a decoder LLM's
    /// chat template. Without a passage (closed book): the question alone for
    /// BART, rag.closed_book_prompt for decoder LLMs.
    fn context(
        &self,
        max_new_tokens: usize,
        passage: Option<(&str, &str)>,
        question: &str,
    ) -> OperationResult<Vec<u32>> {
        let loaded = &self.generator;
        let limit = loaded.model.limits().max_context_tokens;
        if !loaded.model.output_start().is_empty() {
            let input = match passage {
                Some((title, text)) => bart_context(title, text, question),
                None => question.to_string(),
            };
            // With BART's special tokens, as transformers' RAG tokenises them;
            // truncation keeps the closing EOS.
            let mut ids = loaded
                .tokenizer
                .encode(input, true)
                .map_err(|e| loaded.error(format!("tokenizing: {e}")))?
                .get_ids()
                .to_vec();
            let cut = match self.rag.max_context_tokens {
                0 => limit,
                n => n.min(limit),
            };
            if ids.len() > cut && cut > 1 {
                let last = ids[ids.len() - 1];
                ids.truncate(cut - 1);
                ids.push(last);
            }
            return Ok(ids);
        }
        let prompt = match passage {
            Some((title, text)) => fill_prompt(&self.rag.prompt, title, text, question),
            None => fill_prompt(&self.rag.closed_book_prompt, "", "", question),
        };
        let text = match &loaded.chat_template {
            Some(template) => template.render(&[ChatMessage::new("user", prompt)], true)?,
            None => prompt,
        };
        let ids = loaded.tokenize(&text)?;
        // The answer follows the prompt in the same context window.
        if ids.len() + max_new_tokens > limit {
            return Err(OperationError::bad_input(
                "question",
                format!(
                    "a prompt has {} tokens and the answer may take {max_new_tokens} more; {} takes at most {limit}",
                    ids.len(),
                    loaded.name
                ),
            ));
        }
        Ok(ids)
    }
}

/// The settings of `batch`, refusing an empty batch or one whose questions
/// cannot share a batch with the first.
fn check_batch(batch: &[Prepared]) -> OperationResult<AskSettings> {
    let first = batch
        .first()
        .ok_or_else(|| OperationError::bad_input("questions", "at least one is needed"))?;
    if let Some(i) = batch.iter().position(|p| !first.batches_with(p)) {
        return Err(OperationError::bad_input(
            format!("question {i}"),
            "its settings or passage count differ from the first question's",
        ));
    }
    Ok(first.settings)
}

/// Refuses a question or settings no answer can come from.
fn check_question(question: &str, settings: &AskSettings) -> OperationResult<()> {
    settings.check()?;
    if question.trim().is_empty() {
        return Err(OperationError::bad_input("question", "must not be empty"));
    }
    Ok(())
}

/// The citations of an answer whose per-passage log-likelihoods are `per_doc`,
/// by posterior.
fn citations(prepared: &Prepared, per_doc: &[f32]) -> Vec<Citation> {
    let prior = &prepared.rag.doc_log_prior;
    let posteriors = posterior(prior, per_doc);
    let mut citations: Vec<Citation> = prepared
        .hits
        .iter()
        .zip(prior)
        .zip(&posteriors)
        .map(|((hit, p), post)| Citation {
            passage_id: hit.passage.id.clone(),
            doc_id: hit.passage.doc_id.clone(),
            title: hit.passage.title.clone(),
            source: hit.passage.source.clone(),
            text: hit.passage.text.clone(),
            score: hit.score,
            prior: p.exp(),
            posterior: *post,
        })
        .collect();
    citations.sort_by(|a, b| b.posterior.total_cmp(&a.posterior));
    citations
}

/// The generated tokens after the start tokens, up to (not including) EOS,
/// without the padding a finished row is filled with.
fn answer_tokens(tokens: &[u32], start: usize, eos: u32, pad: u32) -> Vec<u32> {
    let mut answer: Vec<u32> = tokens[start.min(tokens.len())..]
        .iter()
        .copied()
        .take_while(|&t| t != eos)
        .collect();
    while answer.last() == Some(&pad) {
        answer.pop();
    }
    answer
}
