//! `margin bench generate`: prefill and decode speed and peak memory of a
//! generator over one passage-conditioned prompt, over k prompts one after
//! another, and over the same k prompts as one batch (how RAG runs them).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use margin_core::Config;
use margin_generator::chat::ChatMessage;
use margin_generator::decoding::argmax;
use margin_generator::Generator;
use serde::Serialize;

use crate::commands::bench::peak_rss_mib;
use margin_answer::LoadedGenerator;

/// Arguments of `margin bench generate`.
#[derive(Debug, Args)]
pub struct GenerateBench {
    /// Generators to measure, catalogue names or folders (default: models.generator).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Documents whose first passages become the k contexts.
    #[arg(long, default_value = "corpora/demo")]
    pub corpus: PathBuf,
    /// Contexts run as one batch (RAG's k).
    #[arg(long, default_value_t = 5)]
    pub contexts: usize,
    /// Tokens generated per context (end of sequence is not allowed earlier).
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Each run is repeated this many times; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One way of running the contexts.
#[derive(Debug, Default, Serialize)]
struct Phase {
    /// `single` (the first context), `sequential` (k contexts one by one) or `batched`.
    name: &'static str,
    contexts: usize,
    prompt_tokens: usize,
    prefill_seconds: f64,
    prefill_tokens_per_second: f64,
    new_tokens: usize,
    decode_seconds: f64,
    decode_tokens_per_second: f64,
    peak_rss_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ModelReport {
    model: String,
    device: String,
    threads: usize,
    phases: Vec<Phase>,
    /// Batched decode tokens/s over sequential decode tokens/s.
    batched_speedup: f64,
}

/// Runs `margin bench generate`.
pub fn run(config: &Config, args: GenerateBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.contexts > 0, "--contexts: must be at least 1");
    anyhow::ensure!(args.new_tokens > 0, "--new-tokens: must be at least 1");
    anyhow::ensure!(args.repeats > 0, "--repeats: must be at least 1");
    let (passages, _) = crate::wiring::passages(config, std::slice::from_ref(&args.corpus), true)?;
    anyhow::ensure!(
        passages.len() >= args.contexts,
        "{} gives {} passages; --contexts asks for {}",
        args.corpus.display(),
        passages.len(),
        args.contexts
    );
    let models = if args.models.is_empty() {
        vec![config.models.generator.clone()]
    } else {
        args.models.clone()
    };
    let mut reports = Vec::new();
    for name in &models {
        let loaded = crate::wiring::generator(config, Some(name))?;
        let contexts = passages[..args.contexts]
            .iter()
            .map(|p| {
                let text = format!(
                    "Answer the question from the passage.\n\nPassage: {}\n{}\n\nQuestion: what is this passage about?",
                    p.title, p.text
                );
                prompt(&loaded, &text)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // One warm-up run so that one-off allocation is not timed.
        measure(loaded.model.as_ref(), &contexts[..1], 2)?;
        let mut runs: [Vec<Phase>; 3] = Default::default();
        for _ in 0..args.repeats {
            let model = loaded.model.as_ref();
            runs[0].push(Phase {
                name: "single",
                ..measure(model, &contexts[..1], args.new_tokens)?
            });
            runs[1].push(sequential(model, &contexts, args.new_tokens)?);
            runs[2].push(Phase {
                name: "batched",
                ..measure(model, &contexts, args.new_tokens)?
            });
        }
        let [single, sequential, batched] = runs.map(median);
        reports.push(ModelReport {
            model: loaded.name.clone(),
            device: format!("{:?}", config.generator.device).to_lowercase(),
            threads: candle_core::utils::get_num_threads(),
            batched_speedup: batched.decode_tokens_per_second / sequential.decode_tokens_per_second,
            phases: vec![single, sequential, batched],
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    for report in &reports {
        println!(
            "{} on {} ({} threads)",
            report.model, report.device, report.threads
        );
        println!(
            "  {:<10} {:>8} {:>8} {:>12} {:>8} {:>12} {:>10}",
            "run", "contexts", "prompt", "prefill t/s", "new", "decode t/s", "peak RSS"
        );
        for p in &report.phases {
            println!(
                "  {:<10} {:>8} {:>8} {:>12.1} {:>8} {:>12.1} {:>10}",
                p.name,
                p.contexts,
                p.prompt_tokens,
                p.prefill_tokens_per_second,
                p.new_tokens,
                p.decode_tokens_per_second,
                p.peak_rss_mib
                    .map_or("unknown".into(), |m| format!("{m:.0} MiB"))
            );
        }
        println!(
            "  batched decode = {:.2}x sequential decode",
            report.batched_speedup
        );
    }
    Ok(())
}

/// The contexts one after another, each prefilled and decoded alone.
fn sequential(
    model: &dyn Generator,
    contexts: &[Vec<u32>],
    new_tokens: usize,
) -> anyhow::Result<Phase> {
    reset_peak_rss();
    let mut total = Phase {
        name: "sequential",
        ..Phase::default()
    };
    for context in contexts {
        let one = measure_keeping_peak(model, std::slice::from_ref(context), new_tokens)?;
        total.contexts += 1;
        total.prompt_tokens += one.prompt_tokens;
        total.prefill_seconds += one.prefill_seconds;
        total.new_tokens += one.new_tokens;
        total.decode_seconds += one.decode_seconds;
        total.peak_rss_mib = one.peak_rss_mib;
    }
    total.prefill_tokens_per_second = total.prompt_tokens as f64 / total.prefill_seconds;
    total.decode_tokens_per_second = total.new_tokens as f64 / total.decode_seconds;
    Ok(total)
}

/// The run with the median decode speed.
fn median(mut runs: Vec<Phase>) -> Phase {
    runs.sort_by(|a, b| {
        a.decode_tokens_per_second
            .total_cmp(&b.decode_tokens_per_second)
    });
    runs.swap_remove(runs.len() / 2)
}

/// Token ids of `text` as a user turn of the model's chat template, if any.
fn prompt(loaded: &LoadedGenerator, text: &str) -> anyhow::Result<Vec<u32>> {
    let text = match &loaded.chat_template {
        Some(template) => template.render(&[ChatMessage::new("user", text.to_string())], true)?,
        None => text.to_string(),
    };
    Ok(loaded.tokenize(&text)?)
}

/// Prefills `contexts` as one batch, then generates `new_tokens` greedy
/// tokens for every row, end of sequence excluded so that every run does
/// the same work.
fn measure(
    model: &dyn Generator,
    contexts: &[Vec<u32>],
    new_tokens: usize,
) -> anyhow::Result<Phase> {
    reset_peak_rss();
    measure_keeping_peak(model, contexts, new_tokens)
}

/// [`measure`] within the current peak-memory window.
fn measure_keeping_peak(
    model: &dyn Generator,
    contexts: &[Vec<u32>],
    new_tokens: usize,
) -> anyhow::Result<Phase> {
    let eos = model.special_tokens().eos as usize;
    let began = Instant::now();
    let mut session = model.prepare(contexts)?;
    let mut log_probs = session.log_probs()?;
    let prefill_seconds = began.elapsed().as_secs_f64();
    let began = Instant::now();
    for _ in 0..new_tokens {
        let tokens: Vec<u32> = log_probs
            .iter_mut()
            .map(|row| {
                row[eos] = f32::NEG_INFINITY;
                argmax(row)
            })
            .collect();
        session.advance(&tokens)?;
        log_probs = session.log_probs()?;
    }
    let decode_seconds = began.elapsed().as_secs_f64();
    let prompt_tokens: usize = contexts.iter().map(Vec::len).sum();
    let generated = new_tokens * contexts.len();
    Ok(Phase {
        name: "",
        contexts: contexts.len(),
        prompt_tokens,
        prefill_seconds,
        prefill_tokens_per_second: prompt_tokens as f64 / prefill_seconds,
        new_tokens: generated,
        decode_seconds,
        decode_tokens_per_second: generated as f64 / decode_seconds,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Starts a new peak-memory window (Linux: writing 5 to clear_refs resets
/// VmHWM to the current resident size), after handing memory the allocator
/// kept from earlier work (model loading) back to the system.
fn reset_peak_rss() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; it takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) };
    // Where this is not Linux the peak covers the whole process, which the report still names.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
