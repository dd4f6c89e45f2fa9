//! The indexer and the searcher over margin's two stores.
//!
//! [`Index`] turns passages into a dense index (any [`VectorStore`]) and a
//! BM25 index kept in step, and answers dense, BM25 and hybrid searches.
//!
//! Documents are atomic: each version of a document is announced in the
//! [`Registry`], written to both stores, flushed, and only then recorded as
//! indexed; anything announced or superseded but not finished is purged when
//! the index is next opened. Searches only show passages of recorded
//! versions, so even a concurrent reader never sees half a document.

#![warn(missing_docs)]

mod registry;
mod search;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use margin_core::{OperationError, OperationResult, Passage};
use margin_encoder::{Encoder, PassageText};
use margin_store::{Bm25Index, DocVersion, PassagePoint, VectorStore};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use registry::{DocumentRecord, Registry};
pub use search::{HybridSettings, SearchHit, MAX_K};

/// Points per vector store write: large enough to amortise, small enough
/// that one write never holds the store for long.
const UPSERT_CHUNK: usize = 256;

/// Passages per encoder call while indexing, so progress moves steadily.
const EMBED_CHUNK: usize = 256;

/// Exclusive use of one index folder by one process: its stores are not
/// safe to write from two processes at once.
pub struct IndexLock {
    dir: PathBuf,
    _file: File,
}

