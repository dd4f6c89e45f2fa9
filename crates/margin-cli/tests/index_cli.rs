//! `margin index`, `search`, `rm`, `docs` and `status` end to end, with a
//! tiny random BERT and the embedded store, including a crash test that
//! kills the indexer with SIGKILL at several points.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use margin_testkit::{write_tiny_bert, TinyBertStyle};
use rand::Rng;

/// A folder with a tiny model and a corpus of `docs` one-passage documents,
/// document `d{i}` holding the unique word `marker{i}`.
fn workspace(docs: usize) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(
        &tmp.path().join("model"),
        TinyBertStyle::SentenceTransformers,
        128,
    );
    let lines: Vec<String> = (0..docs)
        .map(|i| {
            serde_json::json!({"id": format!("d{i}"), "title": format!("Doc {i}"),
                "text": format!("the moon and the sea marker{i} .")})
            .to_string()
        })
        .collect();
    std::fs::write(tmp.path().join("corpus.jsonl"), lines.join("\n") + "\n").unwrap();
    tmp
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_margin"));
    c.current_dir(dir)
        .env_remove("MARGIN_CONFIG")
        .env("MARGIN_LOG", "warn")
        .args([
            "--set",
            "models.encoder=model",
            "--set",
            "retrieval.commit_passages=8",
        ])
        .args(args);
    c
}

fn margin(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().unwrap()
}

