//! A Qdrant server or cluster over gRPC (`qdrant-client`).
//!
//! The [`VectorStore`] seam is synchronous and the client is async, so the
//! store owns a small tokio runtime and blocks on it for each request. Every
//! request goes through `QdrantStore::request`, which retries what may pass
//! (server unreachable, busy, timed out) with exponential back-off.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use margin_core::{OperationError, OperationResult};
use qdrant_client::qdrant::{
    vectors_config, CollectionInfo, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter,
    PointStruct, Query, QueryPointsBuilder, SearchParamsBuilder, UpsertPointsBuilder,
    VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};

use crate::vector::{
    check_dim, payload, DenseSearch, DocVersion, PassagePoint, StoredHit, VectorStore,
};

/// Wait before the second attempt of a request; doubled before each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts, also when the server asks for more.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Connection and collection settings of a Qdrant server or cluster.
#[derive(Clone)]
pub struct QdrantOptions {
    /// gRPC URL, e.g. `http://localhost:6334`.
    pub url: String,
    /// API key, if the server wants one.
    pub api_key: Option<String>,
    /// Collection name.
    pub collection: String,
    /// Length of every vector.
    pub dim: usize,
    /// `cosine`, `dot` or `euclid`.
    pub distance: String,
    /// Shards of a new collection.
    pub shard_number: u32,
    /// Copies of each shard in a new collection.
    pub replication_factor: u32,
    /// Points per upsert request.
    pub upsert_batch: usize,
    /// Attempts per request before giving up (with exponential back-off).
    pub retries: u32,
    /// Timeout of one request, in seconds.
    pub timeout_secs: u64,
    /// Candidates kept while searching the HNSW graph.
    pub hnsw_ef: usize,
}

/// Written by hand so that the API key never reaches a log.
impl fmt::Debug for QdrantOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantOptions")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("collection", &self.collection)
            .field("dim", &self.dim)
            .field("distance", &self.distance)
            .field("shard_number", &self.shard_number)
            .field("replication_factor", &self.replication_factor)
            .field("upsert_batch", &self.upsert_batch)
            .field("retries", &self.retries)
            .field("timeout_secs", &self.timeout_secs)
            .field("hnsw_ef", &self.hnsw_ef)
            .finish()
    }
}

impl QdrantOptions {
    /// The configured distance, after refusing the settings with which every
    /// request would fail (or `upsert` panic).
    fn validate(&self) -> OperationResult<Distance> {
        for (key, value) in [
            ("qdrant.upsert_batch", self.upsert_batch as u64),
            ("qdrant.retries", u64::from(self.retries)),
            ("qdrant.timeout_secs", self.timeout_secs),
        ] {
            if value == 0 {
                return Err(OperationError::bad_config(key, "must be at least 1"));
            }
        }
        match self.distance.as_str() {
            "cosine" => Ok(Distance::Cosine),
            "dot" => Ok(Distance::Dot),
            "euclid" => Ok(Distance::Euclid),
            other => Err(OperationError::bad_config(
                "qdrant.distance",
                format!("`{other}` is not a distance; use cosine, dot or euclid"),
            )),
        }
    }

    fn describe(&self) -> String {
        format!("Qdrant collection {} at {}", self.collection, self.url)
    }
}

/// gRPC status codes by number, the same in every gRPC implementation:
/// margin-store does not depend on tonic, whose `Code` names them.
mod grpc {
    pub const CANCELLED: i32 = 1;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// What a failed request means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No connection to the server: retried, then reported with a hint on `qdrant.url`.
    Unreachable,
    /// Busy, timed out or aborted: may pass if tried again.
    Transient,
    /// The API key is missing or not allowed to do this.
    Denied,
    /// Anything else: another attempt would fail the same way.
    Other,
}

