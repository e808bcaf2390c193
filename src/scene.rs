//! Where the detector looks in a streaming frame, and which faces are worth an embedding.
//!
//! Windows come from three places: live tracks (a window around each track's predicted box,
//! magnified when its face is small, so a 12-16 px face is re-detected at 24-32 px), the motion
//! stage's regions (new movement not yet covered by a track at once, all of them every
//! `scan_motion_every` frames), and full scans (the whole frame, tiled) when the motion stage asks.
//! Every window is cut from the frame at native resolution and placed in a tile whose width and
//! height are each one of [`TILES`] sizes, so the detector has a handful of plans whatever the
//! cameras' resolutions.
//!
//! Embedding: the tracker publishes each open track's state on a [`TrackBoard`]; a worker embeds
//! a face only when it starts a track, when its track has room for more best shots, when it beats
//! the track's worst kept shot, or when the track has not been checked for `recheck_frames`
//! (a different person stepping into the same place), within a per-track budget.

use crate::detect::{nms, DetectError, Detector, DetectorKind, Face};
use crate::geometry::Rect;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Tile sides the detector runs at (multiples of 32). Tiles are square (one plan each) except at
/// the largest side, where the shorter side is fitted to the window: a 640x480 frame is scanned
/// as one 640x480 input, not padded to 640x640 (a quarter less CPU and detector scratch).
/// Fitting every tile would make ~40 plans on the 640x480 bench video instead of ~10.
pub const TILES: [u32; 7] = [96, 128, 192, 256, 384, 480, 640];

/// A detector input: width and height, each one of [`TILES`].
pub type Tile = (u32, u32);

/// Overlap between neighbouring tiles of a large window: more than the largest face a tile of
/// the largest size has to find whole.
const OVERLAP: f32 = 128.0;

/// `[scene]`: how streaming frames are searched and which faces are embedded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SceneConfig {
    /// The detector run on the windows (the region detector); `detector.kind` stays the detector
    /// for whole photos (enroll, identify, eval). YuNet by default: in `farsight bench
    /// --detectors` (scripts/bench/README.md) it finds as many 10-16 px faces as CenterFace in a
    /// magnified track window (0.98-1.00) at a quarter of the CPU, and in a full 640x480 frame
    /// without magnification 57% of 12 px faces (96% at threshold 0.5) where CenterFace finds
    /// 17%, at a fifth of the CPU. CenterFace stays the photo detector because its landmarks align full-size faces
    /// better (d' 6.19 vs 5.65 at 112 px on 400 LFW pairs).
    pub detector: DetectorKind,
    /// Minimum score of the region detector. Unset: 0.8 for YuNet, `detector.score_threshold`
    /// for the other kinds ([`SceneConfig::region_threshold`]). YuNet scores true faces far
    /// higher than CenterFace does: on the 1920x1080 main-stream bench video (12-24 px faces) 95%
    /// of its hits score above 0.88 while its other detections (6-10 px boxes beside a face, and
    /// the photos' background people) score 0.51-0.82; at 0.5 they became 40 "unknown" visits
    /// instead of CenterFace's 8, at 0.8 the hits keep 874 of 877.
    pub score_threshold: Option<f32>,
    /// A live track's window is its predicted face box grown to this many face widths.
    pub track_window: f32,
    /// Track windows whose face is narrower than this (frame pixels) are magnified 2x before
    /// detection. In a 2.5-face window at 1x YuNet (threshold 0.8) finds 5% of 12 px faces, 49%
    /// at 14, 76% at 16, 96% at 20, 99% at 24; magnified, 98-100% from 12 px up (0.94 at 10). Below ~19 px the magnified window
    /// still fits the smallest tile (96), so magnifying costs almost nothing; from 20 to 24 px it
    /// moves to the 128 tile (about +1 ms with YuNet).
    pub upscale_below_px: f32,
    /// Motion regions already covered by track windows are searched every this many frames
    /// (new movement outside every window is searched at once).
    pub scan_motion_every: u32,
    /// A track that has not been embedded for this many frames is embedded again (is it still
    /// the same person?), even without a better shot.
    pub recheck_frames: u64,
    /// The most embeddings one track may cause.
    pub max_embeds_per_track: u32,
    /// A face is a better shot when its quality beats the track's worst kept shot by this
    /// fraction (quality jitters a few percent from frame to frame).
    pub min_gain: f32,
    /// Motion regions no larger than this (frame pixels, longer side) are magnified 2x before
    /// detection: a small moving region is a far person whose face may be 12-16 px.
    pub magnify_motion_below_px: f32,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            detector: DetectorKind::Yunet,
            score_threshold: None,
            track_window: 2.5,
            upscale_below_px: 24.0,
            scan_motion_every: 5,
            recheck_frames: 50,
            max_embeds_per_track: 24,
            min_gain: 0.15,
            magnify_motion_below_px: 160.0,
        }
    }
}

