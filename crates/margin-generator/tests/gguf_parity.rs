//! The GGUF decoder LLMs against Hugging Face transformers loading the same
//! files (it dequantises to f32, so small differences are expected): next
//! token top-1 on 22 prompts, and the top-10 log-probabilities.
//! Fixture: tests/fixtures/gguf_llm_reference.json (make_gguf_llm_reference.py).

use candle_core::Device;
use margin_generator::gguf::GgufModel;
use margin_testkit::{real_model, workspace_root};
use serde_json::Value;

#[test]
fn next_token_distributions_match_transformers() {
    let path = workspace_root().join("tests/fixtures/gguf_llm_reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for (name, model) in reference["models"].as_object().unwrap() {
        let Some(dir) = real_model("gguf_parity", name) else {
            continue;
        };
        let gguf = dir.join(model["gguf"].as_str().unwrap());
        let mut llm = GgufModel::load(name, &gguf, &Device::Cpu).unwrap();
        let prompts = model["prompts"].as_array().unwrap();
        let (mut same_top1, mut abs_diff, mut compared) = (0, 0.0f64, 0);
        for prompt in prompts {
            let ids: Vec<u32> = serde_json::from_value(prompt["ids"].clone()).unwrap();
            let log_probs = llm.next_token_log_probs(&ids).unwrap();
            let top10: Vec<(usize, f32)> = serde_json::from_value(prompt["top10"].clone()).unwrap();
            let ours = log_probs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(t, _)| t)
                .unwrap();
            if ours != top10[0].0 {
                eprintln!(
                    "{name}: {:?}: margin {ours}, transformers {}",
                    prompt["prompt"], top10[0].0
                );
            }
            same_top1 += usize::from(ours == top10[0].0);
            for (token, lp) in &top10 {
                abs_diff += (log_probs[*token] - lp).abs() as f64;
                compared += 1;
            }
        }
        // Stepping one token at a time through the model's cache gives what a
        // fresh run over the whole sequence gives.
        let ids: Vec<u32> = serde_json::from_value(prompts[0]["ids"].clone()).unwrap();
        let fresh = llm.next_token_log_probs(&ids).unwrap();
        llm.next_token_log_probs(&ids[..1]).unwrap();
        for end in 2..=ids.len() {
            let stepped = llm.next_token_log_probs(&ids[..end]).unwrap();
            if end == ids.len() {
                let worst = stepped
                    .iter()
                    .zip(&fresh)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(worst < 1e-3, "{name}: cached stepping differs by {worst}");
            }
        }
        let agreement = same_top1 as f64 / prompts.len() as f64;
        eprintln!(
            "{name}: top-1 agreement {same_top1}/{} ({:.0} %), mean |Δ log p| over the reference top-10 = {:.4}",
            prompts.len(),
            agreement * 100.0,
            abs_diff / compared as f64
        );
        if agreement < 0.9 {
            failures.push(format!("{name}: top-1 agreement {agreement:.2} < 0.90"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