impl Failure {
    fn of(error: &QdrantError) -> Failure {
        let status = match error {
            QdrantError::ResponseError { status }
            | QdrantError::ResourceExhaustedError { status, .. } => status,
            _ => return Failure::Other,
        };
        match i32::from(status.code()) {
            grpc::UNAVAILABLE => Failure::Unreachable,
            // qdrant-client reports a failed connection attempt as Internal.
            grpc::INTERNAL if status.message().starts_with("Failed to connect") => {
                Failure::Unreachable
            }
            // Cancelled is what tonic makes of the client's own request timeout.
            grpc::CANCELLED
            | grpc::DEADLINE_EXCEEDED
            | grpc::RESOURCE_EXHAUSTED
            | grpc::ABORTED => Failure::Transient,
            grpc::UNAUTHENTICATED | grpc::PERMISSION_DENIED => Failure::Denied,
            _ => Failure::Other,
        }
    }

    fn is_retried(self) -> bool {
        matches!(self, Failure::Unreachable | Failure::Transient)
    }

    fn hint(self) -> &'static str {
        match self {
            Failure::Unreachable => {
                "; is the server running? check `qdrant.url` (MARGIN__QDRANT__URL): \
                 Qdrant's gRPC port, 6334 by default, not the REST port 6333"
            }
            Failure::Denied => "; check `qdrant.api_key` (MARGIN__QDRANT__API_KEY)",
            Failure::Transient | Failure::Other => "",
        }
    }
}

/// The server's message and gRPC code, without the response metadata that
/// `QdrantError`'s `Display` appends.
fn detail(error: &QdrantError) -> String {
    match error {
        QdrantError::ResponseError { status }
        | QdrantError::ResourceExhaustedError { status, .. } => {
            format!("{} (gRPC {:?})", status.message(), status.code())
        }
        other => other.to_string(),
    }
}

/// A [`VectorStore`] in a collection of a Qdrant server or cluster.
///
/// Its methods block on the store's own tokio runtime: call them (and drop
/// the store) outside any async runtime's worker threads, e.g. from
/// `tokio::task::spawn_blocking`; tokio panics otherwise.
pub struct QdrantStore {
    options: QdrantOptions,
    distance: Distance,
    client: Qdrant,
    /// Declared after `client`, so dropped after it: the client's
    /// connections run on this runtime.
    runtime: tokio::runtime::Runtime,
}

impl QdrantStore {
    /// Connects, creating the collection and its payload indexes if missing.
    /// A collection made for vectors of another length or distance is refused.
    ///
    /// Blocks: must not be called from an async runtime's worker thread (use
    /// `tokio::task::spawn_blocking`).
    pub fn connect(options: QdrantOptions) -> OperationResult<QdrantStore> {
        let distance = options.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // Requests only wait on the network; a thread per core would idle.
            .worker_threads(2)
            .thread_name("margin-qdrant")
            .enable_all()
            .build()
            .map_err(|e| {
                OperationError::store(
                    options.describe(),
                    format!("cannot start the client runtime: {e}"),
                )
            })?;
        let client = Qdrant::from_url(&options.url)
            .api_key(options.api_key.clone())
            .timeout(Duration::from_secs(options.timeout_secs))
            // The check prints to stdout; the requests below reach the server anyway.
            .skip_compatibility_check()
            .build()
            .map_err(|e| {
                OperationError::bad_config(
                    "qdrant.url",
                    format!(
                        "`{}` is not a gRPC URL such as http://localhost:6334: {e}",
                        options.url
                    ),
                )
            })?;
        let store = QdrantStore {
            options,
            distance,
            client,
            runtime,
        };
        store.prepare_collection()?;
        Ok(store)
    }

