//! Property test: any sequence of document version replacements and deletions leaves
//! the BM25 index agreeing with a plain map of what should be there, also
//! after reopening it from disk.

use std::collections::BTreeMap;

use margin_core::Passage;
use margin_store::{Bm25Index, DocVersion};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Replace document `doc` with `passages` passages, tagged with `version`.
    Replace {
        doc: u8,
        passages: u8,
        version: u16,
    },
    Delete {
        doc: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..5, 0u8..4, any::<u16>()).prop_map(|(doc, passages, version)| Op::Replace { doc, passages, version }),
        1 => (0u8..5).prop_map(|doc| Op::Delete { doc }),
    ]
}

/// A word that occurs only in one version of one document.
fn marker(doc: u8, version: u16) -> String {
    format!("marker{doc}x{version}")
}

fn passages(doc: u8, count: u8, version: u16) -> Vec<Passage> {
    let doc_id = format!("doc{doc}");
    (0..count as usize)
        .map(|position| Passage {
            id: Passage::make_id(&doc_id, position),
            doc_id: doc_id.clone(),
            title: format!("Document {doc}"),
            text: format!("{} common words here", marker(doc, version)),
            source: "prop".into(),
            position,
        })
        .collect()
}

fn check(
    index: &Bm25Index,
    expected: &BTreeMap<u8, (u8, u16)>,
    seen: &[(u8, u16)],
) -> Result<(), TestCaseError> {
    let total: u64 = expected.values().map(|(count, _)| *count as u64).sum();
    prop_assert_eq!(index.num_passages(), total);
    for &(doc, version) in seen {
        let hits = index.search(&marker(doc, version), 10).unwrap();
        // Only the current version of a live document may be found, once per passage.
        let want = match expected.get(&doc) {
            Some(&(count, current)) if current == version => count as usize,
            _ => 0,
        };
        prop_assert_eq!(hits.len(), want, "doc{} v{}", doc, version);
        let doc_id = format!("doc{doc}");
        prop_assert!(hits.iter().all(|h| h.passage.doc_id == doc_id));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn index_agrees_with_a_model(ops in prop::collection::vec(op(), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        let index = Bm25Index::open(dir.path()).unwrap();
        let mut expected: BTreeMap<u8, (u8, u16)> = BTreeMap::new();
        let mut seen = Vec::new();
        for op in &ops {
            match *op {
                Op::Replace { doc, passages: count, version } => {
                    let ps = passages(doc, count, version);
                    let old = expected.get(&doc).map(|&(_, v)| DocVersion::new(format!("doc{doc}"), v.to_string()));
                    index.write(&[(&version.to_string(), &ps)], old.as_slice()).unwrap();
                    expected.insert(doc, (count, version));
                    seen.push((doc, version));
                }
                Op::Delete { doc } => {
                    if let Some((_, v)) = expected.remove(&doc) {
                        index.write(&[], &[DocVersion::new(format!("doc{doc}"), v.to_string())]).unwrap();
                    }
                }
            }
        }
        check(&index, &expected, &seen)?;
        drop(index);
        let reopened = Bm25Index::open(dir.path()).unwrap();
        check(&reopened, &expected, &seen)?;
    }
}
