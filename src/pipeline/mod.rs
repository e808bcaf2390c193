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

//!
//! Files: this one wires the stages; [`camera`] is a camera's thread, `worker` a recognition
//! worker, `tracker` the tracker thread (with systemd supervision and reloads), `reorder` the
//! ticket-order buffer, `health` the heartbeats the watchdog reads, `support` the gallery watch,
//! status file and crops.

mod camera;
mod health;
mod reorder;
mod support;
mod tracker;
mod worker;

pub use camera::CameraEnd;
pub use health::Heartbeats;
pub use support::{
    check_writable, is_crop_name, prepare_crops_dir, private_file, read_status, GalleryWatch, StatusReport,
    CROPS_MARKER,
};
pub use tracker::{ReloadFn, Reloaded, Supervision};

use crate::config::{CameraConfig, CropsConfig, TrackConfig};
use crate::event::TrackEvent;
use crate::frame::Frame;
use crate::recognize::Recognizer;
use crate::source::FrameSource;
use crate::stats::{peak_rss_kib, StageSnapshot, StageStats};
use crate::track::{FrameStamp, Sighting, Tracker};
use crossbeam_channel::{bounded, Receiver, TryRecvError};
use health::Pulse;
use reorder::Reorder;
use std::collections::HashMap;
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
    Frame { stamp: FrameStamp, captured: Instant, sightings: Vec<Sighting>, search: crate::scene::SearchPlan },
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
    /// `embed.small_face_threshold`: for tracks whose every best shot the small-face embedder made.
    pub small_face_threshold: f32,
    pub top_k: usize,
    /// The gallery to match against, reloaded when it changes; absent at start is allowed
    /// (every face is unknown until someone is enrolled).
    pub gallery: PathBuf,
    pub status_interval: Duration,
    pub status_file: Option<PathBuf>,
    /// Where and how streaming frames are searched, and which faces are embedded.
    pub scene: crate::scene::SceneConfig,
    /// Write every frame's detections (one JSON line a frame) here: for benchmarks against a
    /// ground truth.
    pub detections: Option<PathBuf>,
    /// Unknown faces clustered into visitors (`[visitors]`), in the gallery database.
    pub visitors: crate::visitors::VisitorsConfig,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub cameras: Vec<(String, CameraEnd)>,
    pub events: u64,
    pub stages: Vec<StageSnapshot>,
    pub wall: Duration,
    /// CPU time (all threads) the run used, from its start to its end (model loading excluded).
    pub cpu: Duration,
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
    #[error("cannot write the detection trace {path}")]
    Trace { path: PathBuf, source: std::io::Error },
}

