//! `margin serve` end to end: the real binary on an ephemeral localhost port,
//! Qdrant Edge, the real MiniLM encoder and SmolLM2 generator. Uploads (good,
//! unreadable, too large, wrong key), job progress, search, answers in both
//! modes (one streamed and parsed here), delete, restart, batching of
//! concurrent questions, overload and timeouts. Skipped (and said so) without
//! the models.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use margin_testkit::{real_model, workspace_root};
use serde_json::{json, Value};

const TEST: &str = "serve_api";
const WRITE_KEY: &str = "test-write-key-0123456789";
const READ_KEY: &str = "test-read-key-0123456789";

/// Text this test wrote, with facts no model knows.
const ZORBLAX: &str = "The Zorblax festival is held every June in the town of Quillmere. \
During the festival, people race snails across the old stone bridge, and the winner is crowned Snail Keeper for a year.";
const ORCHARD: &str = "The orchard at Wendlow Hill grows forty kinds of pear. Its oldest tree was planted in 1851 by a miller named Ada Trask.";

struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts `margin serve` in `dir` (its data directory is `dir/data`),
    /// indexing the demo corpus, with `settings` as `--set` overrides.
    fn start(dir: &Path, models: &(PathBuf, PathBuf), settings: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_margin"));
        command
            .current_dir(dir)
            .env_remove("MARGIN_CONFIG")
            .env("MARGIN_LOG", "warn,qdrant_edge=error")
            .env("MARGIN__SERVER__WRITE_KEYS", WRITE_KEY)
            .env("MARGIN__SERVER__READ_KEYS", READ_KEY)
            .args(["--set", &format!("models.encoder={}", models.0.display())])
            .args(["--set", &format!("models.generator={}", models.1.display())]);
        for (key, value) in settings {
            command.args(["--set", &format!("{key}={value}")]);
        }
        let mut child = command
            .args(["serve", "--bind", "127.0.0.1:0", "--index"])
            .arg(workspace_root().join("corpora/demo"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let url = first
            .strip_prefix("margin serving on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .trim_end_matches('/')
            .to_string();
        // The rest of stdout is drained so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        let server = Server { child, url };
        let began = Instant::now();
        loop {
            if let Ok(r) = ureq::get(&server.url("/readyz")).call() {
                assert_eq!(r.status(), 200);
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(300),
                "not ready after 300 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "margin serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and JSON body of a request, whatever the status.
fn call(request: ureq::Request, body: Option<&Value>) -> (u16, Value) {
    let result = match body {
        Some(b) => request
            .set("Content-Type", "application/json")
            .send_string(&b.to_string()),
        None => request.call(),
    };
    respond(result)
}

fn respond(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"));
    (status, body)
}

fn with_key(request: ureq::Request, key: &str) -> ureq::Request {
    request.set("Authorization", &format!("Bearer {key}"))
}

/// Uploads `files` (name, bytes) as one multipart request.
fn upload(server: &Server, key: Option<&str>, files: &[(&str, &[u8])]) -> (u16, Value) {
    let boundary = "margin-test-boundary-7d3f";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend(*bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    let mut request = ureq::post(&server.url("/v1/documents")).set(
        "Content-Type",
        &format!("multipart/form-data; boundary={boundary}"),
    );
    if let Some(key) = key {
        request = with_key(request, key);
    }
    respond(request.send_bytes(&body))
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// Polls a job until it is done or failed.
fn wait_for_job(server: &Server, id: &str) -> Value {
    let began = Instant::now();
    loop {
        let (status, job) = call(
            with_key(ureq::get(&server.url(&format!("/v1/jobs/{id}"))), READ_KEY),
            None,
        );
        assert_eq!(status, 200, "{job}");
        if job["status"] == "done" || job["status"] == "failed" {
            return job;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "job still {job}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn search(server: &Server, query: &str) -> Vec<Value> {
    let (status, body) = call(
        with_key(ureq::post(&server.url("/v1/search")), READ_KEY),
        Some(&json!({"query": query, "k": 3, "mode": "hybrid"})),
    );
    assert_eq!(status, 200, "{body}");
    body["hits"].as_array().unwrap().clone()
}

fn models() -> Option<(PathBuf, PathBuf)> {
    Some((
        real_model(TEST, "all-minilm-l6-v2")?,
        real_model(TEST, "smollm2-135m-instruct")?,
    ))
}

/// Reads a text/event-stream response into (event, data) pairs.
fn events(response: ureq::Response) -> Vec<(String, Value)> {
    assert!(
        response.content_type().starts_with("text/event-stream"),
        "{}",
        response.content_type()
    );
    let mut text = String::new();
    response.into_reader().read_to_string(&mut text).unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = Some(e.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            Some((event?, serde_json::from_str(&data).unwrap()))
        })
        .collect()
}

#[test]
fn upload_search_ask_delete_and_restart() {
    let Some(models) = models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let settings = [
        ("server.open_reads", "false"),
        ("server.max_upload_mb", "1"),
    ];
    let server = Server::start(tmp.path(), &models, &settings);

    // Reading needs a key when reads are not open.
    let (status, body) = call(ureq::get(&server.url("/v1/documents")), None);
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    let (status, page) = call(
        with_key(ureq::get(&server.url("/v1/documents?limit=2")), READ_KEY),
        None,
    );
    assert_eq!(status, 200, "{page}");
    let demo_documents = page["total"].as_u64().unwrap();
    assert_eq!(
        (demo_documents, page["documents"].as_array().unwrap().len()),
        (6, 2)
    );

    // Uploads need a write key, presented correctly.
    let zorblax = [("zorblax.txt", ZORBLAX.as_bytes())];
    for (key, code, status) in [
        (None, "unauthorized", 401),
        (Some("not-a-key-at-all-000"), "unauthorized", 401),
        (Some(READ_KEY), "forbidden", 403),
    ] {
        let (got, body) = upload(&server, key, &zorblax);
        assert_eq!((got, error_code(&body)), (status, code), "{body}");
        assert!(
            !body.to_string().contains("not-a-key"),
            "keys are never echoed: {body}"
        );
    }
    // Too large: over server.max_upload_mb (1 MiB).
    let big = vec![b'a'; 1_300_000];
    let (status, body) = upload(&server, Some(WRITE_KEY), &[("big.txt", &big)]);
    assert_eq!(
        (status, error_code(&body)),
        (413, "payload_too_large"),
        "{body}"
    );
    // Nothing readable at all.
    let (status, body) = upload(&server, Some(WRITE_KEY), &[("bad.txt", b"a\0b")]);
    assert_eq!(
        (status, error_code(&body)),
        (422, "unprocessable"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uploads/bad.txt"),
        "{body}"
    );

    // Refused uploads leave nothing staged.
    let staging = tmp.path().join("data/uploads/.staging");
    assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none());

    // One good file, one binary file, one unsupported type: the good one is indexed.
    let (status, body) = upload(
        &server,
        Some(WRITE_KEY),
        &[
            ("zorblax.txt", ZORBLAX.as_bytes()),
            ("bad.txt", b"a\0b"),
            ("notes.docx", b"PK"),
        ],
    );
    assert_eq!(status, 202, "{body}");
    let files = body["job"]["files"].as_array().unwrap();
    assert_eq!(files[0]["status"], "queued", "{body}");
    let zorblax_id = files[0]["doc_ids"][0].as_str().unwrap().to_string();
    assert!(
        files[1]["error"].as_str().unwrap().contains("binary file"),
        "{body}"
    );
    assert!(
        files[2]["error"]
            .as_str()
            .unwrap()
            .contains("unsupported file type"),
        "{body}"
    );
    let job = wait_for_job(&server, body["job"]["id"].as_str().unwrap());
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["files"][0]["status"], "indexed", "{job}");
    assert_eq!(job["files"][1]["status"], "failed", "{job}");
    assert!(job["passages_total"].as_u64().unwrap() >= 1);
    assert_eq!(job["passages_done"], job["passages_total"], "{job}");
    let (status, doc) = call(
        with_key(
            ureq::get(&server.url(&format!("/v1/documents/{zorblax_id}"))),
            READ_KEY,
        ),
        None,
    );
    assert_eq!(
        (status, doc["source"].as_str().unwrap()),
        (200, "uploads/zorblax.txt"),
        "{doc}"
    );

    // Search finds it; bad searches are 4xx with JSON.
    let hits = search(&server, "When is the Zorblax festival?");
    assert_eq!(hits[0]["doc_id"], zorblax_id.as_str(), "{hits:?}");
    for (bad, status) in [
        (json!({"query": "x", "k": 0}), 400),
        (json!({"query": "  "}), 400),
        (json!({"query": "x", "mode": "fuzzy"}), 422),
        (json!({"text": "x"}), 422),
    ] {
        let (got, body) = call(
            with_key(ureq::post(&server.url("/v1/search")), READ_KEY),
            Some(&bad),
        );
        assert_eq!(got, status, "{bad} -> {body}");
        error_code(&body);
    }
    let (status, body) = respond(
        with_key(ureq::post(&server.url("/v1/search")), READ_KEY)
            .set("Content-Type", "application/json")
            .send_string("{not json"),
    );
    assert_eq!((status, error_code(&body)), (400, "bad_request"));
    // Wrong method, unknown route, an id that is not UTF-8: JSON errors too.
    for (request, status, code) in [
        (
            ureq::put(&server.url("/v1/search")),
            405,
            "method_not_allowed",
        ),
        (ureq::get(&server.url("/v2/nothing")), 404, "not_found"),
        (
            ureq::get(&server.url("/v1/documents/%FF")),
            400,
            "bad_request",
        ),
    ] {
        let (got, body) = call(with_key(request, READ_KEY), None);
        assert_eq!((got, error_code(&body)), (status, code), "{body}");
    }

    // RAG-Token, as JSON.
    let (status, answer) = call(
        with_key(ureq::post(&server.url("/v1/ask")), READ_KEY),
        Some(
            &json!({"question": "When is the Zorblax festival held?", "n_docs": 3, "beams": 1, "max_new_tokens": 16}),
        ),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["answer"].as_str().unwrap().contains("June"),
        "{answer}"
    );
    assert_eq!(answer["mode"], "token");
    let citations = answer["citations"].as_array().unwrap();
    assert_eq!(citations.len(), 3);
    assert_eq!(citations[0]["doc_id"], zorblax_id.as_str(), "{answer}");
    assert!(citations[0]["snippet"]
        .as_str()
        .unwrap()
        .starts_with("The Zorblax festival"));
    let total: f64 = citations
        .iter()
        .map(|c| c["posterior"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-3, "{answer}");
    assert!(answer["timings_ms"]["decode"].as_f64().unwrap() > 0.0);

    // RAG-Sequence, streamed: previews as tokens are chosen, then the answer.
    let response = with_key(ureq::post(&server.url("/v1/ask")), READ_KEY)
        .set("Content-Type", "application/json")
        .send_string(
            &json!({"question": "Who planted the oldest tree at Wendlow Hill?", "mode": "sequence", "decoding": "fast",
                    "n_docs": 2, "beams": 2, "max_new_tokens": 16, "stream": true, "search_mode": "hybrid"})
            .to_string(),
        );
    // The orchard is not indexed yet: the answer cites the demo corpus.
    let streamed = events(response.unwrap());
    let (last, rest) = streamed.split_last().unwrap();
    assert_eq!(last.0, "answer", "{streamed:?}");
    assert!(
        !rest.is_empty() && rest.iter().all(|(e, _)| e == "token"),
        "{streamed:?}"
    );
    let mut text = String::new();
    for (_, token) in rest {
        if token["revised"] == true {
            text = token["partial"].as_str().unwrap().to_string();
        } else {
            text.push_str(token["delta"].as_str().unwrap());
        }
        assert_eq!(text, token["partial"].as_str().unwrap());
    }
    assert_eq!(last.1["mode"], "sequence (fast)");
    assert_eq!(last.1["citations"].as_array().unwrap().len(), 2);
    assert!(!last.1["answer"].as_str().unwrap().is_empty(), "{last:?}");

    // Bad questions.
    for (bad, status) in [
        (json!({"question": ""}), 400),
        (json!({"question": "x", "n_docs": 0}), 400),
        (json!({"question": "x", "beams": 99}), 400),
        (json!({"question": "x", "mode": "paragraph"}), 422),
    ] {
        let (got, body) = call(
            with_key(ureq::post(&server.url("/v1/ask")), READ_KEY),
            Some(&bad),
        );
        assert_eq!(got, status, "{bad} -> {body}");
        error_code(&body);
    }

    // Delete: write scope only; then the document is gone everywhere.
    let doc_url = server.url(&format!("/v1/documents/{zorblax_id}"));
    let (status, body) = call(with_key(ureq::delete(&doc_url), READ_KEY), None);
    assert_eq!((status, error_code(&body)), (403, "forbidden"));
    let (status, body) = call(with_key(ureq::delete(&doc_url), WRITE_KEY), None);
    assert_eq!(
        (status, body["doc_id"].as_str().unwrap()),
        (200, zorblax_id.as_str()),
        "{body}"
    );
    assert!(!tmp.path().join("data/uploads/zorblax.txt").exists());
    let (status, body) = call(with_key(ureq::get(&doc_url), READ_KEY), None);
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let (status, _) = call(with_key(ureq::delete(&doc_url), WRITE_KEY), None);
    assert_eq!(status, 404);
    assert!(search(&server, "When is the Zorblax festival?")
        .iter()
        .all(|h| h["doc_id"] != zorblax_id.as_str()));

    // Another upload, then a restart: it is still there, the deleted one is not.
    let (status, body) = upload(
        &server,
        Some(WRITE_KEY),
        &[("orchard.md", ORCHARD.as_bytes())],
    );
    assert_eq!(status, 202, "{body}");
    let orchard_id = body["job"]["files"][0]["doc_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        wait_for_job(&server, body["job"]["id"].as_str().unwrap())["status"],
        "done"
    );
    assert!(tmp.path().join("data/uploads/orchard.md").is_file());

    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for name in [
        "margin_http_requests_total{",
        "margin_ask_batch_questions_count",
        "margin_ask_stage_seconds_bucket",
        "margin_documents 7",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let (status, openapi) = call(ureq::get(&server.url("/openapi.json")), None);
    assert_eq!(status, 200);
    assert!(openapi["paths"]["/v1/ask"]["post"].is_object());
    server.stop();

    let server = Server::start(tmp.path(), &models, &settings);
    let (status, page) = call(
        with_key(ureq::get(&server.url("/v1/documents?limit=1000")), READ_KEY),
        None,
    );
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["doc_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, demo_documents + 1, "{page}");
    assert!(
        ids.contains(&orchard_id.as_str()) && !ids.contains(&zorblax_id.as_str()),
        "{ids:?}"
    );
    assert_eq!(
        search(&server, "Who planted the oldest pear tree?")[0]["doc_id"],
        orchard_id.as_str()
    );
    server.stop();
}

#[test]
fn concurrent_questions_share_batches_and_overload_is_refused() {
    let Some(models) = models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        tmp.path(),
        &models,
        &[("server.ask_queue", "3"), ("server.ask_batch", "8")],
    );
    let url = server.url("/v1/ask");
    let questions = [
        "Why does the moon cause tides?",
        "What do honeybees eat?",
        "Who built the first quartz clock?",
        "What does a lighthouse do?",
        "Why is the sky blue?",
        "How do bees make honey?",
        "When was the prime meridian chosen?",
        "What is a spring tide?",
        "How far does light from a lighthouse reach?",
        "What powers a clock?",
    ];
    let start = std::sync::Arc::new(std::sync::Barrier::new(questions.len()));
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| {
                let (url, start) = (url.clone(), start.clone());
                s.spawn(move || {
                    start.wait();
                    call(
                        ureq::post(&url),
                        Some(
                            &json!({"question": q, "n_docs": 2, "beams": 1, "max_new_tokens": 24}),
                        ),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ok.len() + refused.len(), questions.len(), "{answers:?}");
    assert!(
        !refused.is_empty(),
        "a queue of 3 should refuse some of 10 questions: {answers:?}"
    );
    assert!(refused.iter().all(|b| error_code(b) == "queue_full"));
    // Questions that waited together were decoded together.
    assert!(
        ok.iter().any(|b| b["batch_size"].as_u64().unwrap() >= 2),
        "{ok:?}"
    );
    for b in &ok {
        assert!(!b["answer"].as_str().unwrap().is_empty(), "{b}");
    }
    // Still serving.
    let (status, _) = call(
        ureq::post(&url),
        Some(
            &json!({"question": "What do honeybees eat?", "n_docs": 1, "beams": 1, "max_new_tokens": 4}),
        ),
    );
    assert_eq!(status, 200);
}

#[test]
fn a_slow_request_times_out_with_a_json_error() {
    let Some(models) = models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &models, &[("server.request_timeout_secs", "1")]);
    let (status, body) = call(
        ureq::post(&server.url("/v1/ask")),
        Some(
            &json!({"question": "Why does the moon cause tides?", "mode": "sequence", "n_docs": 5, "beams": 4, "max_new_tokens": 128}),
        ),
    );
    assert_eq!((status, error_code(&body)), (503, "timeout"), "{body}");
    // A stream past its deadline ends with a timeout event.
    let response = ureq::post(&server.url("/v1/ask"))
        .set("Content-Type", "application/json")
        .send_string(
            &json!({"question": "Why does the moon cause tides?", "mode": "sequence", "n_docs": 5, "beams": 4, "max_new_tokens": 128, "stream": true})
                .to_string(),
        )
        .unwrap();
    let streamed = events(response);
    let (event, data) = streamed.last().unwrap();
    assert_eq!(
        (event.as_str(), error_code(data)),
        ("error", "timeout"),
        "{streamed:?}"
    );
    let (status, body) = call(ureq::get(&server.url("/readyz")), None);
    assert_eq!((status, body["ready"].as_bool()), (200, Some(true)));
}

/// The web UI in headless Chromium (web/e2e/upload_ask.mjs). Skipped, and
/// said so, without Node.js, Chromium or web/e2e's packages (`npm ci` there);
/// `MARGIN_REQUIRE_BROWSER=1` (set by scripts/test.sh) makes that a failure.
#[test]
fn the_web_ui_uploads_a_file_and_answers_a_question_about_it() {
    let Some(models) = models() else { return };
    let e2e = workspace_root().join("web/e2e");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [
        (
            Command::new("node").arg("--version").output().is_err(),
            "node",
        ),
        (!Path::new(&chromium).exists(), "chromium"),
        (
            !e2e.join("node_modules/playwright-core").is_dir(),
            "web/e2e/node_modules (npm ci)",
        ),
    ]
    .into_iter()
    .filter_map(|(gone, what)| gone.then_some(what))
    .collect();
    if !missing.is_empty() {
        let message = format!(
            "SKIPPED {TEST}: the browser test needs {}",
            missing.join(", ")
        );
        assert!(
            std::env::var("MARGIN_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "{message}"
        );
        eprintln!("{message}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &models, &[]);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-e2e");
    let run = Command::new("node")
        .current_dir(&e2e)
        .env("CHROMIUM", &chromium)
        .arg("upload_ask.mjs")
        .args([server.url.as_str(), WRITE_KEY])
        .arg(&out)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{report}");
    eprintln!("{report}");
    assert!(out.join("ask-light.png").is_file() && out.join("ask-dark.png").is_file());
    server.stop();
}
