//! The embedded default: Qdrant Edge, in-process, one shard in one folder.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use margin_core::{OperationError, OperationResult};
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfig, EdgeShard, EdgeVectorParams,
    FieldCondition, FieldIndexOperations, Filter, HnswIndexConfig, JsonPath, Match, NamedQuery,
    Payload, PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStruct, PointStructPersisted, QueryEnum, QueryRequest, ScoringQuery,
    SearchParams, UpdateOperation, VectorInternal, Vectors, WithPayloadInterface, WithVector,
};

use crate::vector::{
    check_dim, payload, DenseSearch, DocVersion, PassagePoint, StoredHit, VectorStore,
};

/// Name of margin's one dense vector in the shard.
const VECTOR: &str = "dense";

/// Settings of an embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeOptions {
    /// Length of every vector.
    pub dim: usize,
    /// Edges per node of the HNSW graph.
    pub hnsw_m: usize,
    /// Candidates kept while building the graph.
    pub hnsw_ef_construct: usize,
    /// Candidates kept while searching the graph.
    pub hnsw_ef: usize,
}

/// A [`VectorStore`] in a Qdrant Edge shard on local disk.
pub struct EdgeStore {
    shard: EdgeShard,
    dir: PathBuf,
    options: EdgeOptions,
    /// Qdrant Edge's `flush` panics if an `update` holds its WAL at that
    /// moment, so writes and flushes take turns; searches need no lock.
    writes: Mutex<()>,
}

fn edge_error(dir: &Path, what: &str, e: impl std::fmt::Display) -> OperationError {
    OperationError::store(
        format!("Qdrant Edge at {}", dir.display()),
        format!("{what}: {e}"),
    )
}

fn keyword(field: &str) -> JsonPath {
    field
        .parse()
        .expect("a plain payload key is a valid JSON path")
}

fn version_filter(version: &DocVersion) -> Filter {
    let matches = |key: &str, value: &str| {
        Condition::Field(FieldCondition::new_match(
            keyword(key),
            Match::from(value.to_string()),
        ))
    };
    Filter {
        must: Some(vec![
            matches(payload::DOC_ID, &version.doc_id),
            matches(payload::GENERATION, &version.generation),
        ]),
        ..Filter::default()
    }
}

impl EdgeStore {
    /// Opens the store in `dir`, creating it if needed. A store made for
    /// vectors of another length (another encoder) is refused with a hint.
    pub fn open(dir: &Path, options: EdgeOptions) -> OperationResult<EdgeStore> {
        std::fs::create_dir_all(dir).map_err(|e| OperationError::io(dir, e))?;
        let hnsw = HnswIndexConfig {
            m: options.hnsw_m,
            ef_construct: options.hnsw_ef_construct,
            ..HnswIndexConfig::default()
        };
        let config = EdgeConfig::builder()
            .vector(
                VECTOR,
                EdgeVectorParams::builder(options.dim, Distance::Cosine).build(),
            )
            .hnsw_config(hnsw)
            .build();
        let shard = EdgeShard::load(dir, Some(config)).map_err(|e| {
            edge_error(
                dir,
                "cannot open",
                format!("{e} (made with another encoder? index again into a new data_dir)"),
            )
        })?;
        let store = EdgeStore {
            shard,
            dir: dir.to_path_buf(),
            options,
            writes: Mutex::new(()),
        };
        // Cheap when present; segments created by `optimize` may lack them.
        store.create_keyword_indexes()?;
        Ok(store)
    }

    fn create_keyword_indexes(&self) -> OperationResult<()> {
        for field in [payload::DOC_ID, payload::GENERATION] {
            self.update(UpdateOperation::FieldIndexOperation(
                FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: keyword(field),
                    field_schema: Some(PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword)),
                }),
            ))?;
        }
        Ok(())
    }

    fn update(&self, operation: UpdateOperation) -> OperationResult<()> {
        let _turn = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.shard
            .update(operation)
            .map_err(|e| edge_error(&self.dir, "write failed", e))
    }
}

impl VectorStore for EdgeStore {
    fn describe(&self) -> String {
        format!("Qdrant Edge at {}", self.dir.display())
    }

    fn dim(&self) -> usize {
        self.options.dim
    }

    fn upsert(&self, points: &[PassagePoint<'_>]) -> OperationResult<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut batch: Vec<PointStructPersisted> = Vec::with_capacity(points.len());
        for point in points {
            check_dim(&point.passage.id, point.vector.len(), self.options.dim)?;
            batch.push(
                PointStruct::new(
                    PointId::Uuid(point.point_uuid()),
                    Vectors::new_named([(VECTOR, point.vector.to_vec())]),
                    serde_json::Value::Object(payload::of(point)),
                )
                .into(),
            );
        }
        self.update(UpdateOperation::PointOperation(
            PointOperations::UpsertPoints(PointInsertOperations::PointsList(batch)),
        ))
    }

    fn delete_versions(&self, versions: &[DocVersion]) -> OperationResult<()> {
        for version in versions {
            self.update(UpdateOperation::PointOperation(
                PointOperations::DeletePointsByFilter(version_filter(version)),
            ))?;
        }
        Ok(())
    }

    fn flush(&self) -> OperationResult<()> {
        let _turn = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        // Edge panics instead of returning I/O errors from flush.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.shard.flush()))
            .map_err(|_| edge_error(&self.dir, "flush failed", "see the log above (disk full?)"))
    }

    fn optimize(&self) -> OperationResult<()> {
        {
            let _turn = self.writes.lock().unwrap_or_else(|p| p.into_inner());
            self.shard
                .optimize()
                .map_err(|e| edge_error(&self.dir, "optimize failed", e))?;
        }
        self.create_keyword_indexes()?;
        self.flush()
    }

    fn search(&self, query: &[f32], search: DenseSearch) -> OperationResult<Vec<StoredHit>> {
        check_dim("query", query.len(), self.options.dim)?;
        let hits = self
            .shard
            .query(QueryRequest {
                prefetches: vec![],
                query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
                    VectorInternal::Dense(query.to_vec()),
                    VECTOR,
                )))),
                filter: None,
                score_threshold: None,
                limit: search.k,
                offset: 0,
                params: Some(SearchParams {
                    hnsw_ef: Some(self.options.hnsw_ef),
                    exact: search.exact,
                    ..SearchParams::default()
                }),
                with_vector: WithVector::Bool(false),
                with_payload: WithPayloadInterface::Bool(true),
            })
            .map_err(|e| edge_error(&self.dir, "search failed", e))?;
        Ok(hits
            .into_iter()
            .filter_map(|hit| {
                let Payload(map) = hit.payload?;
                payload::to_hit(&map, hit.score)
            })
            .collect())
    }

    fn count(&self) -> OperationResult<u64> {
        self.shard
            .count(CountRequest {
                filter: None,
                exact: true,
            })
            .map(|n| n as u64)
            .map_err(|e| edge_error(&self.dir, "count failed", e))
    }
}
