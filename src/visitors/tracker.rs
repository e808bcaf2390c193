//! The pipeline's side of the visitors: the tracker thread hands every event to a
//! [`VisitorBook`] before publishing it. An `unknown` decision or final event is recorded (one
//! small SQLite transaction per unknown track decision, never per frame) and gets its `visitor`,
//! `visitor_visits` and `visitor_cameras`; a track's final event continues the visit its
//! decision counted instead of counting another. Events of an ignored visitor are suppressed and
//! counted (the `visitors` stage's `dropped`). A database failure is logged and counted (its
//! `errors`), and the event goes out without a visitor: visitors never stop events.

use super::config::VisitorsConfig;
use super::store::{self, Attach, Cache, Sighting, VisitorId};
use crate::embed::EmbedderId;
use crate::event::{TrackDecision, TrackEvent};
use crate::gallery::{Gallery, OpenMode};
use crate::stats::StageStats;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often retention runs while the pipeline is going (and once at start).
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// What to do with an event after the visitors saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Publish,
    /// Its visitor is ignored: not sent to any sink.
    Suppress,
}

/// The visitors as the tracker thread keeps them.
pub struct VisitorBook {
    config: VisitorsConfig,
    path: PathBuf,
    embedder: EmbedderId,
    gallery: Option<Gallery>,
    cache: Cache,
    /// Tracks whose visit is counted: (camera, track) -> the visitor and the row its decision kept.
    open: HashMap<(String, u64), (VisitorId, Option<i64>)>,
    last_retention: Option<Instant>,
    stats: Arc<StageStats>,
}

impl std::fmt::Debug for VisitorBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisitorBook").field("path", &self.path).field("open", &self.open.len()).finish()
    }
}

impl VisitorBook {
    /// The visitors of the gallery at `path` (opened, and created mode 0600 if missing, on first
    /// use). `stats` is the `visitors` stage: in = unknown events seen, out = events given a
    /// visitor, dropped = events suppressed, errors = database failures; its latency is the time
    /// each record took (the tracker thread's cost per unknown event).
    pub fn new(config: VisitorsConfig, path: PathBuf, embedder: EmbedderId, stats: Arc<StageStats>) -> Self {
        Self {
            config,
            path,
            embedder,
            gallery: None,
            cache: Cache::default(),
            open: HashMap::new(),
            last_retention: None,
            stats,
        }
    }

    /// New settings (a reload).
    pub fn reconfigure(&mut self, config: VisitorsConfig) {
        self.config = config;
        self.last_retention = None;
    }

    fn gallery(&mut self) -> Result<&mut Gallery, store::VisitorError> {
        let g = match self.gallery.take() {
            Some(g) => g,
            None => Gallery::open(&self.path, OpenMode::CreateIfMissing, Some(&self.embedder))?,
        };
        Ok(self.gallery.insert(g))
    }

    /// Runs retention when it is due (at the first call and every [`RETENTION_EVERY`]).
    pub fn tick(&mut self) {
        if !self.config.enabled || self.last_retention.is_some_and(|t| t.elapsed() < RETENTION_EVERY) {
            return;
        }
        self.last_retention = Some(Instant::now());
        let (days, max) = (self.config.retention_days, self.config.max_visitors);
        let result = self.gallery().and_then(|g| store::enforce_retention(g, days, max, now_ms()));
        match result {
            Ok(0) => {}
            Ok(n) => {
                log::info!("visitors: retention forgot {n} visitor(s) (retention_days = {days}, max_visitors = {max})")
            }
            Err(e) => {
                self.stats.count_error();
                log::warn!("visitors: retention failed: {}", crate::error_chain(&e));
            }
        }
    }