    /// Sends a request made by `send`, again after a back-off while it fails
    /// in a way that may pass, `retries` attempts in all. Every request is
    /// idempotent (point ids are fixed, deletes go by filter), so repeating
    /// one whose reply was lost is harmless.
    fn request<T, F>(&self, what: &str, send: impl Fn() -> F) -> OperationResult<T>
    where
        F: Future<Output = Result<T, QdrantError>>,
    {
        let attempts = self.options.retries;
        self.runtime.block_on(async {
            let mut backoff = FIRST_BACKOFF;
            let mut attempt = 1;
            loop {
                let error = match send().await {
                    Ok(reply) => return Ok(reply),
                    Err(error) => error,
                };
                let failure = Failure::of(&error);
                if !failure.is_retried() || attempt >= attempts {
                    let tried = if attempt > 1 {
                        format!(" after {attempt} attempts")
                    } else {
                        String::new()
                    };
                    return Err(OperationError::store(
                        self.describe(),
                        format!("{what} failed{tried}: {}{}", detail(&error), failure.hint()),
                    ));
                }
                let wait = match &error {
                    QdrantError::ResourceExhaustedError {
                        retry_after_seconds,
                        ..
                    } => backoff.max(Duration::from_secs(*retry_after_seconds).min(MAX_BACKOFF)),
                    _ => backoff,
                };
                tracing::warn!(
                    store = %self.describe(),
                    attempt,
                    attempts,
                    error = %detail(&error),
                    "{what} failed; retrying in {wait:?}"
                );
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
        })
    }

    /// Creates the collection if missing, checks its vectors, and adds the
    /// payload indexes that deletes filter on. An existing collection is only
    /// read, so a read-only API key is enough to search it.
    fn prepare_collection(&self) -> OperationResult<()> {
        let o = &self.options;
        if !self.collection_exists()? {
            let create = CreateCollectionBuilder::new(o.collection.as_str())
                .vectors_config(VectorParamsBuilder::new(o.dim as u64, self.distance))
                .shard_number(o.shard_number)
                .replication_factor(o.replication_factor)
                .build();
            let created = self.request("collection creation", || {
                self.client.create_collection(create.clone())
            });
            // Another process may have created it meanwhile; its settings are
            // then checked below like those of any existing collection.
            if let Err(e) = created {
                if !self.collection_exists()? {
                    return Err(e);
                }
            }
        }
        let info = self
            .request("collection info", || {
                self.client.collection_info(o.collection.as_str())
            })?
            .result
            .ok_or_else(|| self.empty_reply("collection info"))?;
        self.check_vectors(&info)?;
        for field in [payload::DOC_ID, payload::GENERATION] {
            if info.payload_schema.contains_key(field) {
                continue;
            }
            let index = CreateFieldIndexCollectionBuilder::new(
                o.collection.as_str(),
                field,
                FieldType::Keyword,
            )
            .wait(true)
            .build();
            self.request("payload index creation", || {
                self.client.create_field_index(index.clone())
            })?;
        }
        Ok(())
    }

    fn collection_exists(&self) -> OperationResult<bool> {
        self.request("collection lookup", || {
            self.client
                .collection_exists(self.options.collection.as_str())
        })
    }

    /// Refuses a collection whose vectors margin cannot write or compare:
    /// made with another encoder, another distance, or by another program.
    fn check_vectors(&self, info: &CollectionInfo) -> OperationResult<()> {
        let o = &self.options;
        let vectors = info
            .config
            .as_ref()
            .and_then(|c| c.params.as_ref())
            .and_then(|p| p.vectors_config.as_ref())
            .and_then(|v| v.config.as_ref());
        let Some(vectors_config::Config::Params(params)) = vectors else {
            return Err(OperationError::bad_config(
                "qdrant.collection",
                format!(
                    "collection `{}` at {} has named vectors, not the single unnamed one \
                     margin writes: choose another collection",
                    o.collection, o.url
                ),
            ));
        };
        if params.size != o.dim as u64 {
            return Err(OperationError::bad_config(
                "qdrant.collection",
                format!(
                    "collection `{}` at {} holds vectors of {} dimensions, the encoder makes {}: \
                     made with another encoder? choose another collection or delete this one",
                    o.collection, o.url, params.size, o.dim
                ),
            ));
        }
        if params.distance() != self.distance {
            return Err(OperationError::bad_config(
                "qdrant.distance",
                format!(
                    "collection `{}` at {} compares vectors by {} distance, not `{}`: \
                     set qdrant.distance to match or choose another collection",
                    o.collection,
                    o.url,
                    params.distance().as_str_name().to_lowercase(),
                    o.distance
                ),
            ));
        }
        Ok(())
    }

    fn empty_reply(&self, what: &str) -> OperationError {
        OperationError::store(
            self.describe(),
            format!("{what}: the server's reply has no result"),
        )
    }
}

impl VectorStore for QdrantStore {
    fn describe(&self) -> String {
        self.options.describe()
    }

    fn dim(&self) -> usize {
        self.options.dim
    }

