//! `margin generate` with the real SmolLM2 (skipped, and said so, without it).

use std::process::Command;

use margin_testkit::real_model;

#[test]
fn generate_answers_with_smollm2_and_refuses_an_empty_prompt() {
    let Some(dir) = real_model("generate_cli", "smollm2-135m-instruct") else {
        return;
    };
    let margin = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_margin"))
            .env_remove("MARGIN_CONFIG")
            .env("MARGIN_LOG", "warn")
            .args(["--set", &format!("models.generator={}", dir.display())])
            .args(args)
            .output()
            .unwrap()
    };
    // Greedy, then beam search through the same session (reordered rows):
    // transformers' top-1 after this prompt is " Paris" too
    // (tests/fixtures/gguf_llm_reference.json).
    let greedy = [
        "generate",
        "The capital of France is",
        "--raw",
        "--max-new-tokens",
        "3",
    ];
    for extra in [&[][..], &["--beams", "4"]] {
        let args: Vec<&str> = greedy.iter().chain(extra).copied().collect();
        let out = margin(&args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.starts_with("Paris"), "{stdout}");
        if extra.is_empty() {
            assert!(stderr.contains("+ 3 generated"), "{stderr}");
        }
    }
    let out = margin(&["generate", "  "]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prompt: must not be empty"));
    let out = margin(&["generate", "hi", "--beams", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--beams: must be at least 1"));
}

#[test]
fn bench_generate_reports_single_sequential_and_batched_runs() {
    let Some(dir) = real_model("generate_cli", "smollm2-135m-instruct") else {
        return;
    };
    let root = margin_testkit::workspace_root();
    let out = Command::new(env!("CARGO_BIN_EXE_margin"))
        .env_remove("MARGIN_CONFIG")
        .env("MARGIN_LOG", "warn")
        .current_dir(&root)
        .args(["bench", "generate", "--model"])
        .arg(&dir)
        .args(["--contexts", "2", "--new-tokens", "2", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = reports[0]["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["single", "sequential", "batched"]);
    for (phase, contexts) in phases.iter().zip([1, 2, 2]) {
        assert_eq!(phase["contexts"], contexts);
        assert_eq!(phase["new_tokens"], 2 * contexts);
        for key in ["prefill_tokens_per_second", "decode_tokens_per_second"] {
            assert!(phase[key].as_f64().unwrap() > 0.0, "{key}: {phase}");
        }
    }
    // The sequential runs and the batch saw the same prompts.
    assert_eq!(phases[1]["prompt_tokens"], phases[2]["prompt_tokens"]);
    assert!(reports[0]["batched_speedup"].as_f64().unwrap() > 0.0);
}
