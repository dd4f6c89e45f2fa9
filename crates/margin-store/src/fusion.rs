//! Reciprocal rank fusion (Cormack, Clarke and Büttcher, 2009): the hybrid
//! search mode's way of merging dense and BM25 rankings without comparing
//! their incomparable scores.

use std::collections::HashMap;

/// The constant of the original paper, damping the weight of the top ranks.
pub const RRF_K: f64 = 60.0;

/// One ranking to fuse: ids best first, and the weight of this ranking.
#[derive(Debug, Clone)]
pub struct Ranking<'a> {
    /// Weight of every contribution from this ranking.
    pub weight: f64,
    /// Ids, best first; an id listed twice counts at its best rank.
    pub ids: &'a [String],
}

/// Fuses `rankings`: each id scores Σ weight / (k + rank), rank from 1, over
/// the rankings that list it. Returns the `limit` best ids with their scores,
/// best first; ties are broken by id so the order is deterministic.
pub fn reciprocal_rank_fusion(
    rankings: &[Ranking<'_>],
    k: f64,
    limit: usize,
) -> Vec<(String, f64)> {
    let mut scores: HashMap<&str, f64> = HashMap::new();
    for ranking in rankings {
        let mut seen = std::collections::HashSet::new();
        for (rank, id) in ranking.ids.iter().enumerate() {
            if seen.insert(id.as_str()) {
                *scores.entry(id.as_str()).or_default() += ranking.weight / (k + rank as f64 + 1.0);
            }
        }
    }
    let mut fused: Vec<(String, f64)> = scores
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    fused.truncate(limit);
    fused
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Fuses two weighted rankings with the paper's k.
    fn fuse_two(a: (&[String], f64), b: (&[String], f64), limit: usize) -> Vec<(String, f64)> {
        let rankings = [
            Ranking {
                weight: a.1,
                ids: a.0,
            },
            Ranking {
                weight: b.1,
                ids: b.0,
            },
        ];
        reciprocal_rank_fusion(&rankings, RRF_K, limit)
    }

    #[test]
    fn agreement_beats_a_single_first_place() {
        let dense = ids(&["a", "b", "c"]);
        let bm25 = ids(&["d", "b", "a"]);
        let fused = fuse_two((&dense, 1.0), (&bm25, 1.0), 10);
        let order: Vec<&str> = fused.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(order, ["a", "b", "d", "c"]);
        assert!((fused[0].1 - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-12);
    }

    #[test]
    fn weights_shift_the_balance_and_zero_weight_only_keeps_ids() {
        let dense = ids(&["a", "b"]);
        let bm25 = ids(&["b", "a"]);
        let fused = fuse_two((&dense, 2.0), (&bm25, 1.0), 10);
        assert_eq!(fused[0].0, "a");
        let only_dense = fuse_two((&dense, 1.0), (&bm25, 0.0), 1);
        assert_eq!(only_dense, vec![("a".to_string(), 1.0 / 61.0)]);
    }

    proptest! {
        #[test]
        fn one_ranking_keeps_its_order(list in prop::collection::hash_set("[a-z]{1,4}", 0..30)) {
            let list: Vec<String> = list.into_iter().collect();
            let fused = reciprocal_rank_fusion(&[Ranking { weight: 1.0, ids: &list }], RRF_K, usize::MAX);
            let order: Vec<String> = fused.into_iter().map(|(id, _)| id).collect();
            prop_assert_eq!(order, list);
        }

        #[test]
        fn fused_ids_come_from_the_inputs_once_each_sorted(
            a in prop::collection::vec("[a-e]", 0..12),
            b in prop::collection::vec("[a-e]", 0..12),
            limit in 0usize..8,
        ) {
            let fused = fuse_two((&a, 1.0), (&b, 0.5), limit);
            prop_assert!(fused.len() <= limit);
            let unique: std::collections::HashSet<&String> = fused.iter().map(|(id, _)| id).collect();
            prop_assert_eq!(unique.len(), fused.len());
            prop_assert!(fused.iter().all(|(id, _)| a.contains(id) || b.contains(id)));
            prop_assert!(fused.windows(2).all(|w| w[0].1 >= w[1].1));
        }
    }
}
