//! The `VectorStore` seam: what every dense backend offers the indexer.

use margin_core::{OperationResult, Passage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One version of one document: passages are written and removed per version,
/// so a new version can be stored in full before the old one is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DocVersion {
    /// Document id.
    pub doc_id: String,
    /// Version tag, unique per content of the document.
    pub generation: String,
}

impl DocVersion {
    /// The version `generation` of document `doc_id`.
    pub fn new(doc_id: impl Into<String>, generation: impl Into<String>) -> DocVersion {
        DocVersion {
            doc_id: doc_id.into(),
            generation: generation.into(),
        }
    }
}

/// A passage of one document version with its embedding, as written to a store.
#[derive(Debug, Clone, Copy)]
pub struct PassagePoint<'a> {
    /// The passage.
    pub passage: &'a Passage,
    /// Version of the passage's document.
    pub generation: &'a str,
    /// Its embedding.
    pub vector: &'a [f32],
}

impl PassagePoint<'_> {
    /// The store-wide point id: a UUID from the passage id and version, so
    /// that two versions of a document never overwrite each other's points.
    pub fn point_uuid(&self) -> uuid::Uuid {
        let mut hash = Sha256::new();
        hash.update(self.passage.id.as_bytes());
        hash.update([0]);
        hash.update(self.generation.as_bytes());
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Uuid::from_bytes(bytes)
    }
}

/// A passage found by a search, with its document version and score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredHit {
    /// The passage, with title, text, source and document id.
    pub passage: Passage,
    /// Version of the passage's document.
    pub generation: String,
    /// Score of the backend (higher is better).
    pub score: f32,
}

/// How a dense search is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DenseSearch {
    /// Number of results.
    pub k: usize,
    /// Compare against every vector instead of walking the HNSW graph:
    /// slower, and the reference for measuring the graph's recall.
    pub exact: bool,
}

/// A store of passage embeddings, searched by inner product / cosine.
///
/// Writes become durable only at [`VectorStore::flush`]; the indexer calls it
/// before recording a document as indexed, which is what makes documents
/// atomic across a crash.
pub trait VectorStore: Send + Sync {
    /// Backend name and location, for logs and errors.
    fn describe(&self) -> String;

    /// Length of every vector.
    fn dim(&self) -> usize;

    /// Writes points; a point already stored with the same passage id and
    /// version is overwritten.
    fn upsert(&self, points: &[PassagePoint<'_>]) -> OperationResult<()>;

    /// Removes every passage of the given document versions.
    fn delete_versions(&self, versions: &[DocVersion]) -> OperationResult<()>;

    /// Makes every write so far durable.
    fn flush(&self) -> OperationResult<()>;

    /// Builds search indexes (HNSW) and reclaims deleted space; may take a while.
    fn optimize(&self) -> OperationResult<()>;

    /// The `search.k` points nearest to `query`, best first.
    fn search(&self, query: &[f32], search: DenseSearch) -> OperationResult<Vec<StoredHit>>;

    /// Exact number of stored points.
    fn count(&self) -> OperationResult<u64>;
}

/// Refuses a vector of `len` dimensions for a store of `dim`, naming `what`
/// (a passage id, or the query).
pub(crate) fn check_dim(what: &str, len: usize, dim: usize) -> OperationResult<()> {
    if len == dim {
        return Ok(());
    }
    Err(margin_core::OperationError::bad_input(
        what,
        format!("vector has {len} dimensions, the store {dim}"),
    ))
}

/// Payload keys shared by the Qdrant backends.
pub(crate) mod payload {
    use super::*;
    use serde_json::{json, Map, Value};

    pub const DOC_ID: &str = "doc_id";
    pub const GENERATION: &str = "generation";

    /// The payload stored beside a point: everything a search result shows.
    pub fn of(point: &PassagePoint<'_>) -> Map<String, Value> {
        let p = point.passage;
        match json!({
            "passage_id": p.id,
            DOC_ID: p.doc_id,
            GENERATION: point.generation,
            "title": p.title,
            "text": p.text,
            "source": p.source,
            "position": p.position,
        }) {
            Value::Object(map) => map,
            _ => unreachable!("a json! object literal"),
        }
    }

    /// The hit a stored payload describes; `None` if the point was not
    /// written by margin (a foreign collection).
    pub fn to_hit(payload: &Map<String, Value>, score: f32) -> Option<StoredHit> {
        let text = |key: &str| payload.get(key)?.as_str().map(str::to_string);
        Some(StoredHit {
            passage: Passage {
                id: text("passage_id")?,
                doc_id: text(DOC_ID)?,
                title: text("title")?,
                text: text("text")?,
                source: text("source")?,
                position: payload.get("position")?.as_u64()? as usize,
            },
            generation: text(GENERATION)?,
            score,
        })
    }
}
