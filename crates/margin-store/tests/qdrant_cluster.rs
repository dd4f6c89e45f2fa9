//! End to end against a real Qdrant server: runs when `QDRANT_URL` is set
//! (with `QDRANT_API_KEY` if the server wants one), otherwise says it skipped.
//!
//! ```text
//! docker run -p 6334:6334 qdrant/qdrant
//! QDRANT_URL=http://localhost:6334 cargo test -p margin-store --test qdrant_cluster
//! ```
//!
//! Each test works in a collection of its own, named after the process, the
//! time and the test, and deletes it at the end, also when it fails.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use margin_core::Passage;
use margin_store::{
    DenseSearch, DocVersion, PassagePoint, QdrantOptions, QdrantStore, StoredHit, VectorStore,
};
use qdrant_client::qdrant::DeleteCollectionBuilder;
use qdrant_client::Qdrant;

const DIM: usize = 8;

/// URL and API key of the server under test, or `None` after saying why not.
fn server() -> Option<(String, Option<String>)> {
    match std::env::var("QDRANT_URL") {
        Ok(url) if !url.is_empty() => {
            let api_key = std::env::var("QDRANT_API_KEY")
                .ok()
                .filter(|key| !key.is_empty());
            Some((url, api_key))
        }
        _ => {
            // Written to stderr itself: the harness hides `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: QDRANT_URL is not set (start a Qdrant server and export \
                 QDRANT_URL=http://localhost:6334 to run)"
            );
            None
        }
    }
}

fn options(url: &str, api_key: Option<String>, collection: &str, dim: usize) -> QdrantOptions {
    QdrantOptions {
        url: url.to_string(),
        api_key,
        collection: collection.to_string(),
        dim,
        distance: "cosine".to_string(),
        shard_number: 1,
        replication_factor: 1,
        // Small, so that a document takes several requests.
        upsert_batch: 2,
        retries: 3,
        timeout_secs: 30,
        hnsw_ef: 64,
    }
}

/// A collection used by one test, deleted with the qdrant client when dropped.
struct Collection {
    name: String,
    url: String,
    api_key: Option<String>,
}

impl Collection {
    fn new(test: &str, url: &str, api_key: Option<String>) -> Collection {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Collection {
            name: format!("margin_test_{test}_{}_{nanos}", std::process::id()),
            url: url.to_string(),
            api_key,
        }
    }

    fn options(&self, dim: usize) -> QdrantOptions {
        options(&self.url, self.api_key.clone(), &self.name, dim)
    }
}

impl Drop for Collection {
    fn drop(&mut self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deleted = runtime.block_on(async {
            Qdrant::from_url(&self.url)
                .api_key(self.api_key.clone())
                .skip_compatibility_check()
                .build()?
                .delete_collection(DeleteCollectionBuilder::new(self.name.as_str()))
                .await
        });
        if let Err(e) = deleted {
            eprintln!("could not delete test collection {}: {e}", self.name);
        }
    }
}

/// A unit vector along `axis`: each passage gets its own, so the nearest
/// passage to it is known.
fn axis(axis: usize) -> Vec<f32> {
    let mut vector = vec![0.0; DIM];
    vector[axis] = 1.0;
    vector
}

/// One version of one document: its passages and their vectors.
struct Doc {
    generation: String,
    passages: Vec<Passage>,
    vectors: Vec<Vec<f32>>,
}

impl Doc {
    /// Passages of `doc_id` at `generation`, one per axis in `axes`.
    fn new(doc_id: &str, generation: &str, axes: &[usize]) -> Doc {
        let passages = (0..axes.len())
            .map(|position| Passage {
                id: Passage::make_id(doc_id, position),
                doc_id: doc_id.to_string(),
                title: format!("Title of {doc_id}"),
                text: format!("passage {position} of {doc_id}, version {generation}"),
                source: format!("corpus/{doc_id}.txt"),
                position,
            })
            .collect();
        Doc {
            generation: generation.to_string(),
            passages,
            vectors: axes.iter().map(|&a| axis(a)).collect(),
        }
    }