    /// Records `event` when it is an unknown's decision or final event and fills its visitor
    /// fields; `embedding` is the track's fused embedding, `small_face` whether the small-face
    /// embedder made all of it.
    pub fn on_event(&mut self, event: &mut TrackEvent, embedding: &[f32], small_face: bool) -> Verdict {
        let key = (event.camera.clone(), event.track);
        let closing = event.phase == crate::event::Phase::Final;
        if !self.config.enabled || event.event != TrackDecision::Unknown || embedding.is_empty() {
            if closing {
                self.open.remove(&key);
            }
            return Verdict::Publish;
        }
        self.stats.count_in();
        let fallback = (self.config.linkage, self.config.threshold_for(small_face));
        let attach = match self.open.get(&key) {
            Some(&(id, replace)) => Attach::Continue { id, replace },
            None => Attach::Match { linkage: fallback.0, threshold: fallback.1 },
        };
        let embedder = if small_face { "lrembed" } else { "sface" };
        let sighting = Sighting {
            camera: &event.camera,
            track: event.track,
            embedding,
            embedder,
            quality: event.best_shot.quality,
            face_px: event.best_shot.face_px,
            first_seen_ms: i64::try_from(event.first_seen_ms).unwrap_or(i64::MAX),
            last_seen_ms: i64::try_from(event.last_seen_ms).unwrap_or(i64::MAX),
            crop: event.best_shot.crop.as_deref(),
        };
        let started = Instant::now();
        let mut cache = std::mem::take(&mut self.cache);
        let recorded = self.gallery().and_then(|g| store::record(g, &mut cache, &sighting, attach, fallback));
        self.cache = cache;
        self.stats.record(started.elapsed());
        let r = match recorded {
            Ok(r) => r,
            Err(e) => {
                self.stats.count_error();
                log::warn!(
                    "visitors: cannot record unknown track {} of {}: {}",
                    event.track,
                    event.camera,
                    crate::error_chain(&e)
                );
                // Retry with a fresh connection next time.
                self.gallery = None;
                return Verdict::Publish;
            }
        };
        if closing {
            self.open.remove(&key);
        } else {
            self.open.insert(key, (r.id, r.row));
        }
        event.visitor = Some(r.id.to_string());
        event.visitor_visits = Some(r.visits);
        event.visitor_cameras = Some(r.cameras);
        if r.ignored {
            self.stats.count_dropped();
            if let Err(e) = self.gallery().and_then(|g| store::count_suppressed(g, r.id)) {
                log::warn!("visitors: cannot count a suppressed event: {}", crate::error_chain(&e));
            }
            return Verdict::Suppress;
        }
        self.stats.count_out();
        Verdict::Publish
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::EMBEDDING_DIM;
    use crate::event::Phase;

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; EMBEDDING_DIM];
        v[i] = 1.0;
        v
    }

    fn book(dir: &std::path::Path, enabled: bool) -> (VisitorBook, Arc<StageStats>) {
        let stats = Arc::new(StageStats::new("visitors"));
        let id = EmbedderId { name: "sface-2021dec".into(), sha256: "cd".repeat(32) };
        let config = VisitorsConfig { enabled, ..Default::default() };
        (VisitorBook::new(config, dir.join("g.db"), id, stats.clone()), stats)
    }

    fn unknown(camera: &str, track: u64, phase: Phase) -> TrackEvent {
        let mut e = crate::sink::tests::event(camera, track);
        e.event = TrackDecision::Unknown;
        e.identity = crate::event::UNKNOWN.into();
        e.phase = phase;
        e
    }

    #[test]
    fn a_tracks_decision_and_final_are_one_visit_and_the_next_track_another() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, stats) = book(dir.path(), true);
        let (a, other) = (unit(0), unit(3));
        let mut d = unknown("door", 1, Phase::Decision);
        assert_eq!(b.on_event(&mut d, &a, false), Verdict::Publish);
        assert_eq!((d.visitor.as_deref(), d.visitor_visits), (Some("v1"), Some(1)));
        assert_eq!(d.visitor_cameras, Some(vec!["door".to_owned()]));
        let mut f = unknown("door", 1, Phase::Final);
        b.on_event(&mut f, &a, false);
        assert_eq!((f.visitor.as_deref(), f.visitor_visits), (Some("v1"), Some(1)), "the same visit");
        let mut next = unknown("yard", 2, Phase::Final);
        b.on_event(&mut next, &a, false);
        assert_eq!((next.visitor.as_deref(), next.visitor_visits), (Some("v1"), Some(2)));
        assert_eq!(next.visitor_cameras.as_ref().map(Vec::len), Some(2));
        let mut stranger = unknown("door", 3, Phase::Final);
        b.on_event(&mut stranger, &other, false);
        assert_eq!(stranger.visitor.as_deref(), Some("v2"));
        let s = stats.snapshot();
        assert_eq!((s.input, s.output, s.dropped, s.errors), (4, 4, 0, 0));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("g.db")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the gallery the visitors create is private");
        }
    }

    #[test]
    fn ignored_visitors_are_suppressed_and_counted_and_others_pass_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, stats) = book(dir.path(), true);
        let a = unit(0);
        let mut first = unknown("door", 1, Phase::Final);
        b.on_event(&mut first, &a, false);
        let mut g = Gallery::open(&dir.path().join("g.db"), OpenMode::MustExist, None).unwrap();
        store::set_ignored(&mut g, VisitorId(1), true).unwrap();
        let mut again = unknown("door", 2, Phase::Final);
        assert_eq!(b.on_event(&mut again, &a, false), Verdict::Suppress);
        assert_eq!(stats.snapshot().dropped, 1);
        assert_eq!(store::get(&mut g, VisitorId(1)).unwrap().suppressed, 1);
        // A match is not a visitor's; with visitors off nothing is recorded.
        let mut m = crate::sink::tests::event("door", 3);
        assert_eq!(b.on_event(&mut m, &a, false), Verdict::Publish);
        assert_eq!(m.visitor, None);
        let (mut off, _) = book(dir.path(), false);
        let mut u = unknown("door", 4, Phase::Final);
        assert_eq!(off.on_event(&mut u, &a, false), Verdict::Publish);
        assert_eq!(u.visitor, None);
    }
}
