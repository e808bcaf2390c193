//! `[visitors]`: whether unknown faces are clustered into visitors, how alike two unknowns must
//! be to be one visitor, and how long visitors are kept. Visitors are biometric data of people who
//! did not enroll: they live in the gallery database (mode 0600), at most `max_visitors` of them,
//! none last seen more than `retention_days` ago; `enabled = false` turns the whole thing off (no
//! visitor is recorded; those already stored stay until forgotten or aged out by a later run).

use super::cluster::Linkage;
use serde::{Deserialize, Serialize};

/// The visitor threshold for SFace embeddings (faces of 112 aligned px or more): the lowest cosine
/// whose false-accept rate is at most 1e-4 over every pair of LFW folds 1-5's images (3,811
/// images aligned at 112 px: 4,414 genuine and 7,255,541 impostor pairs; TAR 0.977 there),
/// measured by `farsight eval-visitors` (defaults: `--calibrate-folds 1-5 --folds 6-10 --sizes
/// 112,24 --far 1e-3,1e-4`). FAR 1e-4 rather than 1e-3 was chosen before looking at folds 6-10: an
/// unknown is compared with up to `max_visitors` visitors, so a per-pair false accept must be rare.
pub const DEFAULT_THRESHOLD: f32 = 0.4203;

/// The same for an unknown whose every shot went through the small-face path, from the same run's
/// 24 px probes (the aligned face downsampled to 24 px, then upscaled and embedded as `farsight
/// run` does below `embed.small_face_below_px`: bicubic + lrembed): FAR 1e-4, TAR 0.839. Both are rounded up to
/// four decimals (0.42026 and 0.49804 measured).
pub const DEFAULT_SMALL_FACE_THRESHOLD: f32 = 0.4981;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisitorsConfig {
    /// Cluster unknown tracks into visitors (events then carry `visitor`).
    pub enabled: bool,
    /// Cosine at or above which an unknown joins a visitor (SFace embeddings).
    pub threshold: f32,
    /// The same when every shot of the unknown came from the small-face embedder.
    pub small_face_threshold: f32,
    /// How an unknown is compared with a visitor: its centroid, or the best of its kept faces.
    pub linkage: Linkage,
    /// Visitors not seen for this many days are forgotten (checked at start and hourly).
    pub retention_days: u32,
    /// At most this many visitors are kept; the least recently seen go first.
    pub max_visitors: usize,
}

impl Default for VisitorsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: DEFAULT_THRESHOLD,
            small_face_threshold: DEFAULT_SMALL_FACE_THRESHOLD,
            linkage: Linkage::Centroid,
            retention_days: 30,
            max_visitors: 1000,
        }
    }
}

impl VisitorsConfig {
    /// Every problem with the values. Pure.
    pub fn validate(&self, p: &mut Vec<String>) {
        for (key, v) in [("threshold", self.threshold), ("small_face_threshold", self.small_face_threshold)] {
            if !(v > -1.0 && v <= 1.0) {
                p.push(format!("visitors.{key} = {v} must be a cosine similarity in (-1, 1]"));
            }
        }
        if !(1..=3650).contains(&self.retention_days) {
            p.push(format!(
                "visitors.retention_days = {} must be between 1 and 3650 (turn visitors off with enabled = false)",
                self.retention_days
            ));
        }
        if !(1..=100_000).contains(&self.max_visitors) {
            p.push(format!("visitors.max_visitors = {} must be between 1 and 100000", self.max_visitors));
        }
    }

    /// The threshold for an unknown (`small_face`: every shot from the small-face embedder).
    pub fn threshold_for(&self, small_face: bool) -> f32 {
        if small_face {
            self.small_face_threshold
        } else {
            self.threshold
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        let mut p = Vec::new();
        VisitorsConfig::default().validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
        let bad = VisitorsConfig { threshold: 1.5, retention_days: 0, max_visitors: 0, ..Default::default() };
        bad.validate(&mut p);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("visitors.threshold = 1.5"), "{p:?}");
    }
}
