//! The tracker thread: puts each camera's recognised frames back in order, feeds them to the
//! [`Tracker`], publishes the events it emits (saving best-shot crops first when enabled), keeps
//! the gallery snapshot current, writes the status report, and, about four times a second, shows
//! the pipeline's health to systemd ([`Supervision`]) and applies a requested reload.

use super::health::Heartbeats;
use super::reorder::Reorder;
use super::support::{self, GalleryWatch, StatusReport};
use super::{PipelineOptions, TrackBody, TrackMsg};
use crate::config::{CropsConfig, TrackConfig};
use crate::event::TrackEvent;
use crate::service::{Health, Notifier};
use crate::stats::StageStats;
use crate::track::{Emitted, Matcher, Tracker};
use crate::visitors::Verdict;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a reload may change while the pipeline runs: the matching threshold, the tracking
/// settings (new tracks use them; open tracks keep their shots) and the crops. Everything else
/// needs a restart; `notes` says what was seen and left for one.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub threshold: f32,
    pub small_face_threshold: f32,
    pub top_k: usize,
    pub track: TrackConfig,
    pub crops: CropsConfig,
    pub visitors: crate::visitors::VisitorsConfig,
    pub notes: Vec<String>,
}

/// Re-reads and checks the configuration; an `Err` (what is wrong) keeps the old one running.
pub type ReloadFn = Box<dyn FnMut() -> Result<Reloaded, String> + Send>;

/// How the outside world watches and steers a running pipeline: systemd's notify protocol, the
/// stop flag (to say STOPPING) and SIGHUP's reload request.
pub struct Supervision {
    pub notifier: Notifier,
    /// A camera or worker whose heartbeat is older than this is stalled.
    pub stall_after: Duration,
    /// Set (by SIGHUP) to ask for a reload at the next tick.
    pub reload_requested: Arc<AtomicBool>,
    pub reload: Option<ReloadFn>,
    /// Where readiness and the stage counters are shown to other observers (the HTTP server).
    pub live: Arc<crate::stats::LiveState>,
}

impl Supervision {
    /// No systemd, no reloads: what tests and one-off runs use.
    pub fn none() -> Self {
        Self {
            notifier: Notifier::from_env(&Default::default()),
            stall_after: Duration::from_secs(60),
            reload_requested: Arc::default(),
            reload: None,
            live: Arc::default(),
        }
    }
}

pub(super) struct TrackerThread {
    pub opts: PipelineOptions,
    pub tracker: Tracker,
    /// Unknown tracks clustered into visitors (and ignored visitors' events suppressed).
    pub visitors: crate::visitors::VisitorBook,
    pub watch: GalleryWatch,
    pub live: HashMap<Arc<str>, bool>,
    pub epoch: Instant,
    pub order: Reorder<TrackBody>,
    pub stats: Vec<Arc<StageStats>>,
    pub cameras: Vec<(String, Arc<StageStats>)>,
    pub events: Arc<StageStats>,
    pub events_sent: u64,
    pub heartbeats: Arc<Heartbeats>,
    pub supervision: Supervision,
    pub stop: Arc<AtomicBool>,
    /// Where the workers read each camera's open tracks.
    pub board: crate::scene::TrackBoard,
    /// One JSON line per tracked frame (`run --detections`).
    pub trace: Option<std::io::BufWriter<std::fs::File>>,
}

