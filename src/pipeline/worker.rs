//! A recognition worker: takes frames from any camera's queue (crossbeam `Select`) until every
//! queue is closed, runs detect -> align -> restore -> embed on each, and hands the sightings to
//! the tracker with the frame's ticket. A bad frame (or a panic inside recognition) is logged,
//! counted and sent on as an empty frame, so the tracker's ticket sequence never has a hole.

use super::health::Pulse;
use super::{CameraMsg, CameraQueue, TrackBody, TrackMsg};
use crate::recognize::Recognizer;
use crate::stats::StageStats;
use crate::track::{quality, FrameStamp, Sighting};
use crossbeam_channel::{Select, Sender, TryRecvError};
use std::time::Duration;

/// How long a worker waits idle before stamping its heartbeat again.
const IDLE_BEAT: Duration = Duration::from_millis(500);

pub(super) fn worker(
    mut queues: Vec<CameraQueue>,
    tx: Sender<TrackMsg>,
    rec: &Recognizer,
    stats: &StageStats,
    keep_crops: bool,
    pulse: Pulse,
) {
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
            CameraMsg::Frame(frame) => {
                stats.count_in();
                // A panic inside recognition must not kill the worker: its ticket would never
                // reach the tracker, which would then hold this camera's frames forever.
                let observed =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rec.observe_aligned(&frame.image)));
                let outcome = match observed {
                    Ok(Ok(found)) => {
                        stats.count_out();
                        Ok(found)
                    }
                    Ok(Err(e)) => Err(crate::error_chain(&e)),
                    Err(_) => Err("recognition panicked".to_owned()),
                };
                let sightings = match outcome {
                    Ok(found) => found
                        .into_iter()
                        .map(|(observation, aligned)| Sighting {
                            quality: quality(&observation.face, observation.aligned_px, &aligned),
                            crop: keep_crops.then_some(aligned),
                            observation,
                        })
                        .collect(),
                    Err(e) => {
                        // A bad frame is logged, counted and skipped; it never ends the thread.
                        stats.count_error();
                        log::warn!("camera {} frame {}: recognition failed: {e}", frame.camera, frame.seq);
                        Vec::new()
                    }
                };
                stats.record(frame.captured.elapsed());
                let stamp = FrameStamp { seq: frame.seq, ts: frame.ts, wall: frame.wall };
                TrackMsg {
                    camera: frame.camera,
                    ticket,
                    body: TrackBody::Frame { stamp, captured: frame.captured, sightings },
                }
            }
        };
        if tx.send(out).is_err() {
            return;
        }
    }
}