impl SceneConfig {
    /// The region detector's score threshold: `score_threshold`, else 0.8 for YuNet, else
    /// `photo_threshold` (`detector.score_threshold`).
    pub fn region_threshold(&self, photo_threshold: f32) -> f32 {
        match (self.score_threshold, self.detector) {
            (Some(t), _) => t,
            (None, DetectorKind::Yunet) => 0.8,
            (None, _) => photo_threshold,
        }
    }

    pub fn validate(&self, p: &mut Vec<String>) {
        if let Some(t) = self.score_threshold {
            if !(t > 0.0 && t < 1.0) {
                p.push(format!("scene.score_threshold = {t} must be between 0 and 1"));
            }
        }
        if !(self.track_window >= 1.5 && self.track_window <= 20.0) {
            p.push(format!("scene.track_window = {} must be between 1.5 and 20 face widths", self.track_window));
        }
        if !(self.upscale_below_px >= 0.0 && self.upscale_below_px <= 200.0) {
            p.push(format!("scene.upscale_below_px = {} must be between 0 and 200", self.upscale_below_px));
        }
        if !(1..=1000).contains(&self.scan_motion_every) {
            p.push(format!("scene.scan_motion_every = {} must be between 1 and 1000", self.scan_motion_every));
        }
        if !(1..=100_000).contains(&self.recheck_frames) {
            p.push(format!("scene.recheck_frames = {} must be between 1 and 100000", self.recheck_frames));
        }
        if !(self.magnify_motion_below_px >= 0.0 && self.magnify_motion_below_px <= 1000.0) {
            p.push(format!(
                "scene.magnify_motion_below_px = {} must be between 0 and 1000",
                self.magnify_motion_below_px
            ));
        }
        if !(self.min_gain >= 0.0 && self.min_gain <= 10.0) {
            p.push(format!("scene.min_gain = {} must be between 0 and 10", self.min_gain));
        }
        if !(1..=10_000).contains(&self.max_embeds_per_track) {
            p.push(format!("scene.max_embeds_per_track = {} must be between 1 and 10000", self.max_embeds_per_track));
        }
    }
}

/// An open track as the workers see it (published by the tracker after every frame).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackHint {
    pub id: u64,
    /// The last box the face was seen in, at stream time `ts`.
    pub rect: Rect,
    pub ts: Duration,
    /// Estimated motion of the box centre, frame pixels per second.
    pub velocity: (f32, f32),
    /// Best shots kept, the most the track keeps, and the worst kept one's quality.
    pub shots: usize,
    pub capacity: usize,
    pub worst_quality: f32,
    /// Embeddings made for this track so far, and the frame of the last one.
    pub embeds: u32,
    pub last_embedded: u64,
}

