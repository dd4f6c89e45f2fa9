//! `margin generate "PROMPT"`: a generator alone, to try it.

use std::time::Instant;

use clap::Args;
use margin_core::Config;
use margin_generator::chat::ChatMessage;
use margin_generator::decoding::{
    beam_search, greedy_search, sample_search, BeamSettings, SamplingSettings, StepRules,
};
use margin_generator::Stepper;

/// Arguments of `margin generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt (sent as a user turn through the model's chat template, if it has one).
    pub prompt: String,
    /// Catalogue name or folder of the generator (default: models.generator).
    #[arg(long)]
    pub model: Option<String>,
    /// Most tokens generated.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// End of sequence is not allowed before this many tokens.
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
    /// Beam search with this many beams (1: greedy).
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// Beam search: hypotheses are scored sum(log p) / length^this.
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f32,
    /// N-grams of this size may occur only once (0: off).
    #[arg(long, default_value_t = 0)]
    pub no_repeat_ngram_size: usize,
    /// Sample at this temperature instead of searching.
    #[arg(long, conflicts_with = "beams")]
    pub temperature: Option<f32>,
    /// Nucleus of sampling (with --temperature).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Send the prompt as plain text, without the chat template.
    #[arg(long)]
    pub raw: bool,
}

/// Runs `margin generate`.
pub fn run(config: &Config, args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.prompt.trim().is_empty(), "prompt: must not be empty");
    anyhow::ensure!(
        args.max_new_tokens > 0,
        "--max-new-tokens: must be at least 1"
    );
    anyhow::ensure!(args.beams > 0, "--beams: must be at least 1");
    anyhow::ensure!(
        args.min_new_tokens <= args.max_new_tokens,
        "--min-new-tokens: must not exceed --max-new-tokens ({})",
        args.max_new_tokens
    );
    let loaded = crate::wiring::generator(config, args.model.as_deref())?;
    let text = match (&loaded.chat_template, args.raw) {
        (Some(template), false) => {
            template.render(&[ChatMessage::new("user", args.prompt.clone())], true)?
        }
        _ => args.prompt.clone(),
    };
    let prompt = loaded.tokenize(&text)?;
    let model = loaded.model.as_ref();
    // A decoder-only model's output follows the prompt; BART's starts afresh.
    let start = match model.output_start() {
        s if s.is_empty() => prompt.clone(),
        s => s,
    };
    let special = model.special_tokens();
    let rules = StepRules {
        eos_token_id: special.eos,
        max_length: start.len() + args.max_new_tokens,
        min_length: start.len() + args.min_new_tokens,
        no_repeat_ngram_size: args.no_repeat_ngram_size,
        ..StepRules::default()
    };
    let began = Instant::now();
    let session = model.prepare(std::slice::from_ref(&prompt))?;
    let prefill = began.elapsed().as_secs_f64();
    let mut stepper = Stepper::new(session, args.beams);
    let step = |rows: &[Vec<u32>]| stepper.next_log_probs(rows);
    let mut output = match (args.temperature, args.beams) {
        (Some(temperature), _) => {
            let sampling = SamplingSettings {
                temperature,
                top_p: args.top_p,
                seed: args.seed,
            };
            sample_search(vec![start.clone()], &rules, special.pad, sampling, step)?.remove(0)
        }
        (None, 1) => greedy_search(vec![start.clone()], &rules, special.pad, step)?.remove(0),
        (None, beams) => {
            let settings = BeamSettings {
                num_beams: beams,
                length_penalty: args.length_penalty,
                early_stopping: true,
                num_return_sequences: 1,
                pad_token_id: special.pad,
            };
            beam_search(vec![start.clone()], &rules, &settings, step)?
                .remove(0)
                .remove(0)
                .tokens
        }
    };
    let seconds = began.elapsed().as_secs_f64();
    let generated = output.split_off(start.len());
    let new_tokens = generated
        .iter()
        .position(|&t| t == special.eos)
        .map_or(generated.len(), |eos| eos + 1);
    println!("{}", loaded.detokenize(&generated)?.trim());
    eprintln!(
        "{} prompt tokens (prefill {:.2} s) + {new_tokens} generated in {seconds:.2} s ({:.1} tokens/s), {}",
        prompt.len(),
        prefill,
        new_tokens as f64 / (seconds - prefill).max(1e-9),
        loaded.name
    );
    Ok(())
}
