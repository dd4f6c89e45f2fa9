//! Retrieval quality with the real MiniLM encoder on the shared NQ data: 50
//! questions over their gold documents plus 450 distractor documents, through
//! `margin eval retrieval`. Skipped (and said so) without the model or data.

use std::path::Path;
use std::process::Command;

use margin_testkit::{onnx_runtime, real_model, shared_eval_file, write_gold_corpus};

const TEST: &str = "retrieval_quality";

/// Runs `margin eval retrieval` on 50 questions over their gold documents
/// and 450 distractors, in `modes`, after `configure` has set up the command.
fn eval_retrieval(
    qa: &Path,
    corpus: &Path,
    modes: &str,
    configure: impl FnOnce(&mut Command),
) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    write_gold_corpus(&tmp.path().join("corpus.jsonl"), qa, corpus, 50, 450);
    let mut command = Command::new(env!("CARGO_BIN_EXE_margin"));
    command
        .current_dir(tmp.path())
        .env_remove("MARGIN_CONFIG")
        .env("MARGIN_LOG", "warn");
    configure(&mut command);
    let out = command
        .args([
            "eval",
            "retrieval",
            "--qa",
            &qa.display().to_string(),
            "--limit",
            "50",
            "--corpus",
            "corpus.jsonl",
            "--modes",
            modes,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn eval_retrieval_reports_every_metric_and_meets_the_floors() {
    let (Some(model), Some(qa), Some(corpus)) = (
        real_model(TEST, "all-minilm-l6-v2"),
        shared_eval_file(TEST, "nq-dev.jsonl"),
        shared_eval_file(TEST, "corpus.jsonl"),
    ) else {
        return;
    };
    let report = eval_retrieval(&qa, &corpus, "dense,bm25,hybrid", |c| {
        c.args(["--set", &format!("models.encoder={}", model.display())]);
    });
    assert_eq!(report["questions"], 50);
    // Floors under what this subset gives (gold R@20 1.00 in every mode, MRR@10
    // dense 0.99, bm25 0.94, hybrid 0.98 on 2026-11-29), so that a real
    // regression trips them and thread-count noise does not.
    for (mode, floor) in [("dense", 0.94), ("bm25", 0.88), ("hybrid", 0.94)] {
        let m = &report["modes"][mode];
        for metric in ["gold_recall", "answer_recall"] {
            for k in ["1", "5", "20", "100"] {
                let v = m[metric][k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{mode} {metric}@{k} missing"));
                assert!((0.0..=1.0).contains(&v));
            }
        }
        let r20 = m["gold_recall"]["20"].as_f64().unwrap();
        eprintln!("{mode}: gold R@20 {r20:.3}, MRR@10 {:.3}", m["mrr_at_10"]);
        assert!(r20 >= floor, "{mode} gold recall@20 {r20} < floor {floor}");
        assert!(m["mrr_at_10"].as_f64().unwrap() >= 0.85, "{mode} MRR@10");
    }
}

#[test]
fn the_onnx_backend_retrieves_as_well_as_candle() {
    const TEST: &str = "the_onnx_backend_retrieves_as_well_as_candle";
    let (Some(candle), Some(onnx), Some(runtime), Some(qa), Some(corpus)) = (
        real_model(TEST, "all-minilm-l6-v2"),
        real_model(TEST, "all-minilm-l6-v2-int8"),
        onnx_runtime(TEST),
        shared_eval_file(TEST, "nq-dev.jsonl"),
        shared_eval_file(TEST, "corpus.jsonl"),
    ) else {
        return;
    };
    let recall = |backend: &str, model: &Path| {
        let report = eval_retrieval(&qa, &corpus, "dense", |c| {
            c.env("ORT_DYLIB_PATH", &runtime)
                .args(["--set", &format!("encoder.backend={backend}")])
                .args(["--set", &format!("models.encoder={}", model.display())]);
        });
        report["modes"]["dense"]["gold_recall"]["20"]
            .as_f64()
            .unwrap()
    };
    let (candle, onnx) = (recall("candle", &candle), recall("onnx", &onnx));
    eprintln!("dense gold R@20 on 50 questions: candle {candle:.3}, onnx {onnx:.3}");
    // One question of 50 either way; the full nq-dev comparison is in docs/benchmarks.md.
    assert!(
        (candle - onnx).abs() <= 0.02 + 1e-9,
        "candle {candle} vs onnx {onnx}"
    );
    assert!(onnx >= 0.94, "onnx dense gold recall@20 {onnx}");
}
