//! The camera thread: opens its [`FrameSource`], pulls frames and queues them for recognition
//! until the source ends or shutdown is asked for. A live source that errors, ends or stalls is
//! closed and reopened with exponential backoff (1 s doubling to 30 s, reset by a frame) and never
//! ends the process; a finite source that cannot be opened is retried three times, then given up.
//!
//! Queue policy: a live camera whose queue is full drops the OLDEST queued frame (fresh frames beat
//! complete history) and counts it; a finite source waits for room (back-pressure), so a video
//! file is processed completely however slow the pipeline is.

use super::health::Pulse;
use super::CameraMsg;
use crate::config::CameraConfig;
use crate::frame::Frame;
use crate::scene::TrackBoard;
use crate::source::{FrameSource, Pulled, SourceError};
use crate::stats::StageStats;
use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const PULL_TIMEOUT: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FINITE_OPEN_ATTEMPTS: u32 = 3;

/// How a camera thread ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraEnd {
    /// The source ran out of frames (video EOS, last image).
    Finished,
    /// Shutdown was requested.
    Stopped,
    /// A finite source failed for good (missing or unreadable file).
    Failed,
}

pub(super) struct CameraThread {
    pub config: CameraConfig,
    pub name: Arc<str>,
    pub source: Box<dyn FrameSource>,
    pub tx: Sender<CameraMsg>,
    /// A receiver of the camera's own queue, to drop its oldest frame when full.
    pub own_rx: Receiver<CameraMsg>,
    pub stats: Arc<StageStats>,
    pub stop: Arc<AtomicBool>,
    /// Stream time of live cameras is measured from here (shared by all cameras).
    pub epoch: Instant,
    /// Stamped on every pass of the loops (a pull waits at most 200 ms): a source stuck inside
    /// `pull` stops it, and the systemd watchdog with it.
    pub pulse: Pulse,
    /// The open tracks: a frame with neither motion nor an open track of this camera is not
    /// searched, so its pixels are never converted to RGB.
    pub board: TrackBoard,
}

