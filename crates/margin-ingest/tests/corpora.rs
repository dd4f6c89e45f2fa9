//! The project's real corpora: the demo documents and, where it is present,
//! the shared evaluation corpus.

use std::collections::HashSet;
use std::time::Instant;

use margin_core::config::ChunkingConfig;
use margin_ingest::{ingest_paths, read_documents, Chunker, FileOutcome};
use margin_testkit::{shared_eval_file, workspace_root};

fn dpr_chunker() -> Chunker {
    Chunker::new(ChunkingConfig {
        words: 100,
        overlap: 0,
    })
    .unwrap()
}

#[test]
fn demo_corpus_reads_cleanly() {
    let demo = workspace_root().join("corpora/demo");
    let report = ingest_paths(&[demo], &dpr_chunker());
    for file in &report.files {
        assert_eq!(file.outcome, FileOutcome::Ingested, "{file:?}");
    }
    assert_eq!(report.totals.files_ingested, 6);
    assert_eq!(report.totals.documents, 6);

    let mut titles: Vec<&str> = report.passages.iter().map(|p| p.title.as_str()).collect();
    titles.dedup();
    assert_eq!(
        titles,
        [
            "clocks",
            "Honeybees",
            "A Short History of the Lighthouse",
            "The Metric System",
            "The Printing Press",
            "tides"
        ]
    );
    for title in &titles {
        let words: usize = report
            .passages
            .iter()
            .filter(|p| p.title == *title)
            .map(|p| p.text.split(' ').count())
            .sum();
        assert!((200..=500).contains(&words), "{title}: {words} words");
    }
    let all_text: String = report.passages.iter().map(|p| p.text.as_str()).collect();
    assert!(all_text.contains("Christiaan Huygens built the first pendulum clock"));
    assert!(
        all_text.contains("Pierre Méchain"),
        "HTML entities are decoded"
    );
    assert!(!all_text.contains("console.log") && !all_text.contains("font-family"));
}

/// Reads the 12,143-record evaluation corpus; skipped (with a message) where
/// `../shared/eval` is absent, and failing instead under MARGIN_REQUIRE_MODELS=1.
#[test]
fn eval_corpus_reads_every_record() {
    let Some(path) = shared_eval_file("eval_corpus_reads_every_record", "corpus.jsonl") else {
        return;
    };
    let started = Instant::now();
    let documents = read_documents(&path).unwrap();
    let chunker = dpr_chunker();
    let passages = chunker.chunk_all(&documents);
    eprintln!(
        "{} records, {} passages in {:.2?}",
        documents.len(),
        passages.len(),
        started.elapsed()
    );

    assert_eq!(documents.len(), 12_143);
    let ids: HashSet<&str> = documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), documents.len());
    assert!(passages.iter().all(|p| ids.contains(p.doc_id.as_str())));
    let chunked: HashSet<&str> = passages.iter().map(|p| p.doc_id.as_str()).collect();
    assert_eq!(chunked.len(), ids.len(), "every record gives a passage");
    assert!(passages
        .iter()
        .all(|p| p.text.split(' ').count() <= chunker.max_passage_words()));
    assert!(documents[0].source.ends_with("corpus.jsonl:1"));
}
