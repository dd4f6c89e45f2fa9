//! The index end to end on real components: a tiny random BERT (its
//! vectors are meaningless, so dense results are checked for plumbing and
//! BM25 for relevance), Qdrant Edge and tantivy in a temporary folder.

use std::path::Path;
use std::sync::Arc;

use margin_core::config::SearchMode;
use margin_core::{OperationError, Passage};
use margin_encoder::{BertEncoder, BertEncoderOptions, Encoder};
use margin_index::{HybridSettings, Index, IndexLock, IndexSettings, Registry, MAX_K};
use margin_store::{Bm25Index, DocVersion, EdgeOptions, EdgeStore, PassagePoint, VectorStore};
use margin_testkit::{write_tiny_bert, TinyBertStyle};
use proptest::prelude::*;

fn encoder(root: &Path) -> Arc<dyn Encoder> {
    let model = root.join("model");
    if !model.exists() {
        write_tiny_bert(&model, TinyBertStyle::SentenceTransformers, 128);
    }
    Arc::new(BertEncoder::load("tiny", &model, &BertEncoderOptions::default()).unwrap())
}

fn edge(dir: &Path, dim: usize) -> EdgeStore {
    EdgeStore::open(
        &dir.join("vectors"),
        EdgeOptions {
            dim,
            hnsw_m: 16,
            hnsw_ef_construct: 100,
            hnsw_ef: 128,
        },
    )
    .unwrap()
}

fn open(root: &Path) -> Index {
    let encoder = encoder(root);
    let lock = IndexLock::acquire(&root.join("index")).unwrap();
    let vectors = Box::new(edge(lock.dir(), encoder.dim()));
    Index::open(
        lock,
        vectors,
        encoder,
        IndexSettings {
            commit_passages: 3,
            chunking: "test".into(),
            hybrid: HybridSettings {
                dense_weight: 1.0,
                bm25_weight: 1.0,
                candidates: 50,
            },
        },
    )
    .unwrap()
}

fn doc(id: &str, title: &str, texts: &[&str]) -> Vec<Passage> {
    texts
        .iter()
        .enumerate()
        .map(|(n, text)| Passage {
            id: Passage::make_id(id, n),
            doc_id: id.into(),
            title: title.into(),
            text: text.to_string(),
            source: format!("{id}.txt"),
            position: n,
        })
        .collect()
}

fn corpus() -> Vec<Passage> {
    [
        doc(
            "tides",
            "Tides",
            &["the moon pulls the sea .", "spring tides at full moon ."],
        ),
        doc("bees", "Bees", &["the bee makes honey ."]),
        doc(
            "press",
            "Printing press",
            &[
                "the press prints a book .",
                "gutenberg printed bibles .",
                "movable type .",
            ],
        ),
        doc("light", "Lighthouse", &["a light house guides the ship ."]),
    ]
    .concat()
}

fn ids(hits: &[margin_index::SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.passage.id.as_str()).collect()
}

fn assert_consistent(index: &Index, documents: usize, passages: u64) {
    let status = index.status().unwrap();
    assert!(status.consistent, "{status:?}");
    assert_eq!(
        (status.documents, status.passages),
        (documents, passages),
        "{status:?}"
    );
    assert_eq!(status.pending_versions, 0);
}

#[test]
fn indexes_searches_in_every_mode_and_persists_across_restart() {
    let root = tempfile::tempdir().unwrap();
    let (dense, hybrid) = {
        let index = open(root.path());
        let summary = index.index(corpus(), &mut |_| {}).unwrap();
        assert_eq!(
            (summary.documents, summary.added, summary.passages),
            (4, 4, 7)
        );
        assert_consistent(&index, 4, 7);

        let bm25 = index
            .search("gutenberg bibles", 3, SearchMode::Bm25)
            .unwrap();
        let top = &bm25[0].passage;
        assert_eq!(
            (
                top.id.as_str(),
                top.doc_id.as_str(),
                top.title.as_str(),
                top.source.as_str()
            ),
            ("press#1", "press", "Printing press", "press.txt")
        );
        assert_eq!(top.text, "gutenberg printed bibles .");
        let dense = index
            .search("the moon and the sea", 7, SearchMode::Dense)
            .unwrap();
        assert_eq!(dense.len(), 7, "every passage is a dense candidate");
        assert!(dense.windows(2).all(|w| w[0].score >= w[1].score));
        let hybrid = index
            .search("gutenberg bibles", 5, SearchMode::Hybrid)
            .unwrap();
        assert!(ids(&hybrid).contains(&"press#1"));
        assert!(hybrid.windows(2).all(|w| w[0].score >= w[1].score));
        (dense, hybrid)
    };
    let index = open(root.path());
    assert_consistent(&index, 4, 7);
    assert_eq!(
        index
            .search("the moon and the sea", 7, SearchMode::Dense)
            .unwrap(),
        dense
    );
    assert_eq!(
        index
            .search("gutenberg bibles", 5, SearchMode::Hybrid)
            .unwrap(),
        hybrid
    );
}

#[test]
fn reindexing_skips_unchanged_documents_and_replaces_changed_ones() {
    let root = tempfile::tempdir().unwrap();
    let index = open(root.path());
    index.index(corpus(), &mut |_| {}).unwrap();
    let again = index.index(corpus(), &mut |_| {}).unwrap();
    assert_eq!(
        (again.unchanged, again.added, again.replaced, again.passages),
        (4, 0, 0, 0)
    );

    let mut changed = corpus();
    changed.retain(|p| p.doc_id != "tides");
    changed.extend(doc("tides", "Tides", &["neap tides are weak ."]));
    let summary = index.index(changed, &mut |_| {}).unwrap();
    assert_eq!(
        (summary.unchanged, summary.replaced, summary.passages),
        (3, 1, 1)
    );
    assert_consistent(&index, 4, 6);
    assert!(
        index
            .search("spring", 5, SearchMode::Bm25)
            .unwrap()
            .is_empty(),
        "old version gone"
    );
    assert_eq!(
        ids(&index.search("neap", 5, SearchMode::Bm25).unwrap()),
        ["tides#0"]
    );
    assert_eq!(index.document("tides").unwrap().passages, 1);
}