/// Runs the pipeline until every camera has ended (files) or `stop` is set (then drains).
/// `publish` receives every event on the tracker thread and must not block. `extra_stats`
/// (e.g. the sinks' counters) are included in status reports. `supervision` tells systemd what
/// happens and carries SIGHUP's reloads ([`Supervision::none`] for neither).
pub fn run(
    recognizer: Arc<Recognizer>,
    cameras: Vec<Camera>,
    opts: &PipelineOptions,
    mut publish: impl FnMut(TrackEvent) + Send,
    extra_stats: Vec<Arc<StageStats>>,
    stop: Arc<AtomicBool>,
    supervision: Supervision,
) -> Result<RunSummary, PipelineError> {
    if cameras.is_empty() {
        return Err(PipelineError::NoCameras);
    }
    let started = Instant::now();
    let cpu_at_start = crate::stats::cpu_time();
    let workers = opts.workers.max(1);
    let names: Vec<String> = cameras
        .iter()
        .map(|c| format!("cam-{}", c.config.name))
        .chain((0..workers).map(|i| format!("recognize-{i}")))
        .collect();
    let heartbeats = Arc::new(Heartbeats::new(names));
    std::thread::scope(|scope| {
        let epoch = started;
        let recognize_stats = Arc::new(StageStats::new("recognize"));
        // in: faces found; out: faces restored and embedded.
        let embed_stats = Arc::new(StageStats::new("embed"));
        let board = crate::scene::TrackBoard::default();
        let track_stats = Arc::new(StageStats::new("events"));
        let visitor_stats = Arc::new(StageStats::new("visitors"));
        let mut camera_stats = Vec::new();
        let mut named_camera_stats = Vec::new();
        let mut live = HashMap::new();
        let mut receivers = Vec::new();
        let mut camera_threads = Vec::new();
        for (slot, cam) in cameras.into_iter().enumerate() {
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
                pulse: Pulse::new(&heartbeats, slot),
                board: board.clone(),
            };
            receivers.push(CameraQueue { rx, taken: Arc::default() });
            named_camera_stats.push((name.to_string(), stats.clone()));
            camera_stats.push(stats);
            camera_threads.push((name.to_string(), spawn(scope, &stop, &format!("cam-{name}"), move || thread.run())?));
        }

        let (track_tx, track_rx) = bounded(2 * workers);
        let n_cameras = receivers.len();
        let mut worker_threads = Vec::new();
        for i in 0..workers {
            let (rx, tx, pulse) = (receivers.clone(), track_tx.clone(), Pulse::new(&heartbeats, n_cameras + i));
            let (stats, embeds, board) = (recognize_stats.clone(), embed_stats.clone(), board.clone());
            let (rec, keep_crops, scene) = (&*recognizer, opts.crops.enabled, &opts.scene);
            worker_threads.push(spawn(scope, &stop, &format!("recognize-{i}"), move || {
                let cx =
                    worker::WorkerContext { rec, stats: &stats, embeds: &embeds, keep_crops, scene, board: &board };
                worker::worker(rx, tx, &cx, pulse)
            })?);
        }
        drop((receivers, track_tx));

        let mut all_stats: Vec<Arc<StageStats>> = camera_stats.clone();
        all_stats.push(recognize_stats.clone());
        all_stats.push(embed_stats.clone());
        all_stats.push(track_stats.clone());
        if opts.visitors.enabled {
            all_stats.push(visitor_stats.clone());
        }
        all_stats.extend(extra_stats);
        supervision.live.set_stages(all_stats.clone());
        let tracker_opts = opts.clone();
        let embedder = recognizer.embedder().id().clone();
        let tracker_stats = all_stats.clone();
        let (beats, tracker_stop, tracker_board) = (heartbeats.clone(), stop.clone(), board.clone());
        let trace = match &opts.detections {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::File::create(path).map_err(|source| PipelineError::Trace { path: path.clone(), source })?,
            )),
            None => None,
        };
        let tracker = spawn(scope, &stop, "tracker", move || {
            let mut t = tracker::TrackerThread {
                tracker: Tracker::new(tracker_opts.track.clone()),
                visitors: crate::visitors::VisitorBook::new(
                    tracker_opts.visitors.clone(),
                    tracker_opts.gallery.clone(),
                    embedder.clone(),
                    visitor_stats,
                ),
                watch: GalleryWatch::new(tracker_opts.gallery.clone(), embedder),
                opts: tracker_opts,
                live,
                epoch,
                order: Reorder::default(),
                stats: tracker_stats,
                cameras: named_camera_stats,
                events: track_stats,
                events_sent: 0,
                heartbeats: beats,
                supervision,
                stop: tracker_stop,
                board: tracker_board,
                trace,
            };
            t.run(track_rx, &mut publish);
            t.events_sent
        })?;

        let mut ends = Vec::new();
        for (name, handle) in camera_threads {
            let end = handle.join().map_err(|_| PipelineError::Panicked(format!("cam-{name}")))?;
            ends.push((name, end));
        }
        for (i, w) in worker_threads.into_iter().enumerate() {
            w.join().map_err(|_| PipelineError::Panicked(format!("recognize-{i}")))?;
        }
        let events = tracker.join().map_err(|_| PipelineError::Panicked("tracker".to_owned()))?;
        Ok(RunSummary {
            cameras: ends,
            events,
            stages: all_stats.iter().map(|s| s.snapshot()).collect(),
            wall: started.elapsed(),
            cpu: crate::stats::cpu_time().saturating_sub(cpu_at_start),
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

#[cfg(test)]
mod tests {
    use super::*;

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
