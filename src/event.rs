//! [`FaceEvent`]: the one type sinks see, written as one JSON object per line. Its fields are the
//! documented event schema (README "Events"); add fields, never rename them.

use crate::gallery::Candidate;
use crate::geometry::Rect;
use serde::{Deserialize, Serialize};

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
    /// The embedder that made the face's embedding: `"sface"`, or the small-face embedder
    /// (`"lrembed"`) for a face below `embed.small_face_below_px`.
    pub embedder: String,
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
            embedder: "lrembed".into(),
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

/// What a track was decided to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackDecision {
    /// The fused embedding matched a gallery identity at or above the threshold.
    Match,
    /// Nobody in the gallery matched: a stranger is an event too.
    Unknown,
}

/// Which event of a visit this is. Every visit that lasts `track.min_frames` frames ends with
/// exactly one `final` event; before it, at most one `decision` (sent while the person is still
/// there, once the track is confident) and an `update` for each later change of that decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Decision,
    Update,
    Final,
}

/// The best face of a track: what the decision rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestShot {
    /// Frame number (within the camera's run) the face was seen in.
    pub frame: u64,
    /// The face's box in frame pixels.
    #[serde(rename = "box")]
    pub rect: Rect,
    /// Width of the face's box in frame pixels.
    pub face_px: f32,
    /// Frame pixels spanned by the aligned 112x112 crop.
    pub aligned_px: f32,
    pub restored: bool,
    pub restorer: Option<String>,
    /// The embedder that made this shot's embedding (`"sface"` or `"lrembed"`); absent in events
    /// written before the small-face path existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
    pub detector_score: f32,
    /// Quality in [0, 1]: size, sharpness, detector score and frontal pose combined.
    pub quality: f32,
    /// Saved crop of the aligned face, when crops are enabled (off by default).
    pub crop: Option<String>,
}

/// One event per person-visit (track): what stdout, SQLite, MQTT and the webhook receive.
/// Its fields are the documented event schema (README "Events"); add fields, never rename them.
/// It reads back from its own JSON (the SQLite sink's `events.json` column) with the same names;
/// floats outside f32's range read as infinities, which JSON cannot hold: see `fuzzing::event_json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackEvent {
    /// `"match"` or `"unknown"`.
    pub event: TrackDecision,
    /// `"decision"` (announced while the person is there), `"update"` (the decision changed) or
    /// `"final"` (the visit ended; its one closing event).
    pub phase: Phase,
    /// False for the `final` event every track ends with; true for the events sent while the
    /// track is still open (`decision`, `update`).
    pub update: bool,
    /// The camera's configured name.
    pub camera: String,
    /// Track number, unique within this run of farsight.
    pub track: u64,
    /// The matched identity, or `"unknown"`.
    pub identity: String,
    /// Cosine similarity of the best candidate for the fused embedding (null with an empty gallery).
    pub score: Option<f32>,
    /// The best gallery candidates, best first.
    pub candidates: Vec<Candidate>,
    pub best_shot: BestShot,
    /// Wall-clock time of the first and last frame the face was seen in, Unix milliseconds.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Stream time (seconds) of the first and last sighting: video time for files.
    pub first_seen_s: f64,
    pub last_seen_s: f64,
    /// Frames the face was seen in, and how many of the best of them were fused for the decision.
    pub frames_seen: u32,
    pub frames_used: u32,
    /// For an `unknown` event with `[visitors]` on: the visitor (a stranger with a stable id,
    /// `"v17"`) the face was clustered into; null for matches, with visitors off, or if the
    /// visitors' database could not be written. Absent in events written before visitors existed.
    #[serde(default)]
    pub visitor: Option<String>,
    /// How many visits (tracks) of that visitor were counted, this one included.
    #[serde(default)]
    pub visitor_visits: Option<u64>,
    /// The cameras that visitor was seen on, most visited first.
    #[serde(default)]
    pub visitor_cameras: Option<Vec<String>>,
}