    fn upsert(&self, points: &[PassagePoint<'_>]) -> OperationResult<()> {
        for point in points {
            check_dim(&point.passage.id, point.vector.len(), self.options.dim)?;
        }
        for batch in points.chunks(self.options.upsert_batch) {
            let batch: Vec<PointStruct> = batch
                .iter()
                .map(|point| {
                    PointStruct::new(
                        point.point_uuid().to_string(),
                        point.vector.to_vec(),
                        Payload::from(payload::of(point)),
                    )
                })
                .collect();
            let request = UpsertPointsBuilder::new(self.options.collection.as_str(), batch)
                .wait(true)
                .build();
            self.request("upsert", || self.client.upsert_points(request.clone()))?;
        }
        Ok(())
    }

    fn delete_versions(&self, versions: &[DocVersion]) -> OperationResult<()> {
        for version in versions {
            let request = DeletePointsBuilder::new(self.options.collection.as_str())
                .points(Filter::must([
                    Condition::matches(payload::DOC_ID, version.doc_id.clone()),
                    Condition::matches(payload::GENERATION, version.generation.clone()),
                ]))
                .wait(true)
                .build();
            self.request("delete", || self.client.delete_points(request.clone()))?;
        }
        Ok(())
    }

    fn flush(&self) -> OperationResult<()> {
        // Every write is sent with wait=true, so it is in the server's WAL
        // (and applied) by the time its request returns: nothing is pending.
        Ok(())
    }

    fn optimize(&self) -> OperationResult<()> {
        // The server's optimizers build the HNSW graph and reclaim deleted
        // points in the background as segments fill; there is nothing to
        // start, and waiting for them could take hours on a large collection.
        Ok(())
    }

    fn search(&self, query: &[f32], search: DenseSearch) -> OperationResult<Vec<StoredHit>> {
        check_dim("query", query.len(), self.options.dim)?;
        // Qdrant refuses a limit of 0.
        if search.k == 0 {
            return Ok(Vec::new());
        }
        let request = QueryPointsBuilder::new(self.options.collection.as_str())
            .query(Query::new_nearest(query.to_vec()))
            .limit(search.k as u64)
            .with_payload(true)
            .params(
                SearchParamsBuilder::default()
                    .hnsw_ef(self.options.hnsw_ef as u64)
                    .exact(search.exact),
            )
            .build();
        let reply = self.request("search", || self.client.query(request.clone()))?;
        // Qdrant scores euclid by the distance itself (lower is nearer); the
        // seam promises higher is better.
        let sign = if self.distance == Distance::Euclid {
            -1.0
        } else {
            1.0
        };
        Ok(reply
            .result
            .into_iter()
            .filter_map(|point| {
                let map = serde_json::Map::from(Payload::from(point.payload));
                payload::to_hit(&map, sign * point.score)
            })
            .collect())
    }

    fn count(&self) -> OperationResult<u64> {
        self.request("count", || {
            self.client
                .count(CountPointsBuilder::new(self.options.collection.as_str()).exact(true))
        })?
        .result
        .map(|result| result.count)
        .ok_or_else(|| self.empty_reply("count"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> QdrantOptions {
        QdrantOptions {
            url: "http://localhost:6334".into(),
            api_key: Some("s3cr3t-key".into()),
            collection: "margin".into(),
            dim: 4,
            distance: "cosine".into(),
            shard_number: 1,
            replication_factor: 1,
            upsert_batch: 256,
            retries: 5,
            timeout_secs: 30,
            hnsw_ef: 128,
        }
    }

    #[test]
    fn debug_masks_the_api_key() {
        let shown = format!("{:?}", options());
        assert!(!shown.contains("s3cr3t-key"), "{shown}");
        assert!(shown.contains("api_key: Some(\"***\")"), "{shown}");
    }

    #[test]
    fn distances_and_zero_settings_are_checked() {
        assert_eq!(options().validate().unwrap(), Distance::Cosine);
        let bad = QdrantOptions {
            distance: "manhattan".into(),
            ..options()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("qdrant.distance") && err.contains("manhattan"),
            "{err}"
        );
        let bad = QdrantOptions {
            upsert_batch: 0,
            ..options()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("qdrant.upsert_batch"), "{err}");
    }
}