    fn points(&self) -> Vec<PassagePoint<'_>> {
        self.passages
            .iter()
            .zip(&self.vectors)
            .map(|(passage, vector)| PassagePoint {
                passage,
                generation: &self.generation,
                vector,
            })
            .collect()
    }

    fn version(&self) -> DocVersion {
        DocVersion::new(&self.passages[0].doc_id, &self.generation)
    }
}

/// The three passages nearest to the unit vector along `along`.
fn nearest(store: &QdrantStore, along: usize, exact: bool) -> Vec<StoredHit> {
    store
        .search(&axis(along), DenseSearch { k: 3, exact })
        .unwrap()
}

#[test]
fn passages_round_trip_per_version_and_survive_reopening() {
    let Some((url, api_key)) = server() else {
        return;
    };
    let collection = Collection::new("round_trip", &url, api_key);
    let store = QdrantStore::connect(collection.options(DIM)).unwrap();
    assert_eq!(store.count().unwrap(), 0);

    let tides_v1 = Doc::new("tides", "v1", &[0, 1, 2]);
    let bees = Doc::new("bees", "v1", &[3]);
    let tides_v2 = Doc::new("tides", "v2", &[4, 5, 6]);
    for doc in [&tides_v1, &bees, &tides_v2] {
        store.upsert(&doc.points()).unwrap();
    }
    store.flush().unwrap();
    store.optimize().unwrap();
    assert_eq!(store.count().unwrap(), 7);

    // Every field comes back, from the graph and from the exact search.
    for exact in [false, true] {
        let hits = nearest(&store, 1, exact);
        assert_eq!(hits[0].passage, tides_v1.passages[1]);
        assert_eq!(hits[0].generation, "v1");
        assert!(hits[0].score > 0.99, "{}", hits[0].score);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // Both versions of `tides` are there, with the same passage ids.
    let hit = &nearest(&store, 5, true)[0];
    assert_eq!(hit.passage, tides_v2.passages[1]);
    assert_eq!(hit.generation, "v2");

    // Writing a version again overwrites it.
    store.upsert(&tides_v2.points()).unwrap();
    assert_eq!(store.count().unwrap(), 7);

    // Deleting the old version leaves the new one and the other document.
    store.delete_versions(&[tides_v1.version()]).unwrap();
    assert_eq!(store.count().unwrap(), 4);
    let hits = nearest(&store, 1, true);
    assert!(hits
        .iter()
        .all(|h| h.generation == "v2" || h.passage.doc_id == "bees"));
    assert_eq!(nearest(&store, 3, true)[0].passage, bees.passages[0]);

    let err = store
        .search(&[1.0; DIM - 1], DenseSearch { k: 3, exact: true })
        .unwrap_err()
        .to_string();
    assert!(err.contains("7 dimensions"), "{err}");

    // A second connection to the collection sees what the first wrote.
    drop(store);
    let reopened = QdrantStore::connect(collection.options(DIM)).unwrap();
    assert_eq!(reopened.count().unwrap(), 4);
    let hit = &nearest(&reopened, 6, false)[0];
    assert_eq!(hit.passage, tides_v2.passages[2]);
    assert_eq!(hit.generation, "v2");
}

#[test]
fn collection_of_another_dimension_is_refused() {
    let Some((url, api_key)) = server() else {
        return;
    };
    let collection = Collection::new("dimension", &url, api_key);
    QdrantStore::connect(collection.options(DIM)).unwrap();
    let err = QdrantStore::connect(collection.options(2 * DIM))
        .err()
        .expect("a collection of another vector size must be refused")
        .to_string();
    assert!(err.contains(&collection.name), "{err}");
    assert!(
        err.contains(&format!("{DIM} dimensions")) && err.contains(&(2 * DIM).to_string()),
        "{err}"
    );
}

/// Needs no server: nothing listens on a port just released.
#[test]
fn unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let options = QdrantOptions {
        retries: 2,
        ..options(&url, Some("s3cr3t-key".into()), "margin", DIM)
    };
    let err = QdrantStore::connect(options)
        .err()
        .expect("nothing listens there")
        .to_string();
    assert!(err.contains(&url), "{err}");
    assert!(
        err.contains("qdrant.url") && err.contains("MARGIN__QDRANT__URL"),
        "{err}"
    );
    assert!(err.contains("after 2 attempts"), "{err}");
    assert!(!err.contains("s3cr3t-key"), "{err}");
}