impl CameraThread {
    pub fn run(mut self) -> CameraEnd {
        let live = self.config.is_live();
        let what = self.source.describe();
        let stall = Duration::from_secs_f32(self.config.stall_timeout_s);
        let interval = Duration::from_millis(self.config.frame_interval_ms);
        let mut backoff = Duration::from_secs(1);
        let mut seq = 0u64;
        let mut failed_opens = 0u32;
        // Every captured frame passes the motion stage, in capture order (before a live camera
        // may drop it): the background model sees the whole stream.
        // An image folder is a series of stills, not a video: each is searched whole.
        let mut motion_config = self.config.motion.clone();
        if matches!(self.config.spec(), Ok(crate::source::SourceSpec::Images { .. })) {
            motion_config.enabled = false;
        }
        let mut motion = crate::motion::Motion::new(motion_config);
        let end = 'session: loop {
            self.pulse.beat();
            if self.stopping() {
                break CameraEnd::Stopped;
            }
            if let Err(e) = self.source.open() {
                self.stats.count_error();
                failed_opens += 1;
                if !live && failed_opens >= FINITE_OPEN_ATTEMPTS {
                    log::error!(
                        "camera {}: giving up after {failed_opens} attempts: {}",
                        self.name,
                        crate::error_chain(&e)
                    );
                    break CameraEnd::Failed;
                }
                log::warn!("camera {}: {}; retrying in {:.0?}", self.name, crate::error_chain(&e), backoff);
                if !self.sleep(backoff) {
                    break CameraEnd::Stopped;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            log::info!("camera {}: reading {what}", self.name);
            let mut last_frame = Instant::now();
            let reason = loop {
                self.pulse.beat();
                if self.stopping() {
                    break Err(CameraEnd::Stopped);
                }
                match self.source.pull(PULL_TIMEOUT) {
                    Ok(Pulled::Frame { picture, pts }) => {
                        let captured = Instant::now();
                        last_frame = captured;
                        backoff = Duration::from_secs(1);
                        failed_opens = 0;
                        self.stats.count_in();
                        let ts = if live {
                            captured.duration_since(self.epoch)
                        } else {
                            pts.unwrap_or(interval * seq.min(u64::from(u32::MAX)) as u32)
                        };
                        let motion = motion.update(picture.luma(), ts.as_secs_f64());
                        let searched = motion.scan || !motion.regions.is_empty() || self.board.has_tracks(&self.name);
                        // Converted to RGB by the worker that searches it.
                        let picture = searched.then_some(picture);
                        let wall = SystemTime::now();
                        let frame = Frame { camera: self.name.clone(), seq, captured, wall, ts, picture, motion };
                        seq += 1;
                        if !self.enqueue(frame, live) {
                            break Err(CameraEnd::Stopped);
                        }
                    }
                    Ok(Pulled::Pending) => {
                        if live && last_frame.elapsed() > stall {
                            break Ok(format!("no frame for {:.0?}", last_frame.elapsed()));
                        }
                    }
                    Ok(Pulled::End) if live => break Ok("the stream ended".to_owned()),
                    // A file or folder with nothing readable in it is a failure, not a quiet success.
                    Ok(Pulled::End) if seq == 0 => {
                        log::error!("camera {}: no frame could be read from {what}", self.name);
                        break Err(CameraEnd::Failed);
                    }
                    Ok(Pulled::End) => break Err(CameraEnd::Finished),
                    Err(SourceError::BadFrame { message, .. }) => {
                        self.stats.count_error();
                        log::warn!("camera {}: skipping a bad frame: {message}", self.name);
                    }
                    Err(SourceError::Image(e)) => {
                        self.stats.count_error();
                        log::warn!("camera {}: skipping a bad image: {}", self.name, crate::error_chain(&e));
                    }
                    Err(e) if live => break Ok(e.to_string()),
                    Err(e) => {
                        self.stats.count_error();
                        log::error!("camera {}: {}", self.name, crate::error_chain(&e));
                        break Err(CameraEnd::Failed);
                    }
                }
            };
            self.source.close();
            match reason {
                Err(end) => break 'session end,
                Ok(why) => {
                    self.stats.count_error();
                    log::warn!("camera {}: {why}; reconnecting in {:.0?}", self.name, backoff);
                    if !self.sleep(backoff) {
                        break CameraEnd::Stopped;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        self.source.close();
        // Queued behind the last frame: the tracker closes this camera's tracks once every frame
        // before it has been tracked. If recognition already stopped there is nobody to tell.
        let _ = self.tx.send(CameraMsg::End { camera: self.name.clone() });
        log::info!("camera {}: {end:?} after {seq} frames", self.name);
        end
    }

    /// Queues a frame (or drops it, counted); false when recognition has gone (shutdown) or
    /// shutdown was asked while waiting.
    fn enqueue(&self, frame: Frame, live: bool) -> bool {
        if live {
            match self.tx.try_send(CameraMsg::Frame(frame)) {
                Ok(()) => {
                    self.stats.count_out();
                    true
                }
                Err(TrySendError::Full(msg)) => {
                    // Make room by dropping the oldest queued frame, then queue the fresh one.
                    if let Ok(CameraMsg::Frame(_)) = self.own_rx.try_recv() {
                        self.stats.count_dropped();
                    }
                    match self.tx.try_send(msg) {
                        Ok(()) => {
                            self.stats.count_out();
                            true
                        }
                        Err(TrySendError::Full(_)) => {
                            self.stats.count_dropped();
                            true
                        }
                        Err(TrySendError::Disconnected(_)) => false,
                    }
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        } else {
            let mut msg = CameraMsg::Frame(frame);
            loop {
                match self.tx.send_timeout(msg, PULL_TIMEOUT) {
                    Ok(()) => {
                        self.stats.count_out();
                        return true;
                    }
                    Err(SendTimeoutError::Timeout(m)) if !self.stopping() => {
                        // Waiting for a busy pipeline is progress too (back-pressure, not a stall).
                        self.pulse.beat();
                        msg = m;
                    }
                    Err(_) => return false,
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps in short slices; false when shutdown was asked meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.pulse.beat();
            if self.stopping() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
        }
        !self.stopping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    struct Silent;
    impl FrameSource for Silent {
        fn describe(&self) -> String {
            "silent".into()
        }
        fn open(&mut self) -> Result<(), SourceError> {
            Ok(())
        }
        fn pull(&mut self, _: Duration) -> Result<Pulled, SourceError> {
            Ok(Pulled::Pending)
        }
        fn close(&mut self) {}
    }

    fn camera(queue: usize) -> (CameraThread, Receiver<CameraMsg>) {
        let (tx, rx) = bounded(queue);
        let thread = CameraThread {
            config: CameraConfig::from_url("rtsp://cam/s"),
            name: "cam".into(),
            source: Box::new(Silent),
            tx,
            own_rx: rx.clone(),
            stats: Arc::new(StageStats::new("camera-cam")),
            stop: Arc::new(AtomicBool::new(false)),
            epoch: Instant::now(),
            pulse: Pulse::new(&Arc::new(super::super::Heartbeats::new(vec!["cam".into()])), 0),
            board: TrackBoard::default(),
        };
        (thread, rx)
    }

    fn frame(seq: u64) -> Frame {
        Frame {
            camera: "cam".into(),
            seq,
            captured: Instant::now(),
            wall: SystemTime::now(),
            ts: Duration::from_millis(seq * 40),
            picture: Some(crate::source::Picture::Rgb(image::RgbImage::new(2, 2))),
            motion: Default::default(),
        }
    }

    fn queued(rx: &Receiver<CameraMsg>) -> Vec<u64> {
        rx.try_iter()
            .map(|m| match m {
                CameraMsg::Frame(f) => f.seq,
                CameraMsg::End { .. } => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn a_live_camera_drops_its_oldest_frames_and_keeps_the_newest() {
        let (cam, rx) = camera(2);
        for seq in 0..10 {
            assert!(cam.enqueue(frame(seq), true));
        }
        assert_eq!(queued(&rx), [8, 9], "the freshest frames survive, in order");
        let s = cam.stats.snapshot();
        assert_eq!((s.output, s.dropped), (10, 8));
        // Taking one frame makes room: the next one is queued without a drop.
        assert!(cam.enqueue(frame(10), true));
        assert!(cam.enqueue(frame(11), true));
        assert_eq!(queued(&rx), [10, 11]);
        assert_eq!(cam.stats.snapshot().dropped, 8);
    }

    #[test]
    fn a_file_waits_for_room_and_drops_nothing() {
        let (cam, rx) = camera(2);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 10 {
                if let Ok(CameraMsg::Frame(f)) = rx.recv_timeout(Duration::from_secs(30)) {
                    got.push(f.seq);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            got
        });
        for seq in 0..10 {
            assert!(cam.enqueue(frame(seq), false));
        }
        assert_eq!(reader.join().unwrap(), (0..10).collect::<Vec<_>>());
        assert_eq!(cam.stats.snapshot().dropped, 0);
    }
}