#[test]
fn removing_a_document_deletes_it_from_both_stores() {
    let root = tempfile::tempdir().unwrap();
    let index = open(root.path());
    index.index(corpus(), &mut |_| {}).unwrap();
    let removed = index.remove("press").unwrap();
    assert_eq!(removed.passages, 3);
    assert_consistent(&index, 3, 4);
    assert!(index
        .search("gutenberg", 5, SearchMode::Bm25)
        .unwrap()
        .is_empty());
    let dense = index
        .search("the press prints a book", 10, SearchMode::Dense)
        .unwrap();
    assert!(dense.iter().all(|h| h.passage.doc_id != "press"));
    assert!(matches!(
        index.remove("press"),
        Err(OperationError::NotFound { .. })
    ));
    drop(index);
    assert_consistent(&open(root.path()), 3, 4);
}

#[test]
fn bad_searches_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let index = open(root.path());
    index.index(corpus(), &mut |_| {}).unwrap();
    for mode in [SearchMode::Dense, SearchMode::Bm25, SearchMode::Hybrid] {
        let message = |q: &str, k: usize| index.search(q, k, mode).unwrap_err().to_string();
        assert_eq!(message("  ", 5), "query: must not be empty");
        assert_eq!(message("moon", 0), "k: must be at least 1");
        assert_eq!(
            message("moon", MAX_K + 1),
            format!("k: must be at most {MAX_K} (got {})", MAX_K + 1)
        );
        assert!(
            index.search("moon", MAX_K, mode).unwrap().len() <= 7,
            "k up to MAX_K is fine"
        );
    }
    let err = index
        .search_batch(&["moon", ""], 5, SearchMode::Bm25)
        .unwrap_err();
    assert_eq!(err.to_string(), "query 2: must not be empty");
}

#[test]
fn a_second_process_cannot_open_the_same_index() {
    let root = tempfile::tempdir().unwrap();
    let _first = IndexLock::acquire(&root.path().join("index")).unwrap();
    let err = IndexLock::acquire(&root.path().join("index"))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("in use by another margin process"),
        "{err}"
    );
}

/// The states a crash can leave between the steps of a commit, built by hand:
/// the next open must show exactly the committed documents.
#[test]
fn opening_purges_versions_an_interrupted_run_left_half_written() {
    let root = tempfile::tempdir().unwrap();
    {
        let index = open(root.path());
        index.index(corpus(), &mut |_| {}).unwrap();
    }
    let dir = root.path().join("index");
    {
        // Announced, written to both stores and flushed, never committed:
        // a new document and a new version of `bees`.
        let mut registry = Registry::open(&dir.join("registry.jsonl")).unwrap();
        let store = edge(&dir, encoder(root.path()).dim());
        let bm25 = Bm25Index::open(&dir.join("bm25")).unwrap();
        let ghost = doc("ghost", "Ghost", &["half written words ."]);
        let bees2 = doc("bees", "Bees", &["bees in winter ."]);
        registry
            .begin(vec![
                DocVersion::new("ghost", "g"),
                DocVersion::new("bees", "b2"),
            ])
            .unwrap();
        let vector = vec![0.1; store.dim()];
        let points: Vec<PassagePoint> = ghost
            .iter()
            .map(|p| (p, "g"))
            .chain(bees2.iter().map(|p| (p, "b2")))
            .map(|(passage, generation)| PassagePoint {
                passage,
                generation,
                vector: &vector,
            })
            .collect();
        store.upsert(&points).unwrap();
        store.flush().unwrap();
        bm25.write(&[("g", &ghost[..]), ("b2", &bees2[..])], &[])
            .unwrap();
    }
    let index = open(root.path());
    assert_consistent(&index, 4, 7);
    assert!(index
        .search("half written", 5, SearchMode::Bm25)
        .unwrap()
        .is_empty());
    assert!(index
        .search("winter", 5, SearchMode::Bm25)
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(&index.search("honey", 5, SearchMode::Bm25).unwrap()),
        ["bees#0"]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any sequence of indexing (new or changed versions) and removals leaves
    /// the stores holding exactly the registered documents' passages.
    #[test]
    fn stores_always_match_the_registry(ops in prop::collection::vec((0usize..4, 0usize..3, 1usize..4), 1..8)) {
        let root = tempfile::tempdir().unwrap();
        let index = open(root.path());
        let mut model: std::collections::BTreeMap<String, usize> = Default::default();
        for (doc_no, version, passages) in ops {
            let id = format!("d{doc_no}");
            if version == 0 {
                let removed = index.remove(&id);
                prop_assert_eq!(removed.is_ok(), model.remove(&id).is_some());
            } else {
                let texts: Vec<String> = (0..passages).map(|n| format!("version {version} passage {n} .")).collect();
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                index.index(doc(&id, "T", &texts), &mut |_| {}).unwrap();
                model.insert(id, passages);
            }
            let status = index.status().unwrap();
            prop_assert!(status.consistent, "{:?}", status);
            prop_assert_eq!(status.documents, model.len());
            prop_assert_eq!(status.passages, model.values().sum::<usize>() as u64);
        }
    }
}
