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

    /// Makes the next [`GalleryWatch::poll`] re-read the gallery and hand out a new snapshot (a
    /// reload asked for it).
    pub fn force(&mut self) {
        self.last_check = None;
        self.gallery = None;
        self.generation = -1;
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
                log::error!("{}; keeping the previous snapshot", crate::error_chain(&e));
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

    /// Writes the report atomically (temporary file, mode 0600 whatever the umask, never through
    /// a planted link; then rename over the old report).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::io::Write::write_all(&mut private_file(&tmp, true)?, &json)?;
        std::fs::rename(&tmp, path)
    }
}

/// Reads a status file written by a running (or finished) pipeline.
pub fn read_status(path: &Path) -> std::io::Result<StatusReport> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// The file that marks a folder as farsight's own crops folder. Retention only ever deletes files
/// in a folder that holds it, and only files named as [`save_crop`] names them.
pub const CROPS_MARKER: &str = ".farsight-crops";

/// Crop files are `farsight-<camera>-<track>-<unix ms>.png`.
const CROP_PREFIX: &str = "farsight-";

/// Checks (and when missing, creates, mode 0700 with its marker) the crops folder: it must be a
/// folder, not a file; an existing folder must be empty or already farsight's (it holds
/// [`CROPS_MARKER`]), so retention can never delete a user's own pictures; and it must not be,
/// hold, or sit inside a folder a camera reads (`sources`). `create` false only checks (validate).
pub fn prepare_crops_dir(dir: &Path, sources: &[PathBuf], create: bool) -> Result<(), String> {
    let shown = dir.display();
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or(p.into()));
    let here = canonical(dir);
    for src in sources {
        let src = canonical(src);
        if here.starts_with(&src) || src.starts_with(&here) {
            return Err(format!(
                "crops.dir {shown} is, holds or sits inside the folder camera source {} reads: give crops their own folder",
                src.display()
            ));
        }
    }
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mut entries = std::fs::read_dir(dir).map_err(|e| format!("crops.dir {shown}: {e}"))?;
            let ours = dir.join(CROPS_MARKER).is_file();
            if !ours && entries.next().is_some() {
                return Err(format!(
                    "crops.dir {shown} already holds files farsight did not write (no {CROPS_MARKER} in it): \
                     give crops an empty or new folder (retention deletes old crops there)"
                ));
            }
            check_writable(dir).map_err(|e| format!("crops.dir {shown}: {e}"))?;
            if !ours && create {
                write_marker(dir).map_err(|e| format!("crops.dir {shown}: {e}"))?;
            }
            Ok(())
        }
        Ok(_) => Err(format!("crops.dir {shown} exists and is not a folder")),
        Err(_) => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(format!("crops.dir {shown}: its parent folder {} does not exist", parent.display()));
            }
            check_writable(parent).map_err(|e| format!("crops.dir {shown}: {e}"))?;
            if create {
                let mut b = std::fs::DirBuilder::new();
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                b.create(dir).map_err(|e| format!("cannot create crops.dir {shown}: {e}"))?;
                write_marker(dir).map_err(|e| format!("crops.dir {shown}: {e}"))?;
            }
            Ok(())
        }
    }
}

fn write_marker(dir: &Path) -> std::io::Result<()> {
    let mut f = private_file(&dir.join(CROPS_MARKER), true)?;
    std::io::Write::write_all(
        &mut f,
        b"farsight writes best-shot face crops here and deletes the old ones (crops.retention_days, crops.max_files).\n",
    )
}

/// Whether the process can create files in `dir` (a probe file, created and removed): catches
/// read-only mounts and folders owned by someone else, which permission bits alone do not.
pub fn check_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".farsight-write-probe-{}", std::process::id()));
    drop(private_file(&probe, true)?);
    std::fs::remove_file(&probe)
}

