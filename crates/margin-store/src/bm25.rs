//! BM25 over passages with tantivy.

use std::path::Path;
use std::sync::Mutex;

use margin_core::{OperationError, OperationResult, Passage};

use crate::vector::{DocVersion, StoredHit};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// Tantivy's built-in English analyser: simple tokens, lower case, Porter stemming.
const ANALYZER: &str = "en_stem";

/// Memory for the writer's indexing buffer, shared by its threads.
const WRITER_MEMORY: usize = 64 * 1024 * 1024;

struct Fields {
    passage_id: Field,
    doc_id: Field,
    generation: Field,
    /// `doc_id` and `generation` in one term, so one version deletes at once.
    version: Field,
    title: Field,
    text: Field,
    source: Field,
    position: Field,
}

fn version_key(doc_id: &str, generation: &str) -> String {
    format!("{doc_id}\u{0}{generation}")
}

/// A persistent BM25 index of passages (title and text, English stemming).
pub struct Bm25Index {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
}

fn store_error(what: &str, e: impl std::fmt::Display) -> OperationError {
    OperationError::store("BM25 index", format!("{what}: {e}"))
}

impl Bm25Index {
    /// Opens the index in `dir`, creating it when the folder is empty or missing.
    pub fn open(dir: &Path) -> OperationResult<Bm25Index> {
        std::fs::create_dir_all(dir).map_err(|e| OperationError::io(dir, e))?;
        let what = dir.display().to_string();
        let mut schema = Schema::builder();
        let analysed = TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(ANALYZER)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            )
            .set_stored();
        let fields = Fields {
            passage_id: schema.add_text_field("passage_id", STRING | STORED),
            doc_id: schema.add_text_field("doc_id", STRING | STORED),
            generation: schema.add_text_field("generation", STRING | STORED),
            version: schema.add_text_field("version", STRING),
            title: schema.add_text_field("title", analysed.clone()),
            text: schema.add_text_field("text", analysed),
            source: schema.add_text_field("source", STORED),
            position: schema.add_u64_field("position", STORED),
        };
        let schema = schema.build();
        let directory =
            tantivy::directory::MmapDirectory::open(dir).map_err(|e| store_error(&what, e))?;
        let index = Index::open_or_create(directory, schema).map_err(|e| store_error(&what, e))?;
        let writer = index
            .writer(WRITER_MEMORY)
            .map_err(|e| store_error(&what, e))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| store_error(&what, e))?;
        Ok(Bm25Index {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
        })
    }

    /// Adds the passages of document versions (generation, passages) and
    /// removes other versions, in one commit: a reader sees all of it or none.
    pub fn write(&self, add: &[(&str, &[Passage])], delete: &[DocVersion]) -> OperationResult<()> {
        let mut writer = self.lock_writer();
        if let Err(e) = self.stage(&mut writer, add, delete) {
            // Staged deletions and additions must not ride along with a later commit.
            writer.rollback().map_err(|e| store_error("rollback", e))?;
            return Err(e);
        }
        self.commit(&mut writer)
    }

    fn stage(
        &self,
        writer: &mut IndexWriter,
        add: &[(&str, &[Passage])],
        delete: &[DocVersion],
    ) -> OperationResult<()> {
        for version in delete {
            writer.delete_term(Term::from_field_text(
                self.fields.version,
                &version_key(&version.doc_id, &version.generation),
            ));
        }
        for (generation, passages) in add {
            for p in *passages {
                writer
                    .add_document(doc!(
                        self.fields.passage_id => p.id.as_str(),
                        self.fields.doc_id => p.doc_id.as_str(),
                        self.fields.generation => *generation,
                        self.fields.version => version_key(&p.doc_id, generation),
                        self.fields.title => p.title.as_str(),
                        self.fields.text => p.text.as_str(),
                        self.fields.source => p.source.as_str(),
                        self.fields.position => p.position as u64,
                    ))
                    .map_err(|e| store_error(&p.id, e))?;
            }
        }
        Ok(())
    }

    /// The writer, also after a panic elsewhere held its lock: every write
    /// path either commits or rolls back, so its state is never half-staged.
    fn lock_writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn commit(&self, writer: &mut IndexWriter) -> OperationResult<()> {
        if let Err(e) = writer.commit() {
            // Drop what was staged so the next commit cannot publish half of it.
            return Err(match writer.rollback() {
                Ok(_) => store_error("commit", e),
                Err(rollback) => store_error(
                    "commit",
                    format!("{e}; rolling back failed too ({rollback}): reopen the index"),
                ),
            });
        }
        self.reader.reload().map_err(|e| {
            store_error(
                "reload",
                format!("committed, but the searcher could not be refreshed: {e}"),
            )
        })
    }

    /// Number of passages searchable now.
    pub fn num_passages(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The `k` passages that best match `query` by BM25 over title and text.
    /// Query syntax errors are forgiven (the words are still searched).
    pub fn search(&self, query: &str, k: usize) -> OperationResult<Vec<StoredHit>> {
        if query.trim().is_empty() {
            return Err(OperationError::bad_input("query", "must not be empty"));
        }
        if k == 0 {
            return Err(OperationError::bad_input("k", "must be at least 1"));
        }
        let searcher = self.reader.searcher();
        let k = k.min(searcher.num_docs().max(1) as usize);
        let parser = QueryParser::for_index(&self.index, vec![self.fields.title, self.fields.text]);
        let (parsed, _errors) = parser.parse_query_lenient(query);
        let top = searcher
            .search(&parsed, &TopDocs::with_limit(k))
            .map_err(|e| store_error("search", e))?;
        top.into_iter()
            .map(|(score, address)| {
                let stored: TantivyDocument = searcher
                    .doc(address)
                    .map_err(|e| store_error("search", e))?;
                let text = |field| {
                    stored
                        .get_first(field)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string()
                };
                Ok(StoredHit {
                    passage: Passage {
                        id: text(self.fields.passage_id),
                        doc_id: text(self.fields.doc_id),
                        title: text(self.fields.title),
                        text: text(self.fields.text),
                        source: text(self.fields.source),
                        position: stored
                            .get_first(self.fields.position)
                            .and_then(|v| v.as_u64())
                            .unwrap_or_default() as usize,
                    },
                    generation: text(self.fields.generation),
                    score,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(doc: &str, position: usize, title: &str, text: &str) -> Passage {
        Passage {
            id: Passage::make_id(doc, position),
            doc_id: doc.into(),
            title: title.into(),
            text: text.into(),
            source: format!("{doc}.txt"),
            position,
        }
    }

    fn corpus() -> Vec<(String, Vec<Passage>)> {
        vec![
            (
                "tides".into(),
                vec![
                    passage(
                        "tides",
                        0,
                        "Tides",
                        "The Moon's gravity pulls the oceans, raising tides twice a day.",
                    ),
                    passage(
                        "tides",
                        1,
                        "Tides",
                        "Spring tides happen at full and new moon.",
                    ),
                ],
            ),
            (
                "bees".into(),
                vec![passage(
                    "bees",
                    0,
                    "Honeybees",
                    "Bees are dancing to show where flowers grow.",
                )],
            ),
            (
                "press".into(),
                vec![passage(
                    "press",
                    0,
                    "Printing press",
                    "Gutenberg printed books with movable type.",
                )],
            ),
        ]
    }

    fn index_corpus(index: &Bm25Index) {
        let docs = corpus();
        let add: Vec<(&str, &[Passage])> = docs.iter().map(|(_, p)| ("g1", p.as_slice())).collect();
        index.write(&add, &[]).unwrap();
    }

    #[test]
    fn finds_stemmed_words_in_titles_and_texts() {
        let dir = tempfile::tempdir().unwrap();
        let index = Bm25Index::open(dir.path()).unwrap();
        index_corpus(&index);
        assert_eq!(index.num_passages(), 4);
        let hits = index.search("bee dance", 3).unwrap();
        assert_eq!(hits[0].passage.id, "bees#0", "bee~Bees, dance~dancing");
        assert_eq!(hits[0].passage.title, "Honeybees");
        assert_eq!(hits[0].passage.source, "bees.txt");
        assert_eq!(hits[0].generation, "g1");
        let hits = index.search("printing", 3).unwrap();
        assert_eq!(hits[0].passage.doc_id, "press");
        let tides = &index.search("what pulls the ocean?", 2).unwrap()[0].passage;
        assert_eq!((tides.id.as_str(), tides.position), ("tides#0", 0));
    }

    #[test]
    fn versions_are_added_and_deleted_atomically_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Bm25Index::open(dir.path()).unwrap();
            index_corpus(&index);
            let new_tides = [passage("tides", 0, "Tides", "Neap tides are the weakest.")];
            index
                .write(&[("g2", &new_tides[..])], &[DocVersion::new("tides", "g1")])
                .unwrap();
            assert_eq!(index.num_passages(), 3);
            assert!(
                index.search("spring", 5).unwrap().is_empty(),
                "old passages are gone"
            );
            index.write(&[], &[DocVersion::new("bees", "g1")]).unwrap();
            assert_eq!(index.num_passages(), 2);
            index
                .write(&[], &[DocVersion::new("press", "other")])
                .unwrap();
            assert_eq!(index.num_passages(), 2, "only the named version goes");
        }
        let reopened = Bm25Index::open(dir.path()).unwrap();
        assert_eq!(reopened.num_passages(), 2);
        let neap = &reopened.search("neap", 5).unwrap()[0];
        assert_eq!(
            (neap.passage.id.as_str(), neap.generation.as_str()),
            ("tides#0", "g2")
        );
        assert!(reopened.search("bees", 5).unwrap().is_empty());
    }

    #[test]
    fn bad_queries_are_clear_errors_and_odd_syntax_is_forgiven() {
        let dir = tempfile::tempdir().unwrap();
        let index = Bm25Index::open(dir.path()).unwrap();
        index_corpus(&index);
        assert!(index
            .search("   ", 5)
            .unwrap_err()
            .to_string()
            .contains("query"));
        assert!(index
            .search("tides", 0)
            .unwrap_err()
            .to_string()
            .contains("k"));
        assert_eq!(
            index.search("tides", 1_000_000).unwrap().len(),
            2,
            "huge k is capped"
        );
        assert!(!index
            .search("moon AND (tides OR \"unclosed", 5)
            .unwrap()
            .is_empty());
    }
}
