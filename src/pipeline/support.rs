//! The tracker thread's helpers: [`GalleryWatch`] (reload the gallery snapshot when another
//! process enrolls or removes someone), [`StatusReport`] (the periodic counters, written as JSON
//! for `farsight status`), and best-shot crops on disk with their retention.

use crate::config::CropsConfig;
use crate::embed::EmbedderId;
use crate::event::TrackEvent;
use crate::gallery::{Gallery, OpenMode, Snapshot};
use crate::stats::{peak_rss_kib, StageSnapshot, StageStats};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Watches the gallery database and hands out a new snapshot when its identities change.
#[derive(Debug)]
pub struct GalleryWatch {
    path: PathBuf,
    embedder: EmbedderId,
    gallery: Option<Gallery>,
    data_version: i64,
    generation: i64,
    identities: usize,
    last_check: Option<Instant>,
}

impl GalleryWatch {
    pub fn new(path: PathBuf, embedder: EmbedderId) -> Self {
        Self { path, embedder, gallery: None, data_version: -1, generation: -1, identities: 0, last_check: None }
    }

    /// Identities in the last snapshot handed out.
    pub fn identities(&self) -> usize {
        self.identities
    }

    /// A new snapshot when the gallery appeared or changed since the last call (checked at most
    /// once a second). A gallery that became unreadable keeps the old snapshot, with an error log.
    pub fn poll(&mut self) -> Option<Snapshot> {
        if self.last_check.is_some_and(|t| t.elapsed() < WATCH_EVERY) {
            return None;
        }
        self.last_check = Some(Instant::now());
        match self.check() {
            Ok(snapshot) => snapshot,
            Err(e) => {
                log::error!("gallery {}: {e}; keeping the previous snapshot", self.path.display());
                self.gallery = None;
                None
            }
        }
    }

    fn check(&mut self) -> Result<Option<Snapshot>, crate::gallery::GalleryError> {
        if self.gallery.is_none() {
            if !self.path.exists() {
                return Ok(None);
            }
            self.gallery = Some(Gallery::open(&self.path, OpenMode::MustExist, Some(&self.embedder))?);
            self.data_version = -1;
        }
        let Some(g) = &self.gallery else { return Ok(None) };
        let dv = g.data_version()?;
        if dv == self.data_version {
            return Ok(None);
        }
        self.data_version = dv;
        let generation = g.generation()?;
        if generation == self.generation {
            return Ok(None);
        }
        let first = self.generation < 0;
        self.generation = generation;
        let snapshot = g.snapshot()?;
        self.identities = snapshot.identities();
        if first {
            log::info!("gallery {}: {} identities", self.path.display(), snapshot.identities());
        } else {
            log::info!("gallery {} changed: now {} identities", self.path.display(), snapshot.identities());
        }
        Ok(Some(snapshot))
    }
}

/// The counters of a running pipeline, as `farsight status` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// When the report was written, Unix milliseconds.
    pub updated_ms: u64,
    pub uptime_s: f64,
    pub open_tracks: usize,
    pub gallery_identities: usize,
    pub peak_rss_kib: Option<u64>,
    pub stages: Vec<StageSnapshot>,
}

impl StatusReport {
    pub fn new(stats: &[Arc<StageStats>], open_tracks: usize, identities: usize, uptime: Duration) -> Self {
        Self {
            updated_ms: crate::frame::unix_ms(std::time::SystemTime::now()),
            uptime_s: (uptime.as_secs_f64() * 10.0).round() / 10.0,
            open_tracks,
            gallery_identities: identities,
            peak_rss_kib: peak_rss_kib(),
            stages: stats.iter().map(|s| s.snapshot()).collect(),
        }
    }

    /// One log line: every stage's in/out/dropped/errors and latency.
    pub fn summary_line(&self) -> String {
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|s| {
                let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
                format!(
                    "{} {}/{}/{}/{} p50 {} p99 {} ms",
                    s.name,
                    s.input,
                    s.output,
                    s.dropped,
                    s.errors,
                    ms(s.p50_ms),
                    ms(s.p99_ms)
                )
            })
            .collect();
        format!(
            "status after {:.0}s: {} open tracks; in/out/dropped/errors: {}",
            self.uptime_s,
            self.open_tracks,
            stages.join("; ")
        )
    }

    /// Writes the report atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }
}

/// Reads a status file written by a running (or finished) pipeline.
pub fn read_status(path: &Path) -> std::io::Result<StatusReport> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// Saves a track's best-shot aligned face as `<dir>/<camera>-<track>-<ms>.png` (mode 0600), then
/// applies the retention limits.
pub fn save_crop(config: &CropsConfig, event: &TrackEvent, crop: &RgbImage) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(&config.dir)?;
    let path = config.dir.join(format!("{}-{}-{}.png", event.camera, event.track, event.last_seen_ms));
    let mut bytes = Vec::new();
    crop.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).map_err(std::io::Error::other)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(&mut opts.open(&path)?, &bytes)?;
    prune_crops(config)?;
    Ok(path)
}

/// Deletes crops older than `retention_days` and the oldest beyond `max_files`.
fn prune_crops(config: &CropsConfig) -> std::io::Result<()> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&config.dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    let max_age = Duration::from_secs(u64::from(config.retention_days) * 86_400);
    let excess = files.len().saturating_sub(config.max_files);
    for (i, (modified, path)) in files.iter().enumerate() {
        let too_old = config.retention_days > 0 && modified.elapsed().is_ok_and(|age| age > max_age);
        if i < excess || too_old {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BestShot, TrackDecision};
    use crate::geometry::Rect;

    fn event(track: u64) -> TrackEvent {
        TrackEvent {
            event: TrackDecision::Unknown,
            update: false,
            camera: "door".into(),
            track,
            identity: "unknown".into(),
            score: None,
            candidates: vec![],
            best_shot: BestShot {
                frame: 0,
                rect: Rect { x: 0.0, y: 0.0, w: 1.0, h: 1.0 },
                face_px: 1.0,
                aligned_px: 1.0,
                restored: false,
                restorer: None,
                detector_score: 0.9,
                quality: 0.5,
                crop: None,
            },
            first_seen_ms: 0,
            last_seen_ms: track,
            first_seen_s: 0.0,
            last_seen_s: 0.0,
            frames_seen: 1,
            frames_used: 1,
        }
    }

    #[test]
    fn crops_are_private_and_kept_within_their_count() {
        let dir = tempfile::tempdir().unwrap();
        let config = CropsConfig { enabled: true, dir: dir.path().join("crops"), retention_days: 7, max_files: 2 };
        let face = RgbImage::from_pixel(112, 112, image::Rgb([90, 80, 70]));
        let mut paths = Vec::new();
        for track in 1..=3 {
            paths.push(save_crop(&config, &event(track), &face).unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = std::fs::read_dir(&config.dir).unwrap().count();
        assert_eq!(left, 2, "the oldest crop is deleted beyond max_files");
        assert!(!paths[0].exists() && paths[2].exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&paths[2]).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(image::open(&paths[2]).unwrap().to_rgb8(), face);
    }

    #[test]
    fn status_reports_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let stats = vec![Arc::new(StageStats::new("camera-door"))];
        stats[0].count_in();
        let report = StatusReport::new(&stats, 2, 5, Duration::from_secs(3));
        let path = dir.path().join("status.json");
        report.write(&path).unwrap();
        assert_eq!(read_status(&path).unwrap(), report);
        assert!(report.summary_line().contains("camera-door 1/0/0/0"), "{}", report.summary_line());
    }
}
