//! Online clustering of unknown faces, in memory and pure: each visitor keeps its best few
//! embeddings (by face quality) and the normalised mean of them (its centroid). A new unknown
//! joins the visitor it is most similar to when that similarity reaches the threshold, else it
//! founds a new visitor. The same code serves the running daemon ([`super::store`] loads the
//! visitors from SQLite into it) and the LFW measurement ([`super::eval`]).

use crate::embed::{cosine, normalize};
use serde::{Deserialize, Serialize};

/// Embeddings kept per visitor (the best by quality): enough to cover a few poses and lights,
/// few enough that the comparison per unknown stays a few thousand dot products.
pub const KEEP: usize = 5;

/// How a new embedding is compared with a visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Linkage {
    /// Cosine against the visitor's centroid (normalised mean of its kept embeddings).
    Centroid,
    /// The highest cosine against any of its kept embeddings.
    Max,
}

impl Linkage {
    pub fn name(self) -> &'static str {
        match self {
            Linkage::Centroid => "centroid",
            Linkage::Max => "max",
        }
    }
}

/// One kept embedding of a visitor.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// L2-normalised.
    pub vector: Vec<f32>,
    /// Face quality in [0, 1] ([`crate::track::quality`] of the track's best shot).
    pub quality: f32,
}

/// A visitor as the clustering sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// The visitor's id (the database row id in the daemon; an index in evaluations).
    pub id: i64,
    /// Best quality first, at most [`KEEP`].
    pub kept: Vec<Kept>,
    centroid: Vec<f32>,
}

impl Cluster {
    /// A visitor made of `kept` (re-sorted by quality, cut to [`KEEP`]); `None` if it has no
    /// usable embedding.
    pub fn new(id: i64, mut kept: Vec<Kept>) -> Option<Self> {
        kept.retain(|k| !k.vector.is_empty() && k.vector.iter().all(|x| x.is_finite()));
        kept.sort_by(|a, b| b.quality.total_cmp(&a.quality));
        kept.truncate(KEEP);
        let mut c = Self { id, kept, centroid: Vec::new() };
        c.recentre();
        (!c.centroid.is_empty()).then_some(c)
    }

    /// The normalised mean of the kept embeddings.
    pub fn centroid(&self) -> &[f32] {
        &self.centroid
    }

    /// Similarity of `v` (normalised) to this visitor.
    pub fn score(&self, v: &[f32], linkage: Linkage) -> f32 {
        match linkage {
            Linkage::Centroid => cosine(&self.centroid, v),
            Linkage::Max => self.kept.iter().map(|k| cosine(&k.vector, v)).fold(f32::NEG_INFINITY, f32::max),
        }
    }

    /// Offers an embedding: kept when it is among the [`KEEP`] best by quality (ties keep the
    /// older). Returns whether it was kept.
    pub fn offer(&mut self, kept: Kept) -> bool {
        let at = self.kept.iter().position(|k| kept.quality > k.quality).unwrap_or(self.kept.len());
        if at >= KEEP {
            return false;
        }
        self.kept.insert(at, kept);
        self.kept.truncate(KEEP);
        self.recentre();
        true
    }

    /// Takes in every kept embedding of `other` (a merge), keeping the best [`KEEP`].
    pub fn absorb(&mut self, other: Cluster) {
        for k in other.kept {
            self.offer(k);
        }
    }

    fn recentre(&mut self) {
        let dim = self.kept.first().map_or(0, |k| k.vector.len());
        let mut acc = vec![0.0f32; dim];
        for k in self.kept.iter().filter(|k| k.vector.len() == dim) {
            for (a, v) in acc.iter_mut().zip(&k.vector) {
                *a += v;
            }
        }
        if let Some(c) = normalize(acc) {
            self.centroid = c;
        }
    }
}

