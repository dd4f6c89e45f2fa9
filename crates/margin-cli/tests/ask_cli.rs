//! `margin ask` end to end with the real models: MiniLM retrieval over a
//! slice of the shared Wikipedia corpus, SmolLM2 generating with RAG-Token
//! and RAG-Sequence (thorough and fast). Skipped (and said so) without the
//! models or data.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Output;

use margin_testkit::{real_model, run_margin, shared_eval_file};

const TEST: &str = "ask_cli";

fn margin(dir: &Path, encoder: &Path, generator: &Path, args: &[&str]) -> Output {
    run_margin(env!("CARGO_BIN_EXE_margin"), dir, encoder, generator, args)
}

#[test]
fn ask_answers_the_first_nobel_prize_in_physics_with_rontgen_and_cites_it() {
    let (Some(encoder), Some(generator), Some(corpus)) = (
        real_model(TEST, "all-minilm-l6-v2"),
        real_model(TEST, "smollm2-135m-instruct"),
        shared_eval_file(TEST, "corpus.jsonl"),
    ) else {
        return;
    };
    // The gold passage (litm-0, the corpus's first document) among 60 others.
    let tmp = tempfile::tempdir().unwrap();
    let mut small = std::fs::File::create(tmp.path().join("corpus.jsonl")).unwrap();
    for line in BufReader::new(std::fs::File::open(&corpus).unwrap())
        .lines()
        .take(61)
    {
        writeln!(small, "{}", line.unwrap()).unwrap();
    }
    drop(small);
    let out = margin(tmp.path(), &encoder, &generator, &["index", "corpus.jsonl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let question = "who got the first nobel prize in physics";
    for mode in [
        &["--mode", "token"][..],
        &["--mode", "sequence", "--decoding", "thorough"],
        &["--mode", "sequence", "--decoding", "fast"],
    ] {
        let mut args = vec!["ask", question, "--json"];
        args.extend_from_slice(mode);
        let out = margin(tmp.path(), &encoder, &generator, &args);
        assert!(
            out.status.success(),
            "{mode:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let answer = report["answer"].as_str().unwrap();
        assert!(answer.contains("Röntgen"), "{mode:?}: {answer}");
        let citations = report["citations"].as_array().unwrap();
        assert_eq!(citations.len(), 5);
        // Sorted by posterior, the gold passage first.
        assert_eq!(citations[0]["passage_id"], "litm-0#0", "{mode:?}: {report}");
        let total: f64 = citations
            .iter()
            .map(|c| c["posterior"].as_f64().unwrap())
            .sum();
        assert!(
            (total - 1.0).abs() < 1e-3,
            "{mode:?}: posteriors sum to {total}"
        );
        let prior: f64 = citations.iter().map(|c| c["prior"].as_f64().unwrap()).sum();
        assert!(
            (prior - 1.0).abs() < 1e-3,
            "{mode:?}: priors sum to {prior}"
        );
        for key in ["retrieve", "prefill", "decode"] {
            assert!(report["timings_ms"][key].as_f64().unwrap() > 0.0, "{key}");
        }
    }
    let out = margin(tmp.path(), &encoder, &generator, &["ask", " "]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("question: must not be empty"));
}
