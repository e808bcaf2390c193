//! The streaming pipeline: named threads joined by bounded channels, drained front to back.
//!
//! ```text
//! camera threads ──frames──▶ recognition workers ──sightings──▶ tracker ──events──▶ sinks
//! (one per camera,          (shared by all cameras:            (tracks, gallery     (publish: never
//!  queue of frame_queue)     detect, align, restore, embed)     snapshot, status)    blocks)
//! ```
//! - Camera → workers: one queue per camera (`pipeline.frame_queue`); live cameras drop their
//!   oldest frame when it is full, files wait (see [`camera`]). Workers take from every camera's
//!   queue (crossbeam `Select`), so several cameras share the models.
//! - Workers → tracker: bounded (two per worker), blocking: downstream stages never drop.
//! - Tracker → sinks: the `publish` callback must not block (the sinks have their own queues).
//!
//! Only the camera threads watch the stop flag. When a camera ends it sends `End` and drops its
//! sender; workers leave when every camera queue is closed; the tracker then closes every track,
//! publishes the last events and returns. With several workers a camera's frames can reach the
//! tracker slightly out of order; tracks use the latest stream time they have seen.

mod camera;
mod support;

pub use camera::CameraEnd;
pub use support::{read_status, GalleryWatch, StatusReport};

use crate::config::{CameraConfig, CropsConfig, TrackConfig};
use crate::event::TrackEvent;
use crate::frame::Frame;
use crate::recognize::Recognizer;
use crate::source::FrameSource;
use crate::stats::{peak_rss_kib, StageSnapshot, StageStats};
use crate::track::{quality, FrameStamp, Matcher, Sighting, Tracker};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Select, Sender};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a camera thread sends to the workers.
enum CameraMsg {
    Frame(Frame),
    /// The camera is done; `delivered` frames were queued in all (after drops).
    End {
        camera: Arc<str>,
        delivered: u64,
    },
}

/// What a worker sends to the tracker: one message per frame, even when recognition failed, so
/// the tracker can tell when a camera's last frame has been seen.
enum TrackMsg {
    Frame { camera: Arc<str>, stamp: FrameStamp, captured: Instant, sightings: Vec<Sighting> },
    End { camera: Arc<str>, delivered: u64 },
}

/// A camera and the source that reads it.
pub struct Camera {
    pub config: CameraConfig,
    pub source: Box<dyn FrameSource>,
}

/// Everything the pipeline needs besides the cameras and the models.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Recognition worker threads (at least 1).
    pub workers: usize,
    pub frame_queue: usize,
    pub track: TrackConfig,
    pub crops: CropsConfig,
    pub threshold: f32,
    pub top_k: usize,
    /// The gallery to match against, reloaded when it changes; absent at start is allowed
    /// (every face is unknown until someone is enrolled).
    pub gallery: PathBuf,
    pub status_interval: Duration,
    pub status_file: Option<PathBuf>,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub cameras: Vec<(String, CameraEnd)>,
    pub events: u64,
    pub stages: Vec<StageSnapshot>,
    pub wall: Duration,
    pub peak_rss_kib: Option<u64>,
}