impl TrackHint {
    /// The box predicted at stream time `ts` (constant velocity, at most 2 s ahead).
    pub fn predicted(&self, ts: Duration) -> Rect {
        let dt = ts.saturating_sub(self.ts).as_secs_f32().min(2.0);
        Rect { x: self.rect.x + self.velocity.0 * dt, y: self.rect.y + self.velocity.1 * dt, ..self.rect }
    }
}

/// Each camera's open tracks, written by the tracker thread and read by the workers.
#[derive(Debug, Clone, Default)]
pub struct TrackBoard(Arc<RwLock<HashMap<Arc<str>, Vec<TrackHint>>>>);

impl TrackBoard {
    pub fn publish(&self, camera: &Arc<str>, hints: Vec<TrackHint>) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.insert(camera.clone(), hints);
    }

    /// Whether `camera` has an open track.
    pub fn has_tracks(&self, camera: &str) -> bool {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(camera).is_some_and(|h| !h.is_empty())
    }

    pub fn hints(&self, camera: &str) -> Vec<TrackHint> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(camera).cloned().unwrap_or_default()
    }
}

/// A part of the frame to run the detector on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Frame pixels.
    pub rect: Rect,
    /// Magnification before detection (1 or 2).
    pub scale: f32,
}

/// Why a frame is searched where it is (for counters and the detection trace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SearchPlan {
    pub windows: usize,
    /// Detector input pixels, all tiles together.
    pub pixels: u64,
    pub full_scan: bool,
}

/// The windows to search in a `w` x `h` frame (`seq`, stream time `ts`), given the motion stage's
/// outcome and the camera's live tracks.
pub fn plan(
    (w, h): (u32, u32),
    seq: u64,
    ts: Duration,
    motion: &crate::motion::MotionOutcome,
    hints: &[TrackHint],
    config: &SceneConfig,
) -> Vec<Window> {
    let frame = Rect { x: 0.0, y: 0.0, w: w as f32, h: h as f32 };
    if motion.scan {
        return vec![Window { rect: frame, scale: 1.0 }];
    }
    let mut windows: Vec<Window> = hints
        .iter()
        .map(|t| {
            let p = t.predicted(ts);
            // The longer the face has gone unseen, the further it may be from the prediction:
            // past the pipeline's own lag (the board is a few frames behind the frame being
            // searched), the window grows by a walking pace, five face widths a second.
            let unseen = (ts.saturating_sub(t.ts).as_secs_f32() - 0.3).clamp(0.0, 2.0);
            let face = p.w.max(p.h).max(8.0);
            let side = face * config.track_window + 2.0 * 5.0 * face * unseen;
            let (cx, cy) = (p.x + p.w / 2.0, p.y + p.h / 2.0);
            let rect = clamp(Rect { x: cx - side / 2.0, y: cy - side / 2.0, w: side, h: side }, &frame);
            let scale = if p.w < config.upscale_below_px { 2.0 } else { 1.0 };
            Window { rect, scale }
        })
        .collect();
    let all_motion = seq.is_multiple_of(u64::from(config.scan_motion_every.max(1)));
    for r in &motion.regions {
        let covered = windows.iter().any(|wd| contains(&wd.rect, r, 0.8));
        if all_motion || !covered {
            // A small moving region is a small (far) person: magnified, a 12 px face is found.
            let scale = if r.w.max(r.h) <= config.magnify_motion_below_px { 2.0 } else { 1.0 };
            windows.push(Window { rect: clamp(*r, &frame), scale });
        }
    }
    let windows = merge(windows);
    // A busy frame (many people, large or overlapping movement) can ask for more detector input
    // than the whole frame: search the whole frame at native size instead, keeping only the
    // magnified windows of small tracked faces (the full frame at 1x misses 12-16 px faces).
    let whole = Window { rect: frame, scale: 1.0 };
    if cost(&windows) > cost(std::slice::from_ref(&whole)) {
        let small_tracks = hints.iter().filter_map(|t| {
            let p = t.predicted(ts);
            (p.w < config.upscale_below_px).then_some(p)
        });
        let mut capped = vec![whole];
        capped.extend(
            windows.into_iter().filter(|w| w.scale > 1.0 && small_tracks.clone().any(|p| contains(&w.rect, &p, 0.5))),
        );
        return capped;
    }
    windows
}