impl TrackerThread {
    pub fn run(&mut self, rx: Receiver<TrackMsg>, publish: &mut impl FnMut(TrackEvent)) {
        let tick = Duration::from_millis(250);
        let mut last_status = Instant::now();
        let mut last_release = Instant::now();
        let mut matcher = self.matcher();
        let mut stopping = false;
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
                if !emitted.is_empty() {
                    self.board.publish(&camera, self.tracker.hints(&camera));
                }
                self.send(emitted, Instant::now(), publish);
            }
            self.visitors.tick();
            if last_status.elapsed() >= self.opts.status_interval {
                last_status = Instant::now();
                self.report();
            }
            if last_release.elapsed() >= crate::heap::RELEASE_EVERY {
                last_release = Instant::now();
                crate::heap::release_free_pages();
            }
            if !stopping && self.stop.load(Ordering::Relaxed) {
                stopping = true;
                self.supervision.notifier.stopping();
            }
            if self.supervision.reload_requested.swap(false, Ordering::Relaxed) {
                self.reload(&mut matcher);
            }
            self.supervise();
        }
        // Only reachable with a gap if a worker died: track what is left in order regardless.
        for (camera, body) in self.order.drain() {
            self.track(&camera, body, &matcher, publish);
        }
        let emitted = self.tracker.close_all(&matcher);
        self.send(emitted, Instant::now(), publish);
        self.report();
        if let Some(trace) = self.trace.as_mut() {
            if let Err(e) = std::io::Write::flush(trace) {
                log::warn!("detection trace: {e}");
            }
        }
    }

    fn matcher(&mut self) -> Matcher {
        Matcher {
            snapshot: Arc::new(self.watch.poll().unwrap_or_default()),
            threshold: self.opts.threshold,
            small_face_threshold: self.opts.small_face_threshold,
            top_k: self.opts.top_k,
        }
    }

    /// Shows systemd what the pipeline is doing (readiness, stalls, counters), and the other
    /// observers whether it is ready. Without systemd, only until ready.
    fn supervise(&mut self) {
        let systemd = self.supervision.notifier.enabled();
        if !systemd && self.supervision.live.is_ready() {
            return;
        }
        let health = Health {
            cameras: self.cameras.iter().map(|(name, s)| (name.clone(), s.snapshot().input)).collect(),
            stalled: self.heartbeats.stalled(self.supervision.stall_after),
            summary: if systemd { self.status_report().summary_line() } else { String::new() },
        };
        self.supervision.notifier.tick(&health);
        if self.supervision.notifier.is_ready() {
            self.supervision.live.set_ready(true);
        }
    }

    /// Applies a SIGHUP reload: what the new configuration may change live is changed; a bad
    /// configuration is refused and the old one keeps running.
    fn reload(&mut self, matcher: &mut Matcher) {
        let Some(reload) = self.supervision.reload.as_mut() else {
            log::warn!("SIGHUP: this run has no configuration file to reload");
            return;
        };
        self.supervision.notifier.reloading();
        let outcome = match reload() {
            Ok(r) => {
                matcher.threshold = r.threshold;
                matcher.small_face_threshold = r.small_face_threshold;
                self.opts.small_face_threshold = r.small_face_threshold;
                matcher.top_k = r.top_k;
                self.opts.threshold = r.threshold;
                self.opts.top_k = r.top_k;
                self.tracker.reconfigure(r.track.clone());
                self.opts.track = r.track;
                self.opts.crops = r.crops;
                self.visitors.reconfigure(r.visitors.clone());
                self.opts.visitors = r.visitors;
                self.watch.force();
                if let Some(snapshot) = self.watch.poll() {
                    matcher.snapshot = Arc::new(snapshot);
                }
                let mut outcome =
                    "reloaded: match, track, crops and visitors settings applied, gallery re-read".to_owned();
                for note in &r.notes {
                    outcome.push_str("; ");
                    outcome.push_str(note);
                }
                log::info!("{outcome}");
                outcome
            }
            Err(e) => {
                let outcome = format!("reload refused, still running the previous configuration: {e}");
                log::error!("{outcome}");
                outcome
            }
        };
        self.supervision.notifier.reloaded(&outcome);
    }

    fn track(&mut self, camera: &Arc<str>, body: TrackBody, matcher: &Matcher, publish: &mut impl FnMut(TrackEvent)) {
        match body {
            TrackBody::Frame { stamp, captured, sightings, search } => {
                self.events.count_in();
                self.write_trace(camera, &stamp, &sightings, &search);
                let emitted = self.tracker.update(camera, stamp, sightings, matcher);
                self.board.publish(camera, self.tracker.hints(camera));
                self.send(emitted, captured, publish);
            }
            TrackBody::End => {
                let emitted = self.tracker.end_camera(camera, matcher);
                self.send(emitted, Instant::now(), publish);
            }
        }
    }

    fn write_trace(
        &mut self,
        camera: &str,
        stamp: &crate::track::FrameStamp,
        sightings: &[crate::track::Sighting],
        search: &crate::scene::SearchPlan,
    ) {
        let Some(trace) = self.trace.as_mut() else { return };
        let faces: Vec<serde_json::Value> = sightings
            .iter()
            .map(|s| {
                let r = s.face.rect;
                serde_json::json!({"box": [r.x, r.y, r.w, r.h], "score": s.face.score, "embedded": s.embedding.is_some()})
            })
            .collect();
        let line = serde_json::json!({
            "camera": camera, "seq": stamp.seq, "ts": stamp.ts.as_secs_f64(), "faces": faces,
            "windows": search.windows, "pixels": search.pixels, "full_scan": search.full_scan,
        });
        if let Err(e) = serde_json::to_writer(&mut *trace, &line)
            .map_err(std::io::Error::other)
            .and_then(|_| std::io::Write::write_all(trace, b"\n"))
        {
            log::warn!("detection trace: {e}; no longer written");
            self.trace = None;
        }
    }

    fn send(&mut self, emitted: Vec<Emitted>, trigger: Instant, publish: &mut impl FnMut(TrackEvent)) {
        for Emitted { mut event, crop, embedding, small_face } in emitted {
            if let Some(crop) = crop.filter(|_| self.opts.crops.enabled) {
                match support::save_crop(&self.opts.crops, &event, &crop) {
                    Ok(path) => event.best_shot.crop = Some(path.display().to_string()),
                    Err(e) => log::warn!("cannot save the best-shot crop: {e}"),
                }
            }
            if self.visitors.on_event(&mut event, &embedding, small_face) == Verdict::Suppress {
                continue;
            }
            self.events.count_out();
            self.events.record(trigger.elapsed());
            self.events_sent += 1;
            publish(event);
        }
    }

    fn status_report(&self) -> StatusReport {
        StatusReport::new(&self.stats, self.tracker.open_tracks(), self.watch.identities(), self.epoch.elapsed())
    }

    fn report(&self) {
        let report = self.status_report();
        log::info!("{}", report.summary_line());
        if let Some(path) = &self.opts.status_file {
            if let Err(e) = report.write(path) {
                log::warn!("cannot write status file {}: {e}", path.display());
            }
        }
    }
}
