//! A recognition worker: takes frames from any camera's queue (crossbeam `Select`) until every
//! queue is closed and, for each, searches where [`crate::scene`] says (live tracks' windows,
//! new motion, full scans), aligns every face found at its native size, and restores and embeds
//! only the faces worth it (a new track, a better shot, a periodic check). The sightings go to
//! the tracker with the frame's ticket. A bad frame (or a panic inside recognition) is logged,
//! counted and sent on as an empty frame, so the tracker's ticket sequence never has a hole.

use super::health::Pulse;
use super::{CameraMsg, CameraQueue, TrackBody, TrackMsg};
use crate::frame::Frame;
use crate::recognize::{RecognizeError, Recognizer};
use crate::scene::{self, SceneConfig, SearchPlan, TrackBoard, TrackHint};
use crate::stats::StageStats;
use crate::track::{quality, FrameStamp, Sighting};
use crossbeam_channel::{Select, Sender, TryRecvError};
use std::time::Duration;

/// How long a worker waits idle before stamping its heartbeat again.
const IDLE_BEAT: Duration = Duration::from_millis(500);

/// What every worker shares.
pub(super) struct WorkerContext<'a> {
    pub rec: &'a Recognizer,
    pub stats: &'a StageStats,
    /// Faces found (in) and embedded (out).
    pub embeds: &'a StageStats,
    pub keep_crops: bool,
    pub scene: &'a SceneConfig,
    pub board: &'a TrackBoard,
}

pub(super) fn worker(mut queues: Vec<CameraQueue>, tx: Sender<TrackMsg>, cx: &WorkerContext<'_>, pulse: Pulse) {
    while !queues.is_empty() {
        pulse.beat();
        let mut sel = Select::new();
        for q in &queues {
            sel.recv(&q.rx);
        }
        let Ok(i) = sel.ready_timeout(IDLE_BEAT) else { continue };
        let (ticket, msg) = match queues[i].take() {
            Ok(taken) => taken,
            Err(TryRecvError::Empty) => continue,
            Err(TryRecvError::Disconnected) => {
                queues.swap_remove(i);
                continue;
            }
        };
        let out = match msg {
            CameraMsg::End { camera } => TrackMsg { camera, ticket, body: TrackBody::End },
            CameraMsg::Frame(mut frame) => {
                cx.stats.count_in();
                // A panic inside recognition must not kill the worker: its ticket would never
                // reach the tracker, which would then hold this camera's frames forever.
                let looked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| look(cx, &mut frame)));
                let outcome = match looked {
                    Ok(Ok(found)) => {
                        cx.stats.count_out();
                        Ok(found)
                    }
                    Ok(Err(e)) => Err(crate::error_chain(&e)),
                    Err(_) => Err("recognition panicked".to_owned()),
                };
                let (sightings, search) = outcome.unwrap_or_else(|e| {
                    // A bad frame is logged, counted and skipped; it never ends the thread.
                    cx.stats.count_error();
                    log::warn!("camera {} frame {}: recognition failed: {e}", frame.camera, frame.seq);
                    (Vec::new(), SearchPlan::default())
                });
                cx.stats.record(frame.captured.elapsed());
                let stamp = FrameStamp { seq: frame.seq, ts: frame.ts, wall: frame.wall };
                TrackMsg {
                    camera: frame.camera,
                    ticket,
                    body: TrackBody::Frame { stamp, captured: frame.captured, sightings, search },
                }
            }
        };
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// Searches one frame and turns its faces into sightings (embedded or not).
fn look(cx: &WorkerContext<'_>, frame: &mut Frame) -> Result<(Vec<Sighting>, SearchPlan), RecognizeError> {
    let Some(picture) = frame.picture.take() else {
        // The camera saw no motion and no open track: nothing to search (and no pixels).
        return Ok((Vec::new(), SearchPlan::default()));
    };
    let image = picture.into_rgb().map_err(RecognizeError::BadFrame)?;
    let frame = &*frame;
    let hints = cx.board.hints(&frame.camera);
    let windows = scene::plan(image.dimensions(), frame.seq, frame.ts, &frame.motion, &hints, cx.scene);
    if windows.is_empty() {
        return Ok((Vec::new(), SearchPlan::default()));
    }
    let (faces, mut search) = scene::detect(cx.rec.region_detector(), &image, &windows)?;
    search.full_scan = frame.motion.scan;
    let mut sightings = Vec::with_capacity(faces.len());
    for face in faces {
        cx.embeds.count_in();
        let prepared = match cx.rec.prepare(&image, &face) {
            Ok(p) => p,
            Err(RecognizeError::Degenerate) => {
                log::debug!("skipping a face with degenerate landmarks at {:?}", face.rect);
                continue;
            }
            Err(e) => return Err(e),
        };
        let q = quality(&face, prepared.aligned_px, &prepared.native);
        let track = best_hint(&hints, &face.rect, frame.ts);
        if !worth_embedding(track, q, frame.seq, cx.scene) {
            sightings.push(Sighting {
                face,
                aligned_px: prepared.aligned_px,
                restorer: None,
                embedder: crate::embed::EmbedderKind::Sface,
                embedding: None,
                quality: q,
                crop: None,
            });
            continue;
        }
        let (observation, aligned) = cx.rec.finish(&image, &prepared)?;
        cx.embeds.count_out();
        sightings.push(Sighting::embedded(observation, q, cx.keep_crops.then_some(aligned)));
    }
    Ok((sightings, search))
}

