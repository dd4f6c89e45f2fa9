//! The document registry: which version of each document is indexed, kept as
//! an append-only journal so that a crash at any byte leaves a readable state.
//!
//! A document version is first announced (`begin`), then written to every
//! store and flushed, and only then recorded (`commit`). Versions announced
//! but never committed, and versions superseded or removed, are *pending*:
//! their passages may still sit in a store and are purged on the next open.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use margin_core::{OperationError, OperationResult};
use margin_store::DocVersion;
use serde::{Deserialize, Serialize};

/// One indexed document, as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// Document id.
    pub doc_id: String,
    /// Version indexed (a hash of the passages and of how they were made).
    pub generation: String,
    /// Title of the document's first passage.
    pub title: String,
    /// Where it came from.
    pub source: String,
    /// Number of passages stored.
    pub passages: usize,
    /// When it was indexed, seconds since the Unix epoch.
    pub indexed_at: u64,
}

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Event {
    /// These versions are about to be written.
    Begin { versions: Vec<DocVersion> },
    /// These documents are now indexed in full (replacing older versions).
    Commit { documents: Vec<DocumentRecord> },
    /// These documents are deleted.
    Remove { doc_ids: Vec<String> },
    /// These versions' passages are gone from every store.
    Purged { versions: Vec<DocVersion> },
    /// The whole state, written when the journal is compacted.
    Snapshot {
        documents: Vec<DocumentRecord>,
        pending: Vec<DocVersion>,
    },
}

/// The registry of indexed documents, persisted in one journal file.
pub struct Registry {
    path: PathBuf,
    file: File,
    documents: BTreeMap<String, DocumentRecord>,
    pending: BTreeSet<DocVersion>,
    /// Journal lines, to decide when compaction pays.
    lines: usize,
}

impl Registry {
    /// Opens (or creates) the journal at `path` and replays it. A torn last
    /// line, left by a crash in the middle of a write, is cut off; damage
    /// anywhere else is an error naming the line.
    pub fn open(path: &Path) -> OperationResult<Registry> {
        let io = |e| OperationError::io(path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut registry = Registry {
            path: path.to_path_buf(),
            file: file.try_clone().map_err(io)?,
            documents: BTreeMap::new(),
            pending: BTreeSet::new(),
            lines: 0,
        };
        let mut reader = BufReader::new(&mut file);
        let mut good_len = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            if !line.ends_with('\n') {
                // Only the last line can lack its newline: an append a crash interrupted.
                break;
            }
            match serde_json::from_str::<Event>(line.trim_end()) {
                Ok(event) => {
                    registry.apply(event);
                    registry.lines += 1;
                    good_len += n as u64;
                }
                Err(e) => {
                    return Err(OperationError::store(
                        format!("registry {}", path.display()),
                        format!(
                            "line {} is damaged ({e}); restore a backup or index again into a new data_dir",
                            registry.lines + 1
                        ),
                    ))
                }
            }
        }
        let len = file.metadata().map_err(io)?.len();
        if len != good_len {
            tracing::warn!(
                path = %path.display(),
                "cutting off a torn journal line ({} bytes) left by an interrupted write",
                len - good_len
            );
            file.set_len(good_len).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        Ok(registry)
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Begin { versions } => self.pending.extend(versions),
            Event::Commit { documents } => {
                for record in documents {
                    let new = DocVersion::new(&record.doc_id, &record.generation);
                    self.pending.remove(&new);
                    if let Some(old) = self.documents.insert(record.doc_id.clone(), record) {
                        if old.generation != new.generation {
                            self.pending
                                .insert(DocVersion::new(old.doc_id, old.generation));
                        }
                    }
                }
            }
            Event::Remove { doc_ids } => {
                for doc_id in doc_ids {
                    if let Some(old) = self.documents.remove(&doc_id) {
                        self.pending
                            .insert(DocVersion::new(old.doc_id, old.generation));
                    }
                }
            }
            Event::Purged { versions } => {
                for version in versions {
                    self.pending.remove(&version);
                }
            }
            Event::Snapshot { documents, pending } => {
                self.documents = documents
                    .into_iter()
                    .map(|r| (r.doc_id.clone(), r))
                    .collect();
                self.pending = pending.into_iter().collect();
            }
        }
    }

    /// Appends `event` durably (fsync), then applies it.
    fn record(&mut self, event: Event) -> OperationResult<()> {
        let mut line = serde_json::to_string(&event).expect("events serialize");
        line.push('\n');
        let io = |e| OperationError::io(&self.path, e);
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.lines += 1;
        self.apply(event);
        Ok(())
    }

    /// Announces versions about to be written to the stores.
    pub fn begin(&mut self, versions: Vec<DocVersion>) -> OperationResult<()> {
        self.record(Event::Begin { versions })
    }