fn ok_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = margin(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn error_of(dir: &Path, args: &[&str]) -> String {
    let out = margin(dir, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `margin index --json`, kills it with SIGKILL right after (plus a
/// random few milliseconds) its `kill_after`-th commit is reported, and
/// returns the documents it reported as committed.
fn index_and_kill(dir: &Path, kill_after: usize) -> Vec<String> {
    let mut child = command(dir, &["index", "--json", "corpus.jsonl"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reported = Vec::new();
    let mut commits = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "committed" {
            commits += 1;
            for id in event["documents"].as_array().unwrap() {
                reported.push(id.as_str().unwrap().to_string());
            }
            if commits == kill_after {
                let ms = rand::rng().random_range(0..15);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    reported
}

#[test]
fn a_killed_indexer_leaves_every_reported_document_searchable_and_none_half_indexed() {
    let tmp = workspace(400);
    let dir = tmp.path();
    let mut interrupted = 0;
    for kill_after in [1, 4, 9] {
        let reported = index_and_kill(dir, kill_after);
        let status = ok_json(dir, &["status", "--json"]);
        assert_eq!(status["consistent"], true, "{status}");
        assert_eq!(status["pending_versions"], 0, "{status}");
        let docs = ok_json(dir, &["docs", "--json"]);
        let indexed: Vec<&str> = docs
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["doc_id"].as_str().unwrap())
            .collect();
        for id in &reported {
            assert!(
                indexed.contains(&id.as_str()),
                "{id} was reported done but is not indexed"
            );
        }
        assert_eq!(
            status["passages"],
            indexed.len(),
            "one passage per document"
        );
        let last = reported.last().unwrap();
        let marker = format!("marker{}", &last[1..]);
        let hits = ok_json(
            dir,
            &["search", "--json", "--mode", "bm25", "-k", "3", &marker],
        );
        assert_eq!(hits[0]["passage"]["doc_id"], last.as_str());
        eprintln!(
            "killed after commit {kill_after}: {} documents reported, {} indexed after restart",
            reported.len(),
            indexed.len()
        );
        if indexed.len() < 400 {
            interrupted += 1;
        }
    }
    assert!(
        interrupted > 0,
        "no run was killed before it finished: the test proved nothing"
    );

    let out = margin(dir, &["index", "corpus.jsonl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = ok_json(dir, &["status", "--json"]);
    assert_eq!(
        (status["documents"].as_u64(), status["consistent"].as_bool()),
        (Some(400), Some(true))
    );
}

#[test]
fn index_is_idempotent_and_search_rm_docs_work() {
    let tmp = workspace(12);
    let dir = tmp.path();
    let out = margin(dir, &["index", "corpus.jsonl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("12 documents: 12 added, 0 replaced, 0 unchanged"));
    let again = margin(dir, &["index", "corpus.jsonl"]);
    assert!(String::from_utf8_lossy(&again.stdout)
        .contains("12 documents: 0 added, 0 replaced, 12 unchanged; 0 passages"));

    for mode in ["dense", "bm25", "hybrid"] {
        let hits = ok_json(
            dir,
            &[
                "search",
                "--json",
                "--mode",
                mode,
                "-k",
                "5",
                "marker7 moon",
            ],
        );
        let hits = hits.as_array().unwrap();
        assert_eq!(hits.len(), 5, "{mode}");
        for field in ["id", "doc_id", "title", "text", "source"] {
            assert!(hits[0]["passage"][field].is_string(), "{mode}: {field}");
        }
        assert!(hits[0]["score"].is_number());
    }
    let top = ok_json(
        dir,
        &["search", "--json", "--mode", "hybrid", "-k", "1", "marker7"],
    );
    assert_eq!(top[0]["passage"]["doc_id"], "d7");

    let out = margin(dir, &["rm", "d7"]);
    assert!(out.status.success());
    let hits = ok_json(dir, &["search", "--json", "--mode", "bm25", "marker7"]);
    assert!(hits.as_array().unwrap().is_empty());
    assert_eq!(
        ok_json(dir, &["docs", "--json"]).as_array().unwrap().len(),
        11
    );
    assert!(error_of(dir, &["rm", "d7"]).contains("no document `d7`"));
}

#[test]
fn bad_search_requests_are_clear_errors() {
    let tmp = workspace(3);
    let dir = tmp.path();
    assert!(margin(dir, &["index", "corpus.jsonl"]).status.success());
    assert!(error_of(dir, &["search", " "]).contains("query: must not be empty"));
    assert!(error_of(dir, &["search", "-k", "0", "moon"]).contains("k: must be at least 1"));
    assert!(error_of(dir, &["search", "-k", "100000", "moon"]).contains("k: must be at most 1000"));
    assert!(error_of(dir, &["search", "--mode", "fuzzy", "moon"]).contains("not a search mode"));
}

#[test]
fn a_missing_onnx_runtime_is_a_clear_error_and_leaves_the_candle_backend_working() {
    let tmp = workspace(3);
    let dir = tmp.path();
    assert!(margin(dir, &["index", "corpus.jsonl"]).status.success());
    // A folder that claims an ONNX export, so that the backends reach for the runtime.
    let onnx_model = dir.join("onnx-model");
    write_tiny_bert(&onnx_model, TinyBertStyle::SentenceTransformers, 128);
    std::fs::write(onnx_model.join("model.onnx"), b"never read").unwrap();
    let missing = dir.join("no-such-dir/libonnxruntime.so");
    let with_missing_runtime = |backend: &str| {
        command(dir, &["--set", &format!("encoder.backend={backend}")])
            .args([
                "--set",
                "models.encoder=onnx-model",
                "search",
                "--json",
                "moon",
            ])
            .env("ORT_DYLIB_PATH", &missing)
            .output()
            .unwrap()
    };

    let out = with_missing_runtime("onnx");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        missing.to_str().unwrap(),
        "margin models pull onnxruntime",
        "ORT_DYLIB_PATH",
        "encoder.backend = \"candle\"",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }

    // `auto` says why and runs the same model on candle instead.
    let out = with_missing_runtime("auto");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the ONNX backend is unavailable") && err.contains(missing.to_str().unwrap()),
        "{err}"
    );
    let hits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 3, "{hits}");

    // The index is untouched and the candle backend still serves it.
    let hits = ok_json(dir, &["search", "--json", "--mode", "bm25", "marker1"]);
    assert_eq!(hits[0]["passage"]["doc_id"], "d1", "{hits}");
    assert_eq!(
        ok_json(dir, &["search", "--json", "moon"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
}