impl RunSummary {
    /// Whether any camera failed for good (a finite source that could not be read).
    pub fn any_failed(&self) -> bool {
        self.cameras.iter().any(|(_, e)| *e == CameraEnd::Failed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot start thread {name}: {source}")]
    Spawn { name: String, source: std::io::Error },
    #[error("thread {0} panicked")]
    Panicked(String),
    #[error("no cameras to read")]
    NoCameras,
}

/// Runs the pipeline until every camera has ended (files) or `stop` is set (then drains).
/// `publish` receives every event on the tracker thread and must not block. `extra_stats`
/// (e.g. the sinks' counters) are included in status reports.
pub fn run(
    recognizer: Arc<Recognizer>,
    cameras: Vec<Camera>,
    opts: &PipelineOptions,
    mut publish: impl FnMut(TrackEvent) + Send,
    extra_stats: Vec<Arc<StageStats>>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, PipelineError> {
    if cameras.is_empty() {
        return Err(PipelineError::NoCameras);
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        let epoch = started;
        let recognize_stats = Arc::new(StageStats::new("recognize"));
        let track_stats = Arc::new(StageStats::new("events"));
        let mut camera_stats = Vec::new();
        let mut live = HashMap::new();
        let mut receivers = Vec::new();
        let mut camera_threads = Vec::new();
        for cam in cameras {
            let name: Arc<str> = cam.config.name.as_str().into();
            let stats = Arc::new(StageStats::new(format!("camera-{name}")));
            let (tx, rx) = bounded(opts.frame_queue.max(1));
            live.insert(name.clone(), cam.config.is_live());
            let thread = camera::CameraThread {
                config: cam.config,
                name: name.clone(),
                source: cam.source,
                tx,
                own_rx: rx.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                epoch,
            };
            receivers.push(rx);
            camera_stats.push(stats);
            camera_threads.push((name.to_string(), spawn(scope, &stop, &format!("cam-{name}"), move || thread.run())?));
        }

        let (track_tx, track_rx) = bounded(2 * opts.workers.max(1));
        let mut workers = Vec::new();
        for i in 0..opts.workers.max(1) {
            let (rx, tx, rec, stats) = (receivers.clone(), track_tx.clone(), &*recognizer, recognize_stats.clone());
            let keep_crops = opts.crops.enabled;
            workers
                .push(spawn(scope, &stop, &format!("recognize-{i}"), move || worker(rx, tx, rec, &stats, keep_crops))?);
        }
        drop((receivers, track_tx));

        let mut all_stats: Vec<Arc<StageStats>> = camera_stats.clone();
        all_stats.push(recognize_stats.clone());
        all_stats.push(track_stats.clone());
        all_stats.extend(extra_stats);
        let tracker_opts = opts.clone();
        let embedder = recognizer.embedder().id().clone();
        let tracker_stats = all_stats.clone();
        let tracker = spawn(scope, &stop, "tracker", move || {
            let mut t = TrackerThread {
                tracker: Tracker::new(tracker_opts.track.clone()),
                watch: GalleryWatch::new(tracker_opts.gallery.clone(), embedder),
                opts: tracker_opts,
                live,
                epoch,
                received: HashMap::new(),
                ending: HashMap::new(),
                stats: tracker_stats,
                events: track_stats,
                events_sent: 0,
            };
            t.run(track_rx, &mut publish);
            t.events_sent
        })?;

        let mut ends = Vec::new();
        for (name, handle) in camera_threads {
            let end = handle.join().map_err(|_| PipelineError::Panicked(format!("cam-{name}")))?;
            ends.push((name, end));
        }
        for (i, w) in workers.into_iter().enumerate() {
            w.join().map_err(|_| PipelineError::Panicked(format!("recognize-{i}")))?;
        }
        let events = tracker.join().map_err(|_| PipelineError::Panicked("tracker".to_owned()))?;
        Ok(RunSummary {
            cameras: ends,
            events,
            stages: all_stats.iter().map(|s| s.snapshot()).collect(),
            wall: started.elapsed(),
            peak_rss_kib: peak_rss_kib(),
        })
    })
}

/// Starts a named thread. If it cannot start, `stop` is set so the threads already running end
/// and the scope can join them (otherwise a camera thread would keep the scope open forever).
fn spawn<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    stop: &AtomicBool,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Result<std::thread::ScopedJoinHandle<'scope, T>, PipelineError> {
    std::thread::Builder::new().name(name.to_owned()).spawn_scoped(scope, f).map_err(|source| {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        PipelineError::Spawn { name: name.to_owned(), source }
    })
}

/// A recognition worker: takes frames from any camera's queue until all are closed.
fn worker(
    mut receivers: Vec<Receiver<CameraMsg>>,
    tx: Sender<TrackMsg>,
    rec: &Recognizer,
    stats: &StageStats,
    keep_crops: bool,
) {
    while !receivers.is_empty() {
        let mut sel = Select::new();
        for r in &receivers {
            sel.recv(r);
        }
        let op = sel.select();
        let i = op.index();
        let msg = match op.recv(&receivers[i]) {
            Ok(msg) => msg,
            Err(_) => {
                receivers.swap_remove(i);
                continue;
            }
        };
        let out = match msg {
            CameraMsg::End { camera, delivered } => TrackMsg::End { camera, delivered },
            CameraMsg::Frame(frame) => {
                stats.count_in();
                let sightings = match rec.observe_aligned(&frame.image) {
                    Ok(found) => {
                        stats.count_out();
                        found
                            .into_iter()
                            .map(|(observation, aligned)| Sighting {
                                quality: quality(&observation.face, observation.aligned_px, &aligned),
                                crop: keep_crops.then_some(aligned),
                                observation,
                            })
                            .collect()
                    }
                    Err(e) => {
                        // A bad frame is logged, counted and skipped; it never ends the thread.
                        stats.count_error();
                        log::warn!("camera {} frame {}: recognition failed: {e}", frame.camera, frame.seq);
                        Vec::new()
                    }
                };
                stats.record(frame.captured.elapsed());
                let stamp = FrameStamp { seq: frame.seq, ts: frame.ts, wall: frame.wall };
                TrackMsg::Frame { camera: frame.camera, stamp, captured: frame.captured, sightings }
            }
        };
        if tx.send(out).is_err() {
            return;
        }
    }
}

struct TrackerThread {
    opts: PipelineOptions,
    tracker: Tracker,
    watch: GalleryWatch,
    live: HashMap<Arc<str>, bool>,
    epoch: Instant,
    /// Frames received per camera, and the number a camera that ended said it delivered.
    received: HashMap<Arc<str>, u64>,
    ending: HashMap<Arc<str>, u64>,
    stats: Vec<Arc<StageStats>>,
    events: Arc<StageStats>,
    events_sent: u64,
}

impl TrackerThread {
    fn run(&mut self, rx: Receiver<TrackMsg>, publish: &mut impl FnMut(TrackEvent)) {
        let tick = Duration::from_millis(250);
        let mut last_status = Instant::now();
        let mut matcher = self.matcher();
        loop {
            let msg = rx.recv_timeout(tick);
            if let Some(snapshot) = self.watch.poll() {
                matcher.snapshot = Arc::new(snapshot);
            }
            match msg {
                Ok(TrackMsg::Frame { camera, stamp, captured, sightings }) => {
                    self.events.count_in();
                    let emitted = self.tracker.update(&camera, stamp, sightings, &matcher);
                    self.send(emitted, captured, publish);
                    *self.received.entry(camera.clone()).or_default() += 1;
                    self.maybe_end(&camera, &matcher, publish);
                }
                Ok(TrackMsg::End { camera, delivered }) => {
                    self.ending.insert(camera.clone(), delivered);
                    self.maybe_end(&camera, &matcher, publish);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Live cameras that stopped delivering frames still lose their tracks on time.
            let now = self.epoch.elapsed();
            let live: Vec<Arc<str>> = self.live.iter().filter(|(_, &l)| l).map(|(c, _)| c.clone()).collect();
            for camera in live {
                let emitted = self.tracker.expire(&camera, now, &matcher);
                self.send(emitted, Instant::now(), publish);
            }
            if last_status.elapsed() >= self.opts.status_interval {
                last_status = Instant::now();
                self.report();
            }
        }
        let emitted = self.tracker.close_all(&matcher);
        self.send(emitted, Instant::now(), publish);
        self.report();
    }

    fn matcher(&mut self) -> Matcher {
        Matcher {
            snapshot: Arc::new(self.watch.poll().unwrap_or_default()),
            threshold: self.opts.threshold,
            top_k: self.opts.top_k,
        }
    }

    /// Closes a camera's tracks once it has ended and its last frame has been tracked.
    fn maybe_end(&mut self, camera: &Arc<str>, matcher: &Matcher, publish: &mut impl FnMut(TrackEvent)) {
        let Some(&delivered) = self.ending.get(camera) else { return };
        if self.received.get(camera).copied().unwrap_or(0) >= delivered {
            self.ending.remove(camera);
            let emitted = self.tracker.end_camera(camera, matcher);
            self.send(emitted, Instant::now(), publish);
        }
    }

    fn send(&mut self, emitted: Vec<crate::track::Emitted>, trigger: Instant, publish: &mut impl FnMut(TrackEvent)) {
        for crate::track::Emitted { mut event, crop } in emitted {
            if let Some(crop) = crop.filter(|_| self.opts.crops.enabled) {
                match support::save_crop(&self.opts.crops, &event, &crop) {
                    Ok(path) => event.best_shot.crop = Some(path.display().to_string()),
                    Err(e) => log::warn!("cannot save the best-shot crop: {e}"),
                }
            }
            self.events.count_out();
            self.events.record(trigger.elapsed());
            self.events_sent += 1;
            publish(event);
        }
    }

    fn report(&self) {
        let report =
            StatusReport::new(&self.stats, self.tracker.open_tracks(), self.watch.identities(), self.epoch.elapsed());
        log::info!("{}", report.summary_line());
        if let Some(path) = &self.opts.status_file {
            if let Err(e) = report.write(path) {
                log::warn!("cannot write status file {}: {e}", path.display());
            }
        }
    }
}
