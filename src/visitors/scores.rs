//! Clustering quality against known labels: pairwise precision and recall (over every pair of
//! items, "same cluster" against "same person") and BCubed precision, recall and F (per item:
//! how much of its cluster is its person, and how much of its person is in its cluster,
//! averaged over items; Bagga and Baldwin 1998, Amigó et al. 2009).

use serde::Serialize;
use std::collections::HashMap;
use std::hash::Hash;

/// The figures of one clustering.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterScores {
    pub items: usize,
    /// Distinct labels (people) and clusters (visitors).
    pub people: usize,
    pub clusters: usize,
    /// Of the pairs put together, the share that are the same person (1 when no pair was).
    pub pairwise_precision: f64,
    /// Of the same-person pairs, the share put together (1 when there is none).
    pub pairwise_recall: f64,
    pub bcubed_precision: f64,
    pub bcubed_recall: f64,
    pub bcubed_f: f64,
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Scores `assigned[i]` (cluster of item i) against `labels[i]` (its person).
pub fn score<L: Eq + Hash, C: Eq + Hash>(labels: &[L], assigned: &[C]) -> ClusterScores {
    let n = labels.len().min(assigned.len());
    let mut joint: HashMap<(&L, &C), u64> = HashMap::new();
    let mut by_label: HashMap<&L, u64> = HashMap::new();
    let mut by_cluster: HashMap<&C, u64> = HashMap::new();
    for (l, c) in labels.iter().zip(assigned).take(n) {
        *joint.entry((l, c)).or_default() += 1;
        *by_label.entry(l).or_default() += 1;
        *by_cluster.entry(c).or_default() += 1;
    }
    let together: u64 = by_cluster.values().map(|&k| pairs(k)).sum();
    let same: u64 = by_label.values().map(|&k| pairs(k)).sum();
    let both: u64 = joint.values().map(|&k| pairs(k)).sum();
    let (mut bp, mut br) = (0.0, 0.0);
    for ((l, c), &k) in &joint {
        let k = k as f64;
        bp += k * k / by_cluster[c] as f64;
        br += k * k / by_label[l] as f64;
    }
    let items = n.max(1) as f64;
    let (bp, br) = (bp / items, br / items);
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    ClusterScores {
        items: n,
        people: by_label.len(),
        clusters: by_cluster.len(),
        pairwise_precision: ratio(both, together),
        pairwise_recall: ratio(both, same),
        bcubed_precision: bp,
        bcubed_recall: br,
        bcubed_f: if bp + br > 0.0 { 2.0 * bp * br / (bp + br) } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_clustering_scores_one() {
        let s = score(&["a", "a", "b", "c"], &[1, 1, 2, 3]);
        assert_eq!((s.pairwise_precision, s.pairwise_recall, s.bcubed_f), (1.0, 1.0, 1.0));
        assert_eq!((s.people, s.clusters), (3, 3));
    }

    #[test]
    fn everything_in_one_cluster_has_full_recall_and_low_precision() {
        let s = score(&["a", "a", "b", "b"], &[0, 0, 0, 0]);
        assert_eq!(s.pairwise_recall, 1.0);
        // 6 pairs together, 2 of them the same person.
        assert!((s.pairwise_precision - 2.0 / 6.0).abs() < 1e-12);
        assert!((s.bcubed_precision - 0.5).abs() < 1e-12);
        assert_eq!(s.bcubed_recall, 1.0);
    }

    #[test]
    fn all_singletons_have_full_precision() {
        let s = score(&["a", "a", "a", "b"], &[0, 1, 2, 3]);
        assert_eq!(s.pairwise_precision, 1.0);
        assert_eq!(s.pairwise_recall, 0.0);
        // BCubed recall: a's items each see 1 of 3, b sees 1 of 1: (1/3 * 3 + 1) / 4 = 0.5.
        assert!((s.bcubed_recall - 0.5).abs() < 1e-12);
    }
}
