//! `margin generate "PROMPT"`: a generator alone, to try it.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use margin_core::Config;
use margin_generator::chat::ChatMessage;
use margin_generator::decoding::{greedy_search, sample_search, SamplingSettings, StepRules};
use margin_generator::gguf::GgufModel;
use margin_models::ModelStore;

/// Arguments of `margin generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt (sent as a user turn through the model's chat template, if it has one).
    pub prompt: String,
    /// Catalogue name or folder of a GGUF model (default: models.generator).
    #[arg(long)]
    pub model: Option<String>,
    /// Most tokens generated.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sample at this temperature instead of greedy decoding.
    #[arg(long)]
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
    let name = args.model.as_deref().unwrap_or(&config.models.generator);
    let dir = ModelStore::from_config(config)?.ensure(name)?;
    let gguf = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "gguf"))
        .with_context(|| format!("model `{name}`: no .gguf file in {}", dir.display()))?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
    let mut model = GgufModel::load(name, &gguf, &crate::wiring::device(config.encoder.device)?)?;

    let text = match (model.chat_template(), args.raw) {
        (Some(template), false) => {
            template.render(&[ChatMessage::new("user", args.prompt.clone())], true)?
        }
        _ => args.prompt.clone(),
    };
    let encoded = tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?;
    let prompt = model.with_bos(encoded.get_ids().to_vec());
    let eos = model
        .eos_token_id()
        .context("the GGUF file names no end-of-sequence token")?;
    let rules = StepRules {
        eos_token_id: eos,
        max_length: prompt.len() + args.max_new_tokens,
        ..StepRules::default()
    };
    let start = Instant::now();
    let step = |rows: &[Vec<u32>]| Ok(vec![model.next_token_log_probs(&rows[0])?]);
    let mut rows = match args.temperature {
        None => greedy_search(vec![prompt.clone()], &rules, eos, step)?,
        Some(temperature) => {
            let sampling = SamplingSettings {
                temperature,
                top_p: args.top_p,
                seed: args.seed,
            };
            sample_search(vec![prompt.clone()], &rules, eos, sampling, step)?
        }
    };
    let generated = rows.remove(0).split_off(prompt.len());
    let seconds = start.elapsed().as_secs_f64();
    let answer = tokenizer
        .decode(&generated, true)
        .map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
    println!("{}", answer.trim());
    eprintln!(
        "{} prompt + {} generated tokens in {seconds:.2} s ({:.1} tokens/s), {name}",
        prompt.len(),
        generated.len(),
        generated.len() as f64 / seconds
    );
    Ok(())
}