/// Opens a new file for writing, mode 0600 whatever the umask, refusing to follow a symbolic link
/// planted at `path`. `create_new`: refuse an existing file too; otherwise it is truncated.
pub fn private_file(path: &Path, create_new: bool) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if create_new {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let f = opts.open(path)?;
    #[cfg(unix)]
    {
        // `mode` is filtered by the umask; a umask can only remove bits, but say it exactly.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Saves a track's best-shot aligned face as `<dir>/farsight-<camera>-<track>-<ms>.png` (mode
/// 0600, never through a planted link, never over an existing file), then applies the retention
/// limits to farsight's own crops. The folder was checked by [`prepare_crops_dir`] at start.
pub fn save_crop(config: &CropsConfig, event: &TrackEvent, crop: &RgbImage) -> std::io::Result<PathBuf> {
    if !config.dir.join(CROPS_MARKER).is_file() {
        prepare_crops_dir(&config.dir, &[], true).map_err(std::io::Error::other)?;
    }
    let path = config.dir.join(format!("{CROP_PREFIX}{}-{}-{}.png", event.camera, event.track, event.last_seen_ms));
    let mut bytes = Vec::new();
    crop.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).map_err(std::io::Error::other)?;
    std::io::Write::write_all(&mut private_file(&path, true)?, &bytes)?;
    prune_crops(config)?;
    Ok(path)
}

/// Whether `name` is named as a crop file farsight writes: `farsight-<camera>-<digits>-<digits>.png`
/// (retention deletes only such files; the HTTP server serves only such files and thumbnails).
pub fn is_crop_name(name: &str) -> bool {
    let Some(stem) = name.strip_prefix(CROP_PREFIX).and_then(|n| n.strip_suffix(".png")) else { return false };
    let mut parts = stem.rsplitn(3, '-');
    let (ms, track, camera) = (parts.next(), parts.next(), parts.next());
    let digits = |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    digits(ms) && digits(track) && camera.is_some_and(|c| !c.is_empty())
}

/// Deletes farsight's crops older than `retention_days` and the oldest beyond `max_files`;
/// anything else in the folder (and any link, even one named like a crop) is left alone.
fn prune_crops(config: &CropsConfig) -> std::io::Result<()> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&config.dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_crop_name))
        .filter_map(|e| {
            let meta = e.metadata().ok()?; // DirEntry::metadata does not follow links
            meta.is_file().then_some((meta.modified().ok()?, e.path()))
        })
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
            phase: crate::event::Phase::Final,
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
                embedder: None,
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
            visitor: None,
            visitor_visits: None,
            visitor_cameras: None,
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
        let left = std::fs::read_dir(&config.dir).unwrap().filter(|e| e.as_ref().unwrap().file_name() != CROPS_MARKER);
        assert_eq!(left.count(), 2, "the oldest crop is deleted beyond max_files");
        assert!(!paths[0].exists() && paths[2].exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&paths[2]).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(&config.dir).unwrap().permissions().mode() & 0o777, 0o700);
        }
        assert_eq!(image::open(&paths[2]).unwrap().to_rgb8(), face);
    }

    #[test]
    fn crop_retention_never_deletes_files_it_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let face = RgbImage::from_pixel(112, 112, image::Rgb([90, 80, 70]));
        // A folder of the user's own pictures is refused outright...
        let photos = dir.path().join("photos");
        std::fs::create_dir(&photos).unwrap();
        for name in ["holiday.png", "farsight-logo.png", "farsight-door-1-2.png.bak"] {
            std::fs::write(photos.join(name), b"the user's picture").unwrap();
        }
        let err = prepare_crops_dir(&photos, &[], true).unwrap_err();
        assert!(err.contains("did not write"), "{err}");
        let config = CropsConfig { enabled: true, dir: photos.clone(), retention_days: 7, max_files: 1 };
        assert!(save_crop(&config, &event(1), &face).is_err());
        assert_eq!(std::fs::read_dir(&photos).unwrap().count(), 3, "none of the user's files was touched");
        // ...and in farsight's own folder, files it did not name are left alone by retention.
        let crops = dir.path().join("crops");
        prepare_crops_dir(&crops, &[], true).unwrap();
        std::fs::write(crops.join("holiday.png"), b"x").unwrap();
        std::fs::write(crops.join("farsight-notes.png"), b"x").unwrap();
        let config = CropsConfig { dir: crops.clone(), ..config };
        for track in 1..=3 {
            save_crop(&config, &event(track), &face).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(crops.join("holiday.png").exists() && crops.join("farsight-notes.png").exists());
        assert!(crops.join("farsight-door-3-3.png").exists() && !crops.join("farsight-door-2-2.png").exists());
    }

    #[test]
    fn a_crops_dir_that_is_a_camera_source_or_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        std::fs::create_dir(&inbox).unwrap();
        for crops in [inbox.clone(), inbox.join("crops"), dir.path().to_owned()] {
            let err = prepare_crops_dir(&crops, std::slice::from_ref(&inbox), false).unwrap_err();
            assert!(err.contains("camera source"), "{}: {err}", crops.display());
        }
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(prepare_crops_dir(&file, &[], false).unwrap_err().contains("not a folder"));
        assert!(prepare_crops_dir(&dir.path().join("a/b"), &[], false).unwrap_err().contains("does not exist"));
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_not_written_through_and_modes_ignore_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let crops = dir.path().join("crops");
        prepare_crops_dir(&crops, &[], true).unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, crops.join("farsight-door-7-7.png")).unwrap();
        let config = CropsConfig { enabled: true, dir: crops.clone(), retention_days: 7, max_files: 10 };
        let face = RgbImage::from_pixel(112, 112, image::Rgb([1, 2, 3]));
        assert!(save_crop(&config, &event(7), &face).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // The status file's temporary file: a link planted there is removed, not followed.
        let status = dir.path().join("status.json");
        std::os::unix::fs::symlink(&victim, dir.path().join("status.json.tmp")).unwrap();
        StatusReport::new(&[], 0, 0, Duration::ZERO).write(&status).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::metadata(&status).unwrap().permissions().mode() & 0o777, 0o600);
        // A permissive umask changes nothing (set briefly: it is process-wide).
        let old = unsafe { libc::umask(0) };
        let made = private_file(&dir.path().join("new"), true).map(drop);
        unsafe { libc::umask(old) };
        made.unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("new")).unwrap().permissions().mode() & 0o777, 0o600);
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