/// The open track a face most likely belongs to: the best overlap with a predicted box.
fn best_hint<'h>(hints: &'h [TrackHint], rect: &crate::geometry::Rect, ts: Duration) -> Option<&'h TrackHint> {
    hints
        .iter()
        .map(|h| (h.predicted(ts).iou(rect), h))
        .filter(|(iou, _)| *iou >= 0.1)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, h)| h)
}

/// Whether a face of quality `q` in frame `seq` should be restored and embedded.
fn worth_embedding(track: Option<&TrackHint>, q: f32, seq: u64, c: &SceneConfig) -> bool {
    let Some(t) = track else { return true }; // a new face: who is it?
    if t.embeds >= c.max_embeds_per_track {
        return false;
    }
    t.shots < t.capacity
        || q > t.worst_quality * (1.0 + c.min_gain) + 1e-3
        || seq.saturating_sub(t.last_embedded) >= c.recheck_frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Rect;

    fn hint(shots: usize, worst: f32, embeds: u32, last: u64) -> TrackHint {
        TrackHint {
            id: 1,
            rect: Rect { x: 0.0, y: 0.0, w: 20.0, h: 24.0 },
            ts: Duration::ZERO,
            velocity: (0.0, 0.0),
            shots,
            capacity: 5,
            worst_quality: worst,
            embeds,
            last_embedded: last,
        }
    }

    #[test]
    fn a_face_is_embedded_only_when_it_is_worth_it() {
        let c = SceneConfig::default();
        assert!(worth_embedding(None, 0.1, 10, &c), "a new face");
        assert!(worth_embedding(Some(&hint(2, 0.5, 2, 9)), 0.1, 10, &c), "the track has room");
        assert!(!worth_embedding(Some(&hint(5, 0.5, 5, 9)), 0.4, 10, &c), "no better than the worst kept shot");
        assert!(worth_embedding(Some(&hint(5, 0.5, 5, 9)), 0.6, 10, &c), "a better shot");
        assert!(!worth_embedding(Some(&hint(5, 0.5, 5, 9)), 0.55, 10, &c), "within the quality's jitter");
        assert!(worth_embedding(Some(&hint(5, 0.5, 5, 9)), 0.4, 9 + c.recheck_frames, &c), "a periodic check");
        assert!(!worth_embedding(Some(&hint(5, 0.5, c.max_embeds_per_track, 9)), 0.9, 10, &c), "over budget");
    }
}
