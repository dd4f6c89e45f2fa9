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
    let out = margin(&[
        "generate",
        "The capital of France is",
        "--raw",
        "--max-new-tokens",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Greedy continuation; transformers' top-1 after this prompt is " Paris" too
    // (tests/fixtures/gguf_llm_reference.json).
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Paris"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 generated tokens"));
    let out = margin(&["generate", "  "]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("prompt: must not be empty"));
}
