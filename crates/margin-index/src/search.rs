//! Dense, BM25 and hybrid search over an [`Index`].

use std::collections::HashMap;

use margin_core::config::SearchMode;
use margin_core::{OperationError, OperationResult, Passage};
use margin_store::{reciprocal_rank_fusion, DenseSearch, Ranking, StoredHit, RRF_K};
use serde::Serialize;

use crate::Index;

/// The most results one search returns.
pub const MAX_K: usize = 1000;

/// How hybrid search fuses its two rankings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HybridSettings {
    /// Weight of the dense ranking.
    pub dense_weight: f64,
    /// Weight of the BM25 ranking.
    pub bm25_weight: f64,
    /// Candidates taken from each ranking (at least k).
    pub candidates: usize,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    /// The passage: id, document id, title, text, source.
    pub passage: Passage,
    /// Score in the search's mode: cosine (dense), BM25, or fused (hybrid).
    pub score: f64,
}

impl Index {
    /// The `k` passages that best answer `query` in `mode`, best first.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        mode: SearchMode,
    ) -> OperationResult<Vec<SearchHit>> {
        Ok(self.search_batch(&[query], k, mode)?.remove(0))
    }

    /// [`Index::search`] for many queries, encoding them together.
    pub fn search_batch(
        &self,
        queries: &[&str],
        k: usize,
        mode: SearchMode,
    ) -> OperationResult<Vec<Vec<SearchHit>>> {
        if k == 0 {
            return Err(OperationError::bad_input("k", "must be at least 1"));
        }
        if k > MAX_K {
            return Err(OperationError::bad_input(
                "k",
                format!("must be at most {MAX_K} (got {k})"),
            ));
        }
        if let Some(i) = queries.iter().position(|q| q.trim().is_empty()) {
            let what = if queries.len() == 1 {
                "query".to_string()
            } else {
                format!("query {}", i + 1)
            };
            return Err(OperationError::bad_input(what, "must not be empty"));
        }
        let hybrid = self.settings.hybrid;
        let depth = match mode {
            SearchMode::Hybrid => hybrid.candidates.max(k),
            _ => k,
        };
        let dense = match mode {
            SearchMode::Bm25 => None,
            _ => Some(self.dense_candidates(queries, depth)?),
        };
        let mut results = Vec::with_capacity(queries.len());
        for (i, query) in queries.iter().enumerate() {
            let keyword = match mode {
                SearchMode::Dense => None,
                _ => Some(self.current(self.bm25.search(query, self.fetch_depth(depth))?, depth)),
            };
            let dense = dense.as_ref().map(|d| d[i].clone());
            results.push(match (dense, keyword) {
                (Some(d), None) | (None, Some(d)) => d,
                (Some(d), Some(b)) => fuse(d, b, hybrid, k),
                (None, None) => unreachable!("every mode searches at least one store"),
            });
        }
        Ok(results)
    }

    fn dense_candidates(
        &self,
        queries: &[&str],
        depth: usize,
    ) -> OperationResult<Vec<Vec<SearchHit>>> {
        let vectors = self.encoder.encode_questions(queries)?;
        let search = DenseSearch {
            k: self.fetch_depth(depth),
            exact: false,
        };
        vectors
            .iter()
            .map(|v| Ok(self.current(self.vectors.search(v, search)?, depth)))
            .collect()
    }

    /// How many hits to ask a store for so that `depth` survive filtering:
    /// while versions are pending, stale passages may take places.
    fn fetch_depth(&self, depth: usize) -> usize {
        if self.read_registry().pending_count() == 0 {
            depth
        } else {
            depth * 2
        }
    }

    /// Keeps hits of indexed versions only, at most `depth`.
    fn current(&self, hits: Vec<StoredHit>, depth: usize) -> Vec<SearchHit> {
        let registry = self.read_registry();
        hits.into_iter()
            .filter(|h| registry.is_current(&h.passage.doc_id, &h.generation))
            .take(depth)
            .map(|h| SearchHit {
                passage: h.passage,
                score: h.score as f64,
            })
            .collect()
    }
}

/// Reciprocal rank fusion of a dense and a BM25 ranking.
fn fuse(
    dense: Vec<SearchHit>,
    bm25: Vec<SearchHit>,
    settings: HybridSettings,
    k: usize,
) -> Vec<SearchHit> {
    let dense_ids: Vec<String> = dense.iter().map(|h| h.passage.id.clone()).collect();
    let bm25_ids: Vec<String> = bm25.iter().map(|h| h.passage.id.clone()).collect();
    let mut passages: HashMap<String, Passage> = dense
        .into_iter()
        .chain(bm25)
        .map(|h| (h.passage.id.clone(), h.passage))
        .collect();
    reciprocal_rank_fusion(
        &[
            Ranking {
                weight: settings.dense_weight,
                ids: &dense_ids,
            },
            Ranking {
                weight: settings.bm25_weight,
                ids: &bm25_ids,
            },
        ],
        RRF_K,
        k,
    )
    .into_iter()
    .map(|(id, score)| SearchHit {
        passage: passages
            .remove(&id)
            .expect("fused ids come from the two rankings"),
        score,
    })
    .collect()
}
