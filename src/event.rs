//! [`FaceEvent`]: the one type sinks see, written as one JSON object per line. Its fields are the
//! documented event schema (README "Events"); add fields, never rename them.

use crate::gallery::Candidate;
use crate::geometry::Rect;
use serde::Serialize;

/// The identity reported for a face that matches nobody in the gallery above the threshold.
pub const UNKNOWN: &str = "unknown";

/// One recognised (or unrecognised) face.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceEvent {
    /// Always `"face"` for now; track-level events come with the streaming pipeline.
    pub event: &'static str,
    /// The image file or camera the frame came from.
    pub source: String,
    /// Frame number within the source, from 0 (an image folder counts its files in name order).
    pub frame: u64,
    /// The matched identity, or `"unknown"`.
    pub identity: String,
    /// Whether `identity` is a gallery match (false for `"unknown"`).
    pub matched: bool,
    /// Cosine similarity of the best gallery candidate (null when the gallery is empty).
    pub score: Option<f32>,
    /// The face's box in frame pixels.
    #[serde(rename = "box")]
    pub rect: Rect,
    /// Width of the face's box in frame pixels.
    pub face_px: f32,
    /// Frame pixels spanned by the aligned 112x112 crop (what restoration decisions use).
    pub aligned_px: f32,
    /// Whether the face was restored before embedding, and by which restorer.
    pub restored: bool,
    pub restorer: Option<String>,
    /// Detector confidence.
    pub detector_score: f32,
    /// The best gallery candidates, best first.
    pub candidates: Vec<Candidate>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_keeps_its_field_names() {
        let e = FaceEvent {
            event: "face",
            source: "a.jpg".into(),
            frame: 0,
            identity: UNKNOWN.into(),
            matched: false,
            score: Some(0.1),
            rect: Rect { x: 1.0, y: 2.0, w: 3.0, h: 4.0 },
            face_px: 3.0,
            aligned_px: 4.0,
            restored: true,
            restorer: Some("bicubic".into()),
            detector_score: 0.9,
            candidates: vec![],
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        for key in [
            "event",
            "source",
            "frame",
            "identity",
            "matched",
            "score",
            "box",
            "face_px",
            "aligned_px",
            "restored",
            "restorer",
            "detector_score",
            "candidates",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["box"]["w"], 3.0);
    }
}
