//! The model cache end to end with the local source: fetch, verify, reject
//! bad hashes without touching what was stored, derive GGUF tokenizers.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use margin_core::OperationError;
use margin_models::checksum::sha256_file;
use margin_models::{ModelStatus, ModelStore, PullOutcome};

mod common;

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    local: PathBuf,
    catalogue: String,
}

fn catalogue_entry(name: &str, files: &[(&str, &str)]) -> String {
    let files = files
        .iter()
        .map(|(f, h)| format!("{{ name = \"{f}\", sha256 = \"{h}\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[model]]\nname = \"{name}\"\ndescription = \"test\"\nroles = [\"generator\"]\narchitecture = \"llama\"\nlicense = \"none\"\nfiles = [{files}]\n\n"
    )
}

fn fixture(entries: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let local = tmp.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    Fixture {
        _tmp: tmp,
        data,
        local,
        catalogue: entries.to_string(),
    }
}

fn store(f: &Fixture) -> ModelStore {
    common::store_with(
        &f.data,
        &f.catalogue,
        &[("models.local_dir", f.local.to_str().unwrap())],
    )
}

fn write_local(f: &Fixture, model: &str, file: &str, bytes: &[u8]) -> String {
    let path = f.local.join(model).join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    sha256_file(&path).unwrap()
}

#[test]
fn pull_from_local_then_verify_and_detect_tampering() {
    let good = common::sha256_of(b"{\"a\": 1}");
    let weights = common::sha256_of(b"weights");
    let f = fixture(&catalogue_entry(
        "m",
        &[("config.json", &good), ("sub/w.bin", &weights)],
    ));
    write_local(&f, "m", "config.json", b"{\"a\": 1}");
    write_local(&f, "m", "sub/w.bin", b"weights");
    let store = store(&f);

    assert_eq!(store.status("m"), ModelStatus::Missing);
    assert!(store
        .resolve("m")
        .unwrap_err()
        .to_string()
        .contains("margin models pull m"));
    match store.pull("m", false).unwrap() {
        PullOutcome::Fetched {
            source, pinned_now, ..
        } => {
            assert!(source.starts_with("local "), "{source}");
            assert!(pinned_now.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.pull("m", false).unwrap(),
        PullOutcome::AlreadyPresent { .. }
    ));
    let dir = store.resolve("m").unwrap();
    assert_eq!(std::fs::read(dir.join("sub/w.bin")).unwrap(), b"weights");
    assert_eq!(store.verify("m").unwrap().len(), 2);

    std::fs::write(dir.join("sub/w.bin"), b"tampered").unwrap();
    let err = store.verify("m").unwrap_err();
    assert!(
        matches!(err, OperationError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("w.bin"));
}

#[test]
fn hash_mismatch_is_rejected_and_the_cached_copy_survives() {
    let good = common::sha256_of(b"v1");
    let f = fixture(&catalogue_entry("m", &[("w.bin", &good)]));
    write_local(&f, "m", "w.bin", b"v1");
    let store = store(&f);
    store.pull("m", false).unwrap();

    // The source now serves other bytes; a forced pull must fail and keep v1.
    write_local(&f, "m", "w.bin", b"v2-corrupt");
    let err = store.pull("m", true).unwrap_err().to_string();
    assert!(
        err.contains("SHA-256 mismatch") && err.contains("source local"),
        "{err}"
    );
    let dir = store.resolve("m").unwrap();
    assert_eq!(std::fs::read(dir.join("w.bin")).unwrap(), b"v1");
    store.verify("m").unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(f.data.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".staging") || n.starts_with(".old"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging folders left behind: {leftovers:?}"
    );
}

#[test]
fn unpinned_hash_is_pinned_on_first_pull_then_enforced() {
    let f = fixture(&catalogue_entry("m", &[("w.bin", "")]));
    write_local(&f, "m", "w.bin", b"first");
    let store = store(&f);
    match store.pull("m", false).unwrap() {
        PullOutcome::Fetched { pinned_now, .. } => {
            assert_eq!(pinned_now, vec!["w.bin".to_string()])
        }
        other => panic!("{other:?}"),
    }
    let dir = store.resolve("m").unwrap();
    std::fs::write(dir.join("w.bin"), b"changed").unwrap();
    assert!(store.verify("m").is_err(), "the pinned hash is enforced");
}

#[test]
fn every_failing_source_is_named_with_a_hint() {
    let f = fixture(&catalogue_entry("m", &[("w.bin", "")]));
    let store = store(&f);
    let err = store.pull("m", false).unwrap_err().to_string();
    assert!(err.contains("model `m`") && err.contains("local"), "{err}");
    assert!(
        err.contains("models.local_dir") || err.contains("local folder"),
        "{err}"
    );
    assert!(store
        .pull("no-such-model", false)
        .unwrap_err()
        .to_string()
        .contains("not in the model catalogue"));
}

#[test]
fn a_local_model_folder_resolves_as_is() {
    let f = fixture("");
    let store = store(&f);
    let dir = f.local.join("any");
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(store.resolve(dir.to_str().unwrap()).unwrap(), dir);
}

fn write_tiny_gguf(path: &Path) {
    let tokens: Vec<Value> = ["<unk>", "<s>", "</s>", "h", "i", "hi", "<|im_start|>"]
        .iter()
        .map(|t| Value::String(t.to_string()))
        .collect();
    let types = Value::Array(
        vec![2, 3, 3, 1, 1, 1, 3]
            .into_iter()
            .map(Value::I32)
            .collect(),
    );
    let merges = Value::Array(vec![Value::String("h i".into())]);
    let model = Value::String("gpt2".into());
    let tokens = Value::Array(tokens);
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(
        &mut file,
        &[
            ("tokenizer.ggml.model", &model),
            ("tokenizer.ggml.tokens", &tokens),
            ("tokenizer.ggml.token_type", &types),
            ("tokenizer.ggml.merges", &merges),
        ],
        &[],
    )
    .unwrap();
}

#[test]
fn gguf_models_get_a_tokenizer_derived_from_metadata() {
    let scratch = tempfile::tempdir().unwrap();
    let probe = scratch.path().join("m.gguf");
    write_tiny_gguf(&probe);
    let hash = sha256_file(&probe).unwrap();
    let f = fixture(&catalogue_entry("g", &[("m.gguf", &hash)]));
    let target = f.local.join("g/m.gguf");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(&probe, &target).unwrap();
    let store = store(&f);
    store.pull("g", false).unwrap();
    let dir = store.resolve("g").unwrap();
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let enc = tokenizer.encode("<|im_start|>hi", false).unwrap();
    assert_eq!(enc.get_ids(), &[6, 5]);
    let manifest = store.manifest("g").unwrap().unwrap();
    let derived = manifest
        .files
        .iter()
        .find(|f| f.name == "tokenizer.json")
        .unwrap();
    assert!(derived.derived_from.as_deref().unwrap().contains("m.gguf"));
    assert_eq!(
        store.verify("g").unwrap().len(),
        2,
        "the derived file is verified too"
    );
}

#[test]
fn forced_pull_keeps_the_hash_pinned_at_first_download() {
    let f = fixture(&catalogue_entry("m", &[("w.bin", "")]));
    write_local(&f, "m", "w.bin", b"first");
    let store = store(&f);
    store.pull("m", false).unwrap();
    write_local(&f, "m", "w.bin", b"swapped upstream");
    let err = store.pull("m", true).unwrap_err().to_string();
    assert!(
        err.contains("SHA-256 mismatch") && err.contains("first download"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(store.resolve("m").unwrap().join("w.bin")).unwrap(),
        b"first"
    );
    // Removing the model is how a new pin is accepted.
    std::fs::remove_dir_all(store.model_dir("m")).unwrap();
    store.pull("m", false).unwrap();
    assert_eq!(
        std::fs::read(store.resolve("m").unwrap().join("w.bin")).unwrap(),
        b"swapped upstream"
    );
}

#[test]
fn leftovers_of_interrupted_pulls_are_cleared_and_only_ours() {
    let good = common::sha256_of(b"v1");
    let f = fixture(&catalogue_entry("m", &[("w.bin", &good)]));
    write_local(&f, "m", "w.bin", b"v1");
    let models = f.data.join("models");
    for leftover in [".staging~m~1-0-0", ".old~m~2-0-0", ".staging~m-2~3-0-0"] {
        std::fs::create_dir_all(models.join(leftover)).unwrap();
    }
    let store = store(&f);
    store.pull("m", false).unwrap();
    assert!(!models.join(".staging~m~1-0-0").exists());
    assert!(!models.join(".old~m~2-0-0").exists());
    assert!(
        models.join(".staging~m-2~3-0-0").exists(),
        "another model's folder is not touched"
    );
    store.verify("m").unwrap();
}

#[test]
fn concurrent_pulls_of_one_model_both_succeed() {
    let good = common::sha256_of(b"weights");
    let f = fixture(&catalogue_entry("m", &[("w.bin", &good)]));
    write_local(&f, "m", "w.bin", b"weights");
    let store = store(&f);
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| store.pull("m", false)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let fetched = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(PullOutcome::Fetched { .. })))
        .count();
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    assert_eq!(
        fetched, 1,
        "the lock lets one pull fetch; the others find it present"
    );
    store.verify("m").unwrap();
}

#[test]
fn a_damaged_manifest_is_reported_and_repaired_by_ensure() {
    let good = common::sha256_of(b"v1");
    let f = fixture(&catalogue_entry("m", &[("w.bin", &good)]));
    write_local(&f, "m", "w.bin", b"v1");
    let store = store(&f);
    store.pull("m", false).unwrap();
    std::fs::write(
        store.model_dir("m").join("margin-manifest.json"),
        "{ not json",
    )
    .unwrap();
    assert!(matches!(store.status("m"), ModelStatus::Damaged { .. }));
    assert!(store
        .resolve("m")
        .unwrap_err()
        .to_string()
        .contains("--force"));
    store.ensure("m").unwrap();
    assert!(matches!(store.status("m"), ModelStatus::Present { .. }));
    assert!(store
        .resolve("no/such/folder")
        .unwrap_err()
        .to_string()
        .contains("no such folder"));
}