/// Detector input pixels the windows cost, all tiles together.
fn cost(windows: &[Window]) -> u64 {
    windows.iter().flat_map(tiles).map(|(_, (w, h))| u64::from(w) * u64::from(h)).sum()
}

fn clamp(r: Rect, frame: &Rect) -> Rect {
    let x0 = r.x.max(frame.x);
    let y0 = r.y.max(frame.y);
    Rect::from_corners(x0, y0, (r.x + r.w).min(frame.x + frame.w), (r.y + r.h).min(frame.y + frame.h))
}

/// Whether `outer` holds at least `fraction` of `inner`'s area.
fn contains(outer: &Rect, inner: &Rect, fraction: f32) -> bool {
    let x1 = outer.x.max(inner.x);
    let y1 = outer.y.max(inner.y);
    let x2 = (outer.x + outer.w).min(inner.x + inner.w);
    let y2 = (outer.y + outer.h).min(inner.y + inner.h);
    let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
    inter >= fraction * inner.area()
}

/// Joins windows of the same scale that overlap when their union costs little more than the
/// two apart (and still fits the largest tile).
fn merge(mut windows: Vec<Window>) -> Vec<Window> {
    let largest = TILES[TILES.len() - 1] as f32;
    loop {
        let mut joined = None;
        'search: for i in 0..windows.len() {
            for j in i + 1..windows.len() {
                let (a, b) = (windows[i], windows[j]);
                if a.scale != b.scale {
                    continue;
                }
                let u = Rect::from_corners(
                    a.rect.x.min(b.rect.x),
                    a.rect.y.min(b.rect.y),
                    (a.rect.x + a.rect.w).max(b.rect.x + b.rect.w),
                    (a.rect.y + a.rect.h).max(b.rect.y + b.rect.h),
                );
                let fits = u.w.max(u.h) * a.scale <= largest;
                let overlap = a.rect.iou(&b.rect) > 0.0;
                if fits && overlap && u.area() <= 1.3 * (a.rect.area() + b.rect.area()) {
                    joined = Some((i, j, Window { rect: u, scale: a.scale }));
                    break 'search;
                }
            }
        }
        match joined {
            Some((i, j, w)) => {
                windows.swap_remove(j);
                windows[i] = w;
            }
            None => return windows,
        }
    }
}

/// Splits a window into the detector's tiles: one tile, the smallest of [`TILES`] that holds it
/// (at the largest side, its shorter side fitted too), or tiles of the largest size overlapping
/// by [`OVERLAP`] when it is bigger.
pub fn tiles(window: &Window) -> Vec<(Rect, Tile)> {
    let (sw, sh) = (window.rect.w * window.scale, window.rect.h * window.scale);
    let fits = |v: f32| TILES.iter().copied().find(|&t| v <= t as f32);
    let largest = TILES[TILES.len() - 1];
    if let Some(t) = fits(sw.max(sh)) {
        // Square below the largest side (a handful of plans); fitted to the window at it.
        let fit = |v: f32| if t == largest { fits(v).unwrap_or(t) } else { t };
        return vec![(window.rect, (fit(sw), fit(sh)))];
    }
    let t = TILES[TILES.len() - 1] as f32;
    let step = (t - OVERLAP) / window.scale;
    let side = t / window.scale;
    let starts = |from: f32, len: f32| -> Vec<f32> {
        if len <= side {
            return vec![from];
        }
        let n = ((len - side) / step).ceil() as usize + 1;
        (0..n).map(|i| (from + i as f32 * step).min(from + len - side)).collect()
    };
    let mut out = Vec::new();
    for y in starts(window.rect.y, window.rect.h) {
        for x in starts(window.rect.x, window.rect.w) {
            let r = Rect { x, y, w: side.min(window.rect.w), h: side.min(window.rect.h) };
            let fit = |v: f32| fits(v).unwrap_or(t as u32);
            out.push((r, (fit(r.w * window.scale), fit(r.h * window.scale))));
        }
    }
    out
}