    /// Records documents as indexed in full; their older versions become pending.
    pub fn commit(&mut self, documents: Vec<DocumentRecord>) -> OperationResult<()> {
        self.record(Event::Commit { documents })
    }

    /// Deletes documents from the registry; their versions become pending.
    pub fn remove(&mut self, doc_ids: Vec<String>) -> OperationResult<()> {
        self.record(Event::Remove { doc_ids })
    }

    /// Records that `versions` are gone from every store.
    pub fn purged(&mut self, versions: Vec<DocVersion>) -> OperationResult<()> {
        self.record(Event::Purged { versions })?;
        self.compact_if_worthwhile()
    }

    /// Rewrites the journal as one snapshot once it is mostly history, so it
    /// does not grow without bound across re-indexing.
    fn compact_if_worthwhile(&mut self) -> OperationResult<()> {
        if self.lines < 64 || self.lines < 4 * (self.documents.len() / 256 + 1) {
            return Ok(());
        }
        let snapshot = Event::Snapshot {
            documents: self.documents.values().cloned().collect(),
            pending: self.pending.iter().cloned().collect(),
        };
        let tmp = self.path.with_extension("compacting");
        let io = |e| OperationError::io(&tmp, e);
        let mut file = File::create(&tmp).map_err(io)?;
        let mut line = serde_json::to_string(&snapshot).expect("events serialize");
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| OperationError::io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            // The rename itself must survive a power cut.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| OperationError::io(dir, e))?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| OperationError::io(&self.path, e))?;
        self.lines = 1;
        Ok(())
    }

    /// The indexed version of `doc_id`.
    pub fn get(&self, doc_id: &str) -> Option<&DocumentRecord> {
        self.documents.get(doc_id)
    }

    /// Every indexed document, by id.
    pub fn documents(&self) -> impl ExactSizeIterator<Item = &DocumentRecord> {
        self.documents.values()
    }

    /// Number of versions whose passages may linger in a store.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Versions whose passages may linger in a store.
    pub fn pending(&self) -> Vec<DocVersion> {
        self.pending.iter().cloned().collect()
    }

    /// Whether `version` is the indexed version of its document.
    pub fn is_current(&self, doc_id: &str, generation: &str) -> bool {
        self.documents
            .get(doc_id)
            .is_some_and(|r| r.generation == generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(doc: &str, generation: &str) -> DocumentRecord {
        DocumentRecord {
            doc_id: doc.into(),
            generation: generation.into(),
            title: doc.to_uppercase(),
            source: format!("{doc}.txt"),
            passages: 2,
            indexed_at: 1,
        }
    }

    fn v(doc: &str, generation: &str) -> DocVersion {
        DocVersion::new(doc, generation)
    }

    #[test]
    fn replay_gives_back_documents_and_pending_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.jsonl");
        {
            let mut r = Registry::open(&path).unwrap();
            r.begin(vec![v("a", "1"), v("b", "1")]).unwrap();
            r.commit(vec![record("a", "1"), record("b", "1")]).unwrap();
            r.begin(vec![v("a", "2"), v("c", "1")]).unwrap();
            r.commit(vec![record("a", "2")]).unwrap();
            r.remove(vec!["b".into()]).unwrap();
        }
        let r = Registry::open(&path).unwrap();
        assert!(r.is_current("a", "2") && !r.is_current("a", "1"));
        assert!(r.get("b").is_none());
        assert_eq!(
            r.pending(),
            vec![v("a", "1"), v("b", "1"), v("c", "1")],
            "superseded, removed and never committed versions wait to be purged"
        );
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_damage_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.jsonl");
        {
            let mut r = Registry::open(&path).unwrap();
            r.commit(vec![record("a", "1")]).unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"op":"commit","documents":[{"doc_"#)
            .unwrap();
        drop(file);
        {
            let mut r = Registry::open(&path).unwrap();
            assert_eq!(r.documents().len(), 1);
            r.commit(vec![record("b", "1")]).unwrap();
        }
        assert_eq!(Registry::open(&path).unwrap().documents().len(), 2);

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("garbage\n{text}")).unwrap();
        let err = Registry::open(&path).err().unwrap().to_string();
        assert!(err.contains("line 1 is damaged"), "{err}");
    }

    #[test]
    fn compaction_keeps_the_state_and_shrinks_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.jsonl");
        {
            let mut r = Registry::open(&path).unwrap();
            for round in 0..40 {
                let generation = round.to_string();
                r.begin(vec![v("a", &generation)]).unwrap();
                r.commit(vec![record("a", &generation)]).unwrap();
                if round > 0 {
                    r.purged(vec![v("a", &(round - 1).to_string())]).unwrap();
                }
            }
            r.begin(vec![v("z", "9")]).unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 64, "journal compacted ({lines} lines)");
        let r = Registry::open(&path).unwrap();
        assert!(r.is_current("a", "39"));
        assert_eq!(r.pending(), vec![v("z", "9")]);
    }
}