impl IndexLock {
    /// Locks `dir` (creating it), or says which process-level conflict stops it.
    pub fn acquire(dir: &Path) -> OperationResult<IndexLock> {
        std::fs::create_dir_all(dir).map_err(|e| OperationError::io(dir, e))?;
        let path = dir.join("index.lock");
        let file = File::create(&path).map_err(|e| OperationError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(IndexLock {
                dir: dir.to_path_buf(),
                _file: file,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(OperationError::store(
                format!("index {}", dir.display()),
                "in use by another margin process (index, serve, …); wait for it to finish or stop it",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(OperationError::io(&path, e)),
        }
    }

    /// The locked folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// How an [`Index`] writes and searches.
#[derive(Debug, Clone)]
pub struct IndexSettings {
    /// Passages written between two durable commits.
    pub commit_passages: usize,
    /// How passages are made (chunking settings): part of every document
    /// version, so changing it re-indexes everything.
    pub chunking: String,
    /// Hybrid search settings.
    pub hybrid: HybridSettings,
}

/// Something worth showing while [`Index::index`] runs.
#[derive(Debug)]
pub enum IndexEvent<'a> {
    /// What will be done: documents seen, of them unchanged, and passages to embed.
    Planned {
        /// Documents in the input.
        documents: usize,
        /// Documents already indexed in this version, skipped.
        unchanged: usize,
        /// Passages of new or changed documents.
        passages: usize,
    },
    /// More passages were embedded.
    Embedded {
        /// How many, since the last event.
        passages: usize,
    },
    /// These documents are now durable and searchable.
    Committed {
        /// The documents, as recorded.
        documents: &'a [DocumentRecord],
    },
}

/// What an [`Index::index`] run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexSummary {
    /// Documents in the input.
    pub documents: usize,
    /// Documents already indexed in this version.
    pub unchanged: usize,
    /// Documents indexed for the first time.
    pub added: usize,
    /// Documents whose older version was replaced.
    pub replaced: usize,
    /// Passages embedded and stored.
    pub passages: usize,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Counts that show whether the stores agree with the registry.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStatus {
    /// The vector store.
    pub vector_store: String,
    /// Documents indexed.
    pub documents: usize,
    /// Passages of those documents, per the registry.
    pub passages: u64,
    /// Points in the vector store.
    pub dense_points: u64,
    /// Passages in the BM25 index.
    pub bm25_passages: u64,
    /// Versions waiting to be purged (0 after a clean open).
    pub pending_versions: usize,
    /// Whether both stores hold exactly the registered passages.
    pub consistent: bool,
}

/// A dense + BM25 index of documents, with its registry.
pub struct Index {
    lock: IndexLock,
    registry: RwLock<Registry>,
    vectors: Box<dyn VectorStore>,
    bm25: Bm25Index,
    encoder: Arc<dyn Encoder>,
    settings: IndexSettings,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Index {
    /// Opens the index in the locked folder over `vectors`, and purges what
    /// an interrupted run left half-written.
    pub fn open(
        lock: IndexLock,
        vectors: Box<dyn VectorStore>,
        encoder: Arc<dyn Encoder>,
        settings: IndexSettings,
    ) -> OperationResult<Index> {
        if encoder.dim() != vectors.dim() {
            return Err(OperationError::bad_config(
                "models.encoder",
                format!(
                    "`{}` gives {}-d vectors but {} holds {}-d ones; use another data_dir (or qdrant.collection) for this encoder",
                    encoder.name(),
                    encoder.dim(),
                    vectors.describe(),
                    vectors.dim()
                ),
            ));
        }
        let registry = Registry::open(&lock.dir().join("registry.jsonl"))?;
        let bm25 = Bm25Index::open(&lock.dir().join("bm25"))?;
        let index = Index {
            lock,
            registry: RwLock::new(registry),
            vectors,
            bm25,
            encoder,
            settings,
        };
        let pending = index.read_registry().pending();
        if !pending.is_empty() {
            tracing::info!(
                versions = pending.len(),
                "purging document versions an interrupted run left behind"
            );
            index.purge(pending)?;
        }
        Ok(index)
    }

    fn read_registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_registry(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The folder the index lives in.
    pub fn dir(&self) -> &Path {
        self.lock.dir()
    }

    /// The version tag of a document made of `passages`: a hash of their
    /// content and of how they were made and embedded.
    fn generation(&self, passages: &[Passage]) -> String {
        let mut hash = Sha256::new();
        for part in [
            self.encoder.name(),
            &self.encoder.dim().to_string(),
            &self.settings.chunking,
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        for p in passages {
            for part in [&p.id, &p.title, &p.text, &p.source, &p.position.to_string()] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
        }
        hex::encode(&hash.finalize()[..16])
    }

    /// Indexes `passages` (of any number of documents, each document's
    /// passages together): unchanged documents are skipped, changed ones
    /// replaced, new ones added, in durable commits of about
    /// `commit_passages` passages. `on_event` hears of progress.
    pub fn index(
        &self,
        passages: Vec<Passage>,
        on_event: &mut dyn FnMut(IndexEvent<'_>),
    ) -> OperationResult<IndexSummary> {
        let started = Instant::now();
        let documents = group_by_document(passages)?;
        let mut summary = IndexSummary {
            documents: documents.len(),
            ..IndexSummary::default()
        };
        let mut todo: Vec<(String, Vec<Passage>)> = Vec::new();
        {
            let registry = self.read_registry();
            for doc in documents {
                let generation = self.generation(&doc.1);
                match registry.get(&doc.0) {
                    Some(r) if r.generation == generation => summary.unchanged += 1,
                    Some(_) => {
                        summary.replaced += 1;
                        todo.push((generation, doc.1));
                    }
                    None => {
                        summary.added += 1;
                        todo.push((generation, doc.1));
                    }
                }
            }
        }
        summary.passages = todo.iter().map(|(_, p)| p.len()).sum();
        on_event(IndexEvent::Planned {
            documents: summary.documents,
            unchanged: summary.unchanged,
            passages: summary.passages,
        });

        let mut batch: Vec<(String, Vec<Passage>)> = Vec::new();
        let mut batch_passages = 0;
        for doc in todo {
            batch_passages += doc.1.len();
            batch.push(doc);
            if batch_passages >= self.settings.commit_passages {
                self.commit_batch(std::mem::take(&mut batch), on_event)?;
                batch_passages = 0;
            }
        }
        if !batch.is_empty() {
            self.commit_batch(batch, on_event)?;
        }
        if summary.passages > 0 {
            // Builds the HNSW graph over what was added; searches stay exact until then.
            self.vectors.optimize()?;
        }
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// Writes whole document versions to both stores and records them.
    fn commit_batch(
        &self,
        batch: Vec<(String, Vec<Passage>)>,
        on_event: &mut dyn FnMut(IndexEvent<'_>),
    ) -> OperationResult<()> {
        let versions: Vec<DocVersion> = batch
            .iter()
            .map(|(generation, passages)| DocVersion::new(&passages[0].doc_id, generation))
            .collect();
        self.write_registry().begin(versions)?;

        let flat: Vec<(&str, &Passage)> = batch
            .iter()
            .flat_map(|(g, ps)| ps.iter().map(move |p| (g.as_str(), p)))
            .collect();
        for chunk in flat.chunks(EMBED_CHUNK) {
            let texts: Vec<PassageText> = chunk
                .iter()
                .map(|(_, p)| PassageText {
                    title: &p.title,
                    text: &p.text,
                })
                .collect();
            let vectors = self.encoder.encode_passages(&texts)?;
            let points: Vec<PassagePoint> = chunk
                .iter()
                .zip(&vectors)
                .map(|((generation, passage), vector)| PassagePoint {
                    passage,
                    generation,
                    vector,
                })
                .collect();
            for part in points.chunks(UPSERT_CHUNK) {
                self.vectors.upsert(part)?;
            }
            on_event(IndexEvent::Embedded {
                passages: chunk.len(),
            });
        }
        self.vectors.flush()?;
        let add: Vec<(&str, &[Passage])> = batch
            .iter()
            .map(|(g, ps)| (g.as_str(), ps.as_slice()))
            .collect();
        self.bm25.write(&add, &[])?;

        let indexed_at = now();
        let records: Vec<DocumentRecord> = batch
            .iter()
            .map(|(generation, passages)| DocumentRecord {
                doc_id: passages[0].doc_id.clone(),
                generation: generation.clone(),
                title: passages[0].title.clone(),
                source: passages[0].source.clone(),
                passages: passages.len(),
                indexed_at,
            })
            .collect();
        let superseded = {
            let mut registry = self.write_registry();
            registry.commit(records.clone())?;
            registry.pending()
        };
        on_event(IndexEvent::Committed {
            documents: &records,
        });
        self.purge(superseded)
    }

    /// Removes `versions` from both stores, durably, then from the registry's
    /// pending list.
    fn purge(&self, versions: Vec<DocVersion>) -> OperationResult<()> {
        if versions.is_empty() {
            return Ok(());
        }
        self.vectors.delete_versions(&versions)?;
        self.vectors.flush()?;
        self.bm25.write(&[], &versions)?;
        self.write_registry().purged(versions)
    }

    /// Deletes document `doc_id` from the registry and both stores.
    pub fn remove(&self, doc_id: &str) -> OperationResult<DocumentRecord> {
        let (record, pending) = {
            let mut registry = self.write_registry();
            let record = registry
                .get(doc_id)
                .cloned()
                .ok_or_else(|| OperationError::not_found("document", doc_id))?;
            registry.remove(vec![doc_id.to_string()])?;
            (record, registry.pending())
        };
        self.purge(pending)?;
        Ok(record)
    }

    /// Every indexed document, by id.
    pub fn documents(&self) -> Vec<DocumentRecord> {
        self.read_registry().documents().cloned().collect()
    }

    /// How many documents are indexed (without copying their records).
    pub fn document_count(&self) -> usize {
        self.read_registry().documents().len()
    }

    /// The indexed document `doc_id`.
    pub fn document(&self, doc_id: &str) -> OperationResult<DocumentRecord> {
        self.read_registry()
            .get(doc_id)
            .cloned()
            .ok_or_else(|| OperationError::not_found("document", doc_id))
    }

    /// Counts from the registry and both stores, and whether they agree.
    pub fn status(&self) -> OperationResult<IndexStatus> {
        let (documents, passages, pending_versions) = {
            let registry = self.read_registry();
            let passages: u64 = registry.documents().map(|r| r.passages as u64).sum();
            let documents = registry.documents().len();
            (documents, passages, registry.pending_count())
        };
        let dense_points = self.vectors.count()?;
        let bm25_passages = self.bm25.num_passages();
        Ok(IndexStatus {
            vector_store: self.vectors.describe(),
            documents,
            passages,
            dense_points,
            bm25_passages,
            pending_versions,
            consistent: dense_points == passages && bm25_passages == passages,
        })
    }

    /// The vector store, for measurements that bypass the encoder.
    pub fn vector_store(&self) -> &dyn VectorStore {
        self.vectors.as_ref()
    }

    /// The encoder used for questions and passages.
    pub fn encoder(&self) -> &Arc<dyn Encoder> {
        &self.encoder
    }
}

/// Groups passages by document, keeping first-seen order; a document whose
/// passages are not together is an input error (two files with one id).
fn group_by_document(passages: Vec<Passage>) -> OperationResult<Vec<(String, Vec<Passage>)>> {
    let mut documents: Vec<(String, Vec<Passage>)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for passage in passages {
        match documents.last_mut() {
            Some((doc_id, list)) if *doc_id == passage.doc_id => list.push(passage),
            _ => {
                if seen
                    .insert(passage.doc_id.clone(), documents.len())
                    .is_some()
                {
                    return Err(OperationError::bad_input(
                        &passage.source,
                        format!(
                            "document id `{}` is used by another document too; give each document its own id",
                            passage.doc_id
                        ),
                    ));
                }
                documents.push((passage.doc_id.clone(), vec![passage]));
            }
        }
    }
    Ok(documents)
}