/// Runs the detector on every window of `frame` and returns the faces (frame coordinates, overlaps
/// between windows suppressed), with what the search cost.
pub fn detect(
    detector: &Detector,
    frame: &image::RgbImage,
    windows: &[Window],
) -> Result<(Vec<Face>, SearchPlan), DetectError> {
    let mut faces = Vec::new();
    let plan = SearchPlan { windows: windows.len(), pixels: cost(windows), ..Default::default() };
    for w in windows {
        for (rect, tile) in tiles(w) {
            faces.extend(detector.detect_region(frame, rect, w.scale, tile)?);
        }
    }
    Ok((nms(faces, detector.config().nms_iou), plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::motion::MotionOutcome;

    fn hint(x: f32, y: f32, side: f32) -> TrackHint {
        TrackHint {
            id: 1,
            rect: Rect { x, y, w: side, h: side * 1.2 },
            ts: Duration::ZERO,
            velocity: (100.0, 0.0),
            shots: 0,
            capacity: 5,
            worst_quality: 0.0,
            embeds: 0,
            last_embedded: 0,
        }
    }

    #[test]
    fn the_region_threshold_is_yunets_own_unless_set() {
        let mut c = SceneConfig::default();
        assert_eq!(c.region_threshold(0.5), 0.8, "YuNet scores true faces 0.88+");
        c.detector = DetectorKind::Centerface;
        assert_eq!(c.region_threshold(0.5), 0.5, "other kinds follow [detector]");
        c.score_threshold = Some(0.6);
        assert_eq!(c.region_threshold(0.5), 0.6);
        let mut problems = Vec::new();
        SceneConfig { score_threshold: Some(1.5), ..SceneConfig::default() }.validate(&mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn a_static_scene_is_not_searched_and_a_scan_covers_the_whole_frame() {
        let c = SceneConfig::default();
        assert!(plan((1920, 1080), 1, Duration::ZERO, &MotionOutcome::default(), &[], &c).is_empty());
        let scan = MotionOutcome { regions: vec![], scan: true };
        let w = plan((1920, 1080), 1, Duration::ZERO, &scan, &[], &c);
        let t = tiles(&w[0]);
        assert_eq!(t.len(), 8, "1920x1080 in 640 tiles overlapping by at least 128: 4 x 2 {t:?}");
        // Every pixel is in some tile.
        for (x, y) in [(0.0, 0.0), (1919.0, 1079.0), (960.0, 540.0), (639.0, 700.0)] {
            assert!(t.iter().any(|(r, _)| x >= r.x && x < r.x + r.w && y >= r.y && y < r.y + r.h), "({x}, {y})");
        }
        assert!(t.iter().all(|(_, tile)| *tile == (640, 640)), "{t:?}");
    }

    #[test]
    fn tiles_are_square_below_the_largest_side_and_fitted_at_it() {
        let at = |w: f32, h: f32, scale: f32| tiles(&Window { rect: Rect { x: 0.0, y: 0.0, w, h }, scale });
        let frame = at(640.0, 480.0, 1.0);
        assert_eq!(frame, vec![(Rect { x: 0.0, y: 0.0, w: 640.0, h: 480.0 }, (640, 480))], "a 640x480 scan");
        assert_eq!(at(300.0, 100.0, 1.0)[0].1, (384, 384), "square below 640: one plan per side");
        assert_eq!(at(300.0, 100.0, 2.0)[0].1, (640, 256), "600x200 magnified");
        // A wide strip: 640-wide tiles, their height fitted to the strip.
        let strip = at(1500.0, 200.0, 1.0);
        assert_eq!(strip.len(), 3, "{strip:?}");
        assert!(strip.iter().all(|(r, tile)| *tile == (640, 256) && r.h == 200.0), "{strip:?}");
    }

    #[test]
    fn a_small_tracked_face_is_searched_magnified_where_it_is_going() {
        let c = SceneConfig::default();
        let w = plan(
            (1920, 1080),
            1,
            Duration::from_millis(300),
            &MotionOutcome::default(),
            &[hint(1000.0, 500.0, 14.0)],
            &c,
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].scale, 2.0);
        // Predicted 30 px to the right after 0.3 s at 100 px/s; window 2.5 faces wide.
        let centre = w[0].rect.x + w[0].rect.w / 2.0;
        assert!((centre - 1037.0).abs() < 1.0, "{w:?}");
        assert_eq!(tiles(&w[0]), vec![(w[0].rect, (96, 96))], "2.5 faces of 14 px, magnified 2x: the 96 tile");
        // Unseen for longer than the pipeline's lag, the window grows at a walking pace.
        let late = plan(
            (1920, 1080),
            1,
            Duration::from_millis(800),
            &MotionOutcome::default(),
            &[hint(1000.0, 500.0, 14.0)],
            &c,
        );
        assert!(late[0].rect.w > 2.0 * w[0].rect.w, "{late:?}");
        // A large face is searched at native size.
        let big = plan((1920, 1080), 1, Duration::ZERO, &MotionOutcome::default(), &[hint(100.0, 100.0, 80.0)], &c);
        assert_eq!(big[0].scale, 1.0);
    }

    #[test]
    fn a_busy_frame_costs_no_more_than_the_whole_frame_plus_small_faces() {
        let c = SceneConfig::default();
        // Six people moving in a 640x480 frame, one of them a small tracked face.
        let regions = (0..6)
            .map(|i| Rect { x: 20.0 + 100.0 * i as f32, y: 40.0 + 30.0 * i as f32, w: 150.0, h: 150.0 })
            .collect();
        let busy = MotionOutcome { regions, scan: false };
        let small = hint(300.0, 300.0, 14.0);
        let w = plan((640, 480), 5, Duration::ZERO, &busy, std::slice::from_ref(&small), &c);
        let whole = Rect { x: 0.0, y: 0.0, w: 640.0, h: 480.0 };
        assert_eq!(w[0], Window { rect: whole, scale: 1.0 }, "{w:?}");
        assert!(w[1..].iter().all(|x| x.scale == 2.0 && contains(&x.rect, &small.rect, 0.5)), "{w:?}");
        assert!(cost(&w) <= cost(&[w[0]]) + 192 * 192, "{w:?}");
    }

    #[test]
    fn new_motion_is_searched_at_once_and_covered_motion_on_schedule() {
        let c = SceneConfig::default();
        let h = [hint(1000.0, 500.0, 30.0)];
        let inside = MotionOutcome { regions: vec![Rect { x: 1000.0, y: 500.0, w: 30.0, h: 40.0 }], scan: false };
        assert_eq!(plan((1920, 1080), 1, Duration::ZERO, &inside, &h, &c).len(), 1, "covered by the track");
        let elsewhere = MotionOutcome { regions: vec![Rect { x: 100.0, y: 100.0, w: 60.0, h: 200.0 }], scan: false };
        let w = plan((1920, 1080), 1, Duration::ZERO, &elsewhere, &h, &c);
        assert_eq!(w.len(), 2, "new movement is searched now: {w:?}");
        let big = [hint(1000.0, 500.0, 120.0)];
        let inside_big = MotionOutcome { regions: vec![Rect { x: 1000.0, y: 500.0, w: 200.0, h: 260.0 }], scan: false };
        assert_eq!(
            plan((1920, 1080), 5, Duration::ZERO, &inside_big, &big, &c).len(),
            1,
            "merged with its track's window"
        );
    }
}
