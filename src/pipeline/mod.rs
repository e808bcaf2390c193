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
//! publishes the last events and returns.
//!
//! Order: with several workers a camera's frames finish out of order, and a tracker that saw
//! frame 3 before frame 2 would close a track too early and open a second one for the same
//! visit. So a worker takes a per-camera ticket in the same critical section as the dequeue
//! ([`CameraQueue::take`]), and the tracker releases each camera's messages in ticket order,
//! holding early arrivals (at most a few per worker) until the gap is filled. Frames a live camera
//! drops from its queue never get a ticket, so they leave no gap.

mod camera;
mod support;

pub use camera::CameraEnd;
pub use support::{
    check_writable, prepare_crops_dir, private_file, read_status, GalleryWatch, StatusReport, CROPS_MARKER,
};

use crate::config::{CameraConfig, CropsConfig, TrackConfig};
use crate::event::TrackEvent;
use crate::frame::Frame;
use crate::recognize::Recognizer;
use crate::source::FrameSource;
use crate::stats::{peak_rss_kib, StageSnapshot, StageStats};
use crate::track::{quality, FrameStamp, Matcher, Sighting, Tracker};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Select, Sender, TryRecvError};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a camera thread sends to the workers.
enum CameraMsg {
    Frame(Frame),
    /// The camera is done; nothing follows.
    End {
        camera: Arc<str>,
    },
}

/// A camera's queue as the workers see it: the receiver, and the number of messages workers have
/// taken from it so far (the next ticket).
#[derive(Clone)]
struct CameraQueue {
    rx: Receiver<CameraMsg>,
    taken: Arc<Mutex<u64>>,
}

impl CameraQueue {
    /// Takes the next message with its ticket: tickets follow queue order because the dequeue and
    /// the count happen under one lock. `Err(Empty)` when another worker was faster.
    fn take(&self) -> Result<(u64, CameraMsg), TryRecvError> {
        let mut taken = self.taken.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let msg = self.rx.try_recv()?;
        let ticket = *taken;
        *taken += 1;
        Ok((ticket, msg))
    }
}

/// What a worker sends to the tracker: one message per message taken, even when recognition
/// failed, so the tracker's per-camera ticket sequence has no holes.
struct TrackMsg {
    camera: Arc<str>,
    ticket: u64,
    body: TrackBody,
}

enum TrackBody {
    Frame { stamp: FrameStamp, captured: Instant, sightings: Vec<Sighting> },
    End,
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
    #[error("cannot start thread {name}")]
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
            receivers.push(CameraQueue { rx, taken: Arc::default() });
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
                order: Reorder::default(),
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
fn worker(mut queues: Vec<CameraQueue>, tx: Sender<TrackMsg>, rec: &Recognizer, stats: &StageStats, keep_crops: bool) {
    while !queues.is_empty() {
        let mut sel = Select::new();
        for q in &queues {
            sel.recv(&q.rx);
        }
        let i = sel.ready();
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

struct TrackerThread {
    opts: PipelineOptions,
    tracker: Tracker,
    watch: GalleryWatch,
    live: HashMap<Arc<str>, bool>,
    epoch: Instant,
    order: Reorder<TrackBody>,
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
                Ok(TrackMsg { camera, ticket, body }) => {
                    for body in self.order.push(&camera, ticket, body) {
                        self.track(&camera, body, &matcher, publish);
                    }
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
        // Only reachable with a gap if a worker died: track what is left in order regardless.
        for (camera, body) in self.order.drain() {
            self.track(&camera, body, &matcher, publish);
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

    fn track(&mut self, camera: &Arc<str>, body: TrackBody, matcher: &Matcher, publish: &mut impl FnMut(TrackEvent)) {
        match body {
            TrackBody::Frame { stamp, captured, sightings } => {
                self.events.count_in();
                let emitted = self.tracker.update(camera, stamp, sightings, matcher);
                self.send(emitted, captured, publish);
            }
            TrackBody::End => {
                let emitted = self.tracker.end_camera(camera, matcher);
                self.send(emitted, Instant::now(), publish);
            }
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

/// Puts each camera's messages back in ticket order: a message is released once every earlier
/// ticket of its camera has been.
struct Reorder<T> {
    next: HashMap<Arc<str>, u64>,
    early: BTreeMap<(Arc<str>, u64), T>,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Self { next: HashMap::new(), early: BTreeMap::new() }
    }
}

impl<T> Reorder<T> {
    /// Accepts one message and returns those of its camera now in order (possibly none).
    fn push(&mut self, camera: &Arc<str>, ticket: u64, item: T) -> Vec<T> {
        self.early.insert((camera.clone(), ticket), item);
        let next = self.next.entry(camera.clone()).or_default();
        let mut ready = Vec::new();
        while let Some(item) = self.early.remove(&(camera.clone(), *next)) {
            ready.push(item);
            *next += 1;
        }
        ready
    }

    /// Everything still held, in ticket order per camera (for the end of a run, when no earlier
    /// ticket can arrive any more).
    fn drain(&mut self) -> impl Iterator<Item = (Arc<str>, T)> {
        std::mem::take(&mut self.early).into_iter().map(|((camera, _), item)| (camera, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorder_releases_each_camera_in_ticket_order() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut r = Reorder::default();
        assert!(r.push(&a, 1, "a1").is_empty(), "ticket 0 of camera a has not arrived");
        assert_eq!(r.push(&b, 0, "b0"), ["b0"], "cameras do not wait for each other");
        assert!(r.push(&a, 2, "a2").is_empty());
        assert_eq!(r.push(&a, 0, "a0"), ["a0", "a1", "a2"]);
        assert_eq!(r.push(&a, 3, "a3"), ["a3"]);
        assert!(r.push(&b, 2, "b2").is_empty());
        assert_eq!(r.drain().collect::<Vec<_>>(), [(b.clone(), "b2")]);
    }

    #[test]
    fn tickets_follow_queue_order_across_workers() {
        const N: u64 = 20_000;
        let (tx, rx) = bounded(N as usize);
        for k in 0..N {
            tx.send(CameraMsg::End { camera: k.to_string().into() }).unwrap();
        }
        let queue = CameraQueue { rx, taken: Arc::default() };
        let mut taken: Vec<(u64, u64)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let q = queue.clone();
                    s.spawn(move || {
                        let mut got = Vec::new();
                        while let Ok((ticket, CameraMsg::End { camera })) = q.take() {
                            got.push((ticket, camera.parse().unwrap()));
                        }
                        got
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        taken.sort_unstable();
        assert_eq!(taken.len() as u64, N);
        assert!(taken.iter().all(|(ticket, sent)| ticket == sent), "ticket k is the k-th message queued");
    }
}
