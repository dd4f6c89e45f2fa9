//! The `margin` binary end to end: configuration, ingestion reports, embedding
//! with a tiny model, and the errors people see.

use std::path::Path;
use std::process::{Command, Output};

use margin_encoder::VectorsFile;
use margin_testkit::{write_tiny_bert, TinyBertStyle};

fn margin(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_margin"))
        .current_dir(dir)
        .env_remove("MARGIN_CONFIG")
        .env("MARGIN_LOG", "warn")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn config_show_layers_env_and_flags_and_masks_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("margin.toml");
    std::fs::write(&file, "[chunking]\nwords = 120\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_margin"))
        .current_dir(tmp.path())
        .env("MARGIN__QDRANT__API_KEY", "top-secret-key")
        .env("MARGIN__ENCODER__BATCH_SIZE", "7")
        .args([
            "--config",
            file.to_str().unwrap(),
            "--set",
            "chunking.overlap=5",
            "config",
            "show",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["chunking"]["words"], 120);
    assert_eq!(shown["chunking"]["overlap"], 5);
    assert_eq!(shown["encoder"]["batch_size"], 7);
    assert_eq!(shown["qdrant"]["api_key"], "***");
    assert!(!stdout(&out).contains("top-secret-key"));
}

#[test]
fn bad_config_value_is_an_error_naming_key_and_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let out = margin(
        tmp.path(),
        &["--set", "retrieval.mode=semantic", "config", "show"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("retrieval.mode") && err.contains("dense, bm25, hybrid"),
        "{err}"
    );
}

#[test]
fn ingest_reports_each_file_and_goes_on_past_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(
        docs.join("tides.txt"),
        "Tides rise and fall twice a day. The Moon pulls the sea.",
    )
    .unwrap();
    std::fs::write(
        docs.join("bees.md"),
        "# Honeybees\n\nBees make honey. They dance to share directions.",
    )
    .unwrap();
    std::fs::write(
        docs.join("broken.pdf"),
        b"%PDF-1.4\nthis is not really a pdf",
    )
    .unwrap();
    std::fs::write(docs.join("binary.txt"), [0u8, 159, 146, 150, 0, 1]).unwrap();

    let out = margin(
        tmp.path(),
        &[
            "ingest",
            "docs",
            "--json",
            "--passages-out",
            "passages.jsonl",
        ],
    );
    assert!(
        !out.status.success(),
        "a failed file makes the exit status non-zero"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["totals"]["files_ingested"], 2);
    assert_eq!(report["totals"]["files_failed"], 2);
    let failed: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "failed")
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        failed.iter().any(|p| p.ends_with("broken.pdf"))
            && failed.iter().any(|p| p.ends_with("binary.txt"))
    );

    let passages: Vec<serde_json::Value> =
        std::fs::read_to_string(tmp.path().join("passages.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(passages.len(), 2);
    assert!(passages.iter().any(|p| p["title"] == "Honeybees"));

    // Same input, same ids.
    margin(
        tmp.path(),
        &["ingest", "docs", "--passages-out", "again.jsonl"],
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("passages.jsonl")).unwrap(),
        std::fs::read_to_string(tmp.path().join("again.jsonl")).unwrap()
    );
}

#[test]
fn embed_writes_one_vector_per_passage_with_a_local_model_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny-model");
    write_tiny_bert(&model, TinyBertStyle::SentenceTransformers, 128);
    std::fs::write(
        tmp.path().join("corpus.jsonl"),
        "{\"id\": \"a\", \"title\": \"Moon\", \"text\": \"the moon and the sea .\"}\n\
         {\"id\": \"b\", \"title\": \"Bee\", \"text\": \"the bee and the honey .\"}\n",
    )
    .unwrap();
    let out = margin(
        tmp.path(),
        &[
            "--set",
            &format!("models.encoder={}", model.display()),
            "embed",
            "corpus.jsonl",
            "--out",
            "v.safetensors",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let vectors = VectorsFile::read(&tmp.path().join("v.safetensors")).unwrap();
    assert_eq!(vectors.ids, vec!["a#0", "b#0"]);
    assert_eq!(vectors.dim, 32);
    let norm: f32 = vectors.row(1).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

#[test]
fn embed_with_dpr_style_question_and_passage_encoders() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q-model");
    let c = tmp.path().join("ctx-model");
    write_tiny_bert(&q, TinyBertStyle::DprQuestion, 128);
    write_tiny_bert(&c, TinyBertStyle::DprContext, 128);
    std::fs::write(tmp.path().join("doc.txt"), "the moon and the sea .").unwrap();
    let out = margin(
        tmp.path(),
        &[
            "--set",
            &format!("models.encoder={}", q.display()),
            "--set",
            &format!("models.passage_encoder={}", c.display()),
            "embed",
            "doc.txt",
            "--out",
            "v.safetensors",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let vectors = VectorsFile::read(&tmp.path().join("v.safetensors")).unwrap();
    assert!(
        vectors.model.contains('+'),
        "both encoders are named: {}",
        vectors.model
    );
    let norm: f32 = vectors.row(0).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "DPR vectors are not normalised");
}

#[test]
fn unknown_model_and_missing_paths_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = margin(tmp.path(), &["models", "pull", "gpt-17"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("gpt-17") && stderr(&out).contains("known models"),
        "{}",
        stderr(&out)
    );

    let out = margin(tmp.path(), &["ingest", "no/such/file.txt"]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("no/such/file.txt"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn models_list_shows_the_catalogue() {
    let tmp = tempfile::tempdir().unwrap();
    let out = margin(tmp.path(), &["models", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for name in [
        "all-minilm-l6-v2",
        "smollm2-135m-instruct",
        "gemma3-270m",
        "bart-large",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(
        rows.iter().all(|r| r["status"]["state"] == "missing"),
        "fresh data dir has nothing cached"
    );
}