/// The visitor most similar to `v` and its similarity, if any reaches `threshold`.
pub fn best_match(clusters: &[Cluster], v: &[f32], linkage: Linkage, threshold: f32) -> Option<(usize, f32)> {
    clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.score(v, linkage)))
        .filter(|(_, s)| s.is_finite() && *s >= threshold)
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Online clustering of a stream of embeddings (what the evaluation runs; the daemon does the
/// same step by step against its database).
#[derive(Debug, Clone)]
pub struct Online {
    pub linkage: Linkage,
    pub threshold: f32,
    pub clusters: Vec<Cluster>,
}

impl Online {
    pub fn new(linkage: Linkage, threshold: f32) -> Self {
        Self { linkage, threshold, clusters: Vec::new() }
    }

    /// Assigns one embedding: the index of the cluster it joined or founded.
    pub fn push(&mut self, vector: Vec<f32>, quality: f32) -> usize {
        match best_match(&self.clusters, &vector, self.linkage, self.threshold) {
            Some((i, _)) => {
                self.clusters[i].offer(Kept { vector, quality });
                i
            }
            None => {
                let id = self.clusters.len() as i64;
                match Cluster::new(id, vec![Kept { vector, quality }]) {
                    Some(c) => {
                        self.clusters.push(c);
                        self.clusters.len() - 1
                    }
                    // An unusable (zero or non-finite) embedding founds nothing; it is its own
                    // singleton, numbered past every cluster.
                    None => usize::MAX,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(angle: f32) -> Vec<f32> {
        vec![angle.cos(), angle.sin()]
    }

    #[test]
    fn a_close_embedding_joins_and_a_far_one_founds_a_visitor() {
        let mut o = Online::new(Linkage::Centroid, 0.9);
        assert_eq!(o.push(unit(0.0), 0.5), 0);
        assert_eq!(o.push(unit(0.1), 0.6), 0, "cos 0.1 = 0.995 joins");
        assert_eq!(o.push(unit(1.5), 0.5), 1, "cos 1.5 = 0.07 founds a second visitor");
        assert_eq!(o.clusters[0].kept.len(), 2);
        assert_eq!(o.clusters[0].kept[0].quality, 0.6, "best quality first");
    }

    #[test]
    fn only_the_best_embeddings_are_kept() {
        let mut c = Cluster::new(1, vec![Kept { vector: unit(0.0), quality: 0.1 }]).unwrap();
        for i in 0..10 {
            c.offer(Kept { vector: unit(0.01 * i as f32), quality: 0.2 + 0.05 * i as f32 });
        }
        assert_eq!(c.kept.len(), KEEP);
        assert!(c.kept.windows(2).all(|w| w[0].quality >= w[1].quality));
        assert!((c.kept[0].quality - 0.65).abs() < 1e-6);
        assert!(!c.offer(Kept { vector: unit(0.0), quality: 0.0 }), "worse than every kept one");
    }

    #[test]
    fn linkages_differ_on_a_spread_visitor() {
        // Two kept embeddings 90 degrees apart: the centroid sits between them.
        let c = Cluster::new(
            1,
            vec![
                Kept { vector: unit(0.0), quality: 1.0 },
                Kept { vector: unit(std::f32::consts::FRAC_PI_2), quality: 1.0 },
            ],
        )
        .unwrap();
        let probe = unit(0.0);
        assert!((c.score(&probe, Linkage::Max) - 1.0).abs() < 1e-6);
        assert!((c.score(&probe, Linkage::Centroid) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-5);
    }

    #[test]
    fn unusable_embeddings_found_nothing() {
        assert!(Cluster::new(1, vec![Kept { vector: vec![0.0, 0.0], quality: 1.0 }]).is_none());
        assert!(Cluster::new(1, vec![Kept { vector: vec![f32::NAN, 1.0], quality: 1.0 }]).is_none());
        let mut o = Online::new(Linkage::Max, 0.5);
        assert_eq!(o.push(vec![0.0, 0.0], 1.0), usize::MAX);
        assert!(o.clusters.is_empty());
    }

    #[test]
    fn absorbing_keeps_the_best_of_both() {
        let mut a =
            Cluster::new(1, (0..4).map(|i| Kept { vector: unit(0.0), quality: 0.1 * i as f32 }).collect()).unwrap();
        let b = Cluster::new(2, (0..4).map(|i| Kept { vector: unit(0.1), quality: 0.5 + 0.1 * i as f32 }).collect())
            .unwrap();
        a.absorb(b);
        assert_eq!(a.kept.len(), KEEP);
        assert!((a.kept[0].quality - 0.8).abs() < 1e-6);
    }
}
