//! Ingesting many files and directories at once, reporting on each.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use margin_core::{Document, OperationError, OperationResult, Passage};
use serde::Serialize;

use crate::chunk::Chunker;
use crate::readers::{read_documents, unsupported_type, Format};

/// Reads one file and splits its documents into passages.
pub fn ingest_file(path: &Path, chunker: &Chunker) -> OperationResult<Vec<Passage>> {
    Ok(chunker.chunk_all(&read_documents(path)?))
}

/// What became of one file of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum FileOutcome {
    /// Read and split into passages.
    Ingested,
    /// Not read, on purpose: an unsupported extension, a path listed twice,
    /// or a symbolic link to a directory.
    Skipped {
        /// Why the file was passed over.
        reason: String,
    },
    /// Could not be used; none of its passages are in the batch.
    Failed {
        /// What was wrong, naming the file (and the line, for corpus files).
        error: String,
    },
}

/// The report on one file (or on a path that could not be listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The path, as given or as found under a given directory.
    pub path: String,
    /// The format chosen from the extension, if it is one margin reads.
    pub format: Option<Format>,
    /// Documents read from the file.
    pub documents: usize,
    /// Passages cut from those documents.
    pub passages: usize,
    /// Whether the file was ingested, skipped or failed, and why.
    #[serde(flatten)]
    pub outcome: FileOutcome,
}

/// Counts over a whole batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Files read and split.
    pub files_ingested: usize,
    /// Paths passed over (see [`FileOutcome::Skipped`]).
    pub files_skipped: usize,
    /// Files (or paths) that could not be used.
    pub files_failed: usize,
    /// Documents read from the ingested files.
    pub documents: usize,
    /// Passages cut from those documents.
    pub passages: usize,
}

/// The result of [`ingest_paths`]: a report per file, totals, and the passages.
#[derive(Debug, Default, Serialize)]
pub struct IngestReport {
    /// One report per file found, in the order read.
    pub files: Vec<FileReport>,
    /// Counts over all files.
    pub totals: Totals,
    /// Every passage of every ingested file, in file order. Not serialized:
    /// the report is a summary, and passages are written on their own (e.g. as JSONL).
    #[serde(skip)]
    pub passages: Vec<Passage>,
}

/// Ingests files and directories; a file that fails is reported and skipped,
/// and the rest of the batch goes on.
///
/// Directories are walked recursively in sorted order. Hidden entries (names
/// starting with `.`) are passed over silently; symbolic links to directories
/// are reported as skipped, not followed, so a link cycle cannot trap the walk;
/// files with an extension margin does not read are reported as skipped. A path
/// met twice is read once. A file whose document ids an earlier file already
/// used fails, since passage ids must be unique in an index.
pub fn ingest_paths(paths: &[PathBuf], chunker: &Chunker) -> IngestReport {
    let mut listed = Vec::new();
    for path in paths {
        list(path, &mut listed);
    }
    let mut batch = Batch {
        chunker,
        report: IngestReport::default(),
        seen_paths: HashSet::new(),
        seen_ids: HashMap::new(),
    };
    for entry in listed {
        let file_report = match entry {
            Listed::File(path) => batch.ingest(path),
            Listed::Skipped(path, reason) => file_report(&path, FileOutcome::Skipped { reason }),
            Listed::Unreadable(path, error) => file_report(
                &path,
                FileOutcome::Failed {
                    error: error.to_string(),
                },
            ),
        };
        batch.report.files.push(file_report);
    }
    let mut report = batch.report;
    report.totals = totals(&report.files);
    report
}

/// A batch being ingested, with what it has seen so far.
struct Batch<'a> {
    chunker: &'a Chunker,
    report: IngestReport,
    seen_paths: HashSet<PathBuf>,
    /// Document id to the index in `report.files` of the file it came from.
    seen_ids: HashMap<String, usize>,
}

