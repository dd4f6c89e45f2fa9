//! The GGUF decoder LLMs against Hugging Face transformers loading the same
//! files (it dequantises to f32, so small differences are expected): next
//! token top-1 on 22 prompts run as one padded batch, and the top-10
//! log-probabilities.
//! Fixture: tests/fixtures/gguf_llm_reference.json (make_gguf_llm_reference.py).

use candle_core::Device;
use margin_generator::gguf::GgufModel;
use margin_generator::Generator;
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
        let llm = GgufModel::load(name, &gguf, &Device::Cpu).unwrap();
        let prompts = model["prompts"].as_array().unwrap();
        let contexts: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| serde_json::from_value(p["ids"].clone()).unwrap())
            .collect();
        // All prompts as one padded batch, as RAG runs its k passages.
        let batch = llm.prepare(&contexts).unwrap().log_probs().unwrap();
        let (mut same_top1, mut abs_diff, mut compared) = (0, 0.0f64, 0);
        for (prompt, log_probs) in prompts.iter().zip(&batch) {
            let top10: Vec<(usize, f32)> = serde_json::from_value(prompt["top10"].clone()).unwrap();
            let ours = argmax(log_probs);
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
        // The batch gives what each prompt alone gives: padding changes
        // neither what a row attends to nor the order of any sum.
        for (ids, batched) in contexts.iter().zip(&batch) {
            let alone = llm
                .prepare(std::slice::from_ref(ids))
                .unwrap()
                .log_probs()
                .unwrap()
                .remove(0);
            let worst = max_diff(&alone, batched);
            assert!(worst < 1e-3, "{name}: batched prefill differs by {worst}");
        }
        // Stepping one token at a time through the cache gives what a fresh
        // prefill of the same length gives.
        let ids = &contexts[0];
        let alone = llm
            .prepare(std::slice::from_ref(ids))
            .unwrap()
            .log_probs()
            .unwrap();
        let mut session = llm.prepare(&[ids[..1].to_vec()]).unwrap();
        for &t in &ids[1..] {
            session.advance(&[t]).unwrap();
        }
        let stepped = session.log_probs().unwrap();
        let worst = max_diff(&alone[0], &stepped[0]);
        assert!(worst < 1e-3, "{name}: cached stepping differs by {worst}");
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

fn argmax(log_probs: &[f32]) -> usize {
    log_probs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(t, _)| t)
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
