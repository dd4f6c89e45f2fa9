//! The hub source against a Hugging Face-style file server on loopback: the
//! same requests hf-hub makes to the real hub (ranged GETs on
//! `/{repo}/resolve/{revision}/{file}` answered with `etag`, `x-repo-commit`
//! and `content-range`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

mod common;

use margin_models::{ModelStore, PullOutcome};

/// Serves `files` (path -> bytes) until the test process ends; returns the endpoint URL.
fn serve(files: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let files = Arc::clone(&files);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    return;
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let (start, end) = value.trim().split_once('-').unwrap();
                        range = Some((start.parse::<usize>().unwrap(), end.parse::<usize>().ok()));
                    }
                }
                let Some(body) = files.get(&path) else {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                };
                let (start, end) = range.unwrap_or((0, None));
                let end = end.unwrap_or(body.len() - 1).min(body.len() - 1);
                let chunk = &body[start..=end];
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\netag: \"{}\"\r\nx-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\nConnection: close\r\n\r\n",
                    chunk.len(),
                    body.len(),
                    common::sha256_of(body),
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(chunk);
            });
        }
    });
    url
}

fn store(endpoint: &str, data: &std::path::Path, catalogue: &str) -> ModelStore {
    common::store_with(
        data,
        catalogue,
        &[("models.sources", "hub"), ("models.hub_endpoint", endpoint)],
    )
}

fn catalogue(config_sha: &str, weights_sha: &str) -> String {
    format!(
        r#"
[[model]]
name = "hubbed"
description = "t"
roles = ["generator"]
architecture = "llama"
license = "none"
files = [{{ name = "config.json", sha256 = "{config_sha}" }}, {{ name = "model.bin", sha256 = "{weights_sha}" }}]
[[model.source]]
kind = "hub"
repo = "org/hubbed"
revision = "main"
remote_names = {{ "model.bin" = "Model-Q4.bin" }}
"#
    )
}

fn files() -> HashMap<String, Vec<u8>> {
    HashMap::from([
        (
            "/org/hubbed/resolve/main/config.json".to_string(),
            b"{\"hidden\": 8}".to_vec(),
        ),
        (
            "/org/hubbed/resolve/main/Model-Q4.bin".to_string(),
            vec![7u8; 100_000],
        ),
    ])
}

#[test]
fn hub_source_fetches_renamed_files_and_verifies_them() {
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        eprintln!("hub_source: SKIPPED, HF_HUB_OFFLINE=1");
        return;
    }
    let endpoint = serve(files());
    let tmp = tempfile::tempdir().unwrap();
    let store = store(
        &endpoint,
        tmp.path(),
        &catalogue(&common::sha256_of(b"{\"hidden\": 8}"), ""),
    );
    match store.pull("hubbed", false).unwrap() {
        PullOutcome::Fetched {
            source, pinned_now, ..
        } => {
            assert_eq!(source, "hub org/hubbed@main");
            assert_eq!(pinned_now, vec!["model.bin".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    let dir = store.resolve("hubbed").unwrap();
    assert_eq!(
        std::fs::read(dir.join("model.bin")).unwrap(),
        vec![7u8; 100_000]
    );
    assert!(!dir.join(".hub").exists(), "hf-hub's own cache is not kept");
    store.verify("hubbed").unwrap();
}

#[test]
fn hub_serving_other_bytes_is_rejected() {
    let endpoint = serve(files());
    let tmp = tempfile::tempdir().unwrap();
    let store = store(&endpoint, tmp.path(), &catalogue(&"ab".repeat(32), ""));
    let err = store.pull("hubbed", false).unwrap_err().to_string();
    assert!(
        err.contains("SHA-256 mismatch") && err.contains("config.json"),
        "{err}"
    );
    assert!(!store.model_dir("hubbed").exists());
}

#[test]
fn unreachable_hub_says_which_source_failed_and_what_to_do() {
    // A port nobody listens on: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let store = store(
        &format!("http://127.0.0.1:{port}"),
        tmp.path(),
        &catalogue("", ""),
    );
    let err = store.pull("hubbed", false).unwrap_err().to_string();
    assert!(err.contains("source hub org/hubbed@main"), "{err}");
    assert!(
        err.contains("HF_ENDPOINT") && err.contains("pip source"),
        "{err}"
    );
}