impl Batch<'_> {
    /// Reads one file, adding its passages to the report; returns its file report.
    fn ingest(&mut self, path: PathBuf) -> FileReport {
        let Some(format) = Format::from_path(&path) else {
            let reason = unsupported_type();
            return file_report(&path, FileOutcome::Skipped { reason });
        };
        if !self.seen_paths.insert(path.clone()) {
            let reason = "listed more than once; read the first time".to_string();
            return file_report(&path, FileOutcome::Skipped { reason });
        }
        match self.read_new_documents(&path, format) {
            Ok(documents) => {
                let passages = self.chunker.chunk_all(&documents);
                let report = FileReport {
                    documents: documents.len(),
                    passages: passages.len(),
                    ..file_report(&path, FileOutcome::Ingested)
                };
                self.report.passages.extend(passages);
                report
            }
            Err(error) => file_report(
                &path,
                FileOutcome::Failed {
                    error: error.to_string(),
                },
            ),
        }
    }

    /// Reads `path`, refusing it if an earlier file used one of its document ids.
    fn read_new_documents(
        &mut self,
        path: &Path,
        format: Format,
    ) -> OperationResult<Vec<Document>> {
        let documents = format.read(path)?;
        let repeated = documents
            .iter()
            .find_map(|d| Some((&d.id, *self.seen_ids.get(&d.id)?)));
        if let Some((id, earlier)) = repeated {
            return Err(OperationError::bad_input(
                path.display().to_string(),
                format!(
                    "document id `{id}` was already read from {}; ids must be unique across a batch",
                    self.report.files[earlier].path
                ),
            ));
        }
        let index = self.report.files.len();
        self.seen_ids
            .extend(documents.iter().map(|d| (d.id.clone(), index)));
        Ok(documents)
    }
}

/// A report on `path` with no documents yet.
fn file_report(path: &Path, outcome: FileOutcome) -> FileReport {
    FileReport {
        path: path.display().to_string(),
        format: Format::from_path(path),
        documents: 0,
        passages: 0,
        outcome,
    }
}

/// A path found while listing the batch.
enum Listed {
    /// A file to read.
    File(PathBuf),
    /// A path passed over, and why.
    Skipped(PathBuf, String),
    /// A path that could not be listed.
    Unreadable(PathBuf, OperationError),
}

/// Appends `path` if it is a file, or the files under it if it is a directory.
fn list(path: &Path, out: &mut Vec<Listed>) {
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => walk(path, out),
        Ok(_) => out.push(Listed::File(path.to_path_buf())),
        Err(e) => out.push(Listed::Unreadable(
            path.to_path_buf(),
            OperationError::io(path, e),
        )),
    }
}

/// Appends the entries under `dir`, sorted by name, depth first.
fn walk(dir: &Path, out: &mut Vec<Listed>) {
    let entries = fs::read_dir(dir).and_then(|entries| entries.collect::<Result<Vec<_>, _>>());
    let mut entries = match entries {
        Ok(entries) => entries,
        Err(e) => {
            return out.push(Listed::Unreadable(
                dir.to_path_buf(),
                OperationError::io(dir, e),
            ))
        }
    };
    entries.retain(|entry| !entry.file_name().to_string_lossy().starts_with('.'));
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk(&path, out),
            Ok(kind) if kind.is_symlink() && path.is_dir() => out.push(Listed::Skipped(
                path,
                "symbolic link to a directory, not followed; give its target to read it"
                    .to_string(),
            )),
            Ok(_) => out.push(Listed::File(path)),
            Err(e) => {
                let error = OperationError::io(&path, e);
                out.push(Listed::Unreadable(path, error));
            }
        }
    }
}

fn totals(files: &[FileReport]) -> Totals {
    let mut totals = Totals::default();
    for file in files {
        match file.outcome {
            FileOutcome::Ingested => totals.files_ingested += 1,
            FileOutcome::Skipped { .. } => totals.files_skipped += 1,
            FileOutcome::Failed { .. } => totals.files_failed += 1,
        }
        totals.documents += file.documents;
        totals.passages += file.passages;
    }
    totals
}
