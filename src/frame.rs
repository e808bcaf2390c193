//! [`Frame`]: one decoded picture from a camera, owned (a borrowed device buffer is copied once,
//! in the source) and stamped where it was captured, so every later stage can measure latency.

use crate::source::Picture;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// One frame of one camera.
#[derive(Debug)]
pub struct Frame {
    /// The camera's configured name.
    pub camera: Arc<str>,
    /// Frame number within this camera's run, from 0; gaps mean frames were dropped.
    pub seq: u64,
    /// When the source handed the frame over (monotonic): latency is measured from here.
    pub captured: Instant,
    /// Wall-clock time of capture, for events.
    pub wall: SystemTime,
    /// Stream time: the presentation time of a video file (so tracks follow the video, however
    /// fast it is processed), the nominal frame interval times `seq` for an image folder, and the
    /// time since the camera was first opened for a live source.
    pub ts: Duration,
    /// The pixels of a frame a worker will search: still in the decoder's YUV for GStreamer
    /// sources (the worker converts them to RGB, so a queued 1080p frame holds 3.1 MB, not
    /// 6.2), RGB for the others. `None` for a frame nobody searches (no motion, no open track,
    /// no full scan due).
    pub picture: Option<Picture>,
    /// Where the camera's motion stage saw movement, and whether the whole frame is to be scanned.
    pub motion: crate::motion::MotionOutcome,
}

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
