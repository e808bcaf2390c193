//! Face tracks: a person walking past a camera is seen in many frames and must become one event.
//! [`Tracker`] associates each frame's faces with the camera's open tracks (box overlap, or
//! embedding similarity for a face that moved further), keeps each track's best shots ranked by
//! [`quality`], fuses their embeddings (quality-weighted mean, re-normalised), and decides the
//! track against the gallery with the fused embedding. While the person is there, the track's
//! decision is announced once it is confident (a `decision` event: a match after
//! `announce_frames` frames, a stranger after `unknown_after_s`), and a later change of mind is an
//! `update`; a track not seen for `lost_after_s` of stream time, or whose camera ended, is closed
//! and yields its one `final` [`TrackEvent`].

use crate::config::TrackConfig;
use crate::detect::Face;
use crate::embed::{cosine, normalize};
use crate::embed::{EmbedderKind, Embedding};
use crate::event::{BestShot, Phase, TrackDecision, TrackEvent, UNKNOWN};
use crate::frame::unix_ms;
use crate::gallery::{Candidate, Snapshot};
use crate::recognize::Observation;
use crate::scene::TrackHint;
use image::{GrayImage, RgbImage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The most best shots a track keeps.
pub const MAX_BEST_SHOTS: usize = 8;

/// One face of one frame, ready for tracking.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub face: Face,
    /// Frame pixels spanned by the aligned crop.
    pub aligned_px: f32,
    /// The restorer's name when the face was restored before embedding.
    pub restorer: Option<String>,
    /// The embedder that made `embedding` (SFace when not embedded).
    pub embedder: EmbedderKind,
    /// `None` when the worker did not embed this face: its track already holds better shots (it
    /// still moves the track along and counts as seen).
    pub embedding: Option<Embedding>,
    /// See [`quality`].
    pub quality: f32,
    /// The aligned 112x112 face, kept only when crops are saved (and the face was embedded).
    pub crop: Option<RgbImage>,
}

impl Sighting {
    /// An embedded face (as `identify` and the tests make them).
    pub fn embedded(observation: Observation, quality: f32, crop: Option<RgbImage>) -> Self {
        Self {
            face: observation.face,
            aligned_px: observation.aligned_px,
            restorer: observation.restorer,
            embedder: observation.embedder,
            embedding: Some(observation.embedding),
            quality,
            crop,
        }
    }
}

/// When and where a frame was taken.
#[derive(Debug, Clone, Copy)]
pub struct FrameStamp {
    pub seq: u64,
    pub ts: Duration,
    pub wall: SystemTime,
}

/// How the gallery is searched: the snapshot, the thresholds and the candidates listed.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub snapshot: Arc<Snapshot>,
    pub threshold: f32,
    /// The threshold for a track whose every best shot the small-face embedder made (their
    /// scores against full-resolution templates sit lower; calibrated separately).
    pub small_face_threshold: f32,
    pub top_k: usize,
}

impl Matcher {
    /// The decision for an embedding, with the identity and the candidates.
    /// The match threshold for a track (the small-face one when every shot came from that path).
    pub fn threshold_for(&self, small_face: bool) -> f32 {
        if small_face {
            self.small_face_threshold
        } else {
            self.threshold
        }
    }

    fn decide(&self, embedding: &[f32], small_face: bool) -> (TrackDecision, String, Option<f32>, Vec<Candidate>) {
        let candidates = self.snapshot.search(embedding, self.top_k);
        let best = candidates.first();
        let score = best.map(|c| c.score);
        let threshold = self.threshold_for(small_face);
        match best {
            Some(c) if c.score >= threshold => (TrackDecision::Match, c.name.clone(), score, candidates),
            _ => (TrackDecision::Unknown, UNKNOWN.to_owned(), score, candidates),
        }
    }
}

/// Whether `now` differs from the announced decision `before` by more than `margin` around
/// `threshold` (see `track.update_margin`).
fn clearly_changed(before: &(TrackDecision, String), now: &TrackEvent, threshold: f32, margin: f32) -> bool {
    let score_of = |name: &str| now.candidates.iter().find(|c| c.name == name).map(|c| c.score);
    let best = now.score.unwrap_or(f32::NEG_INFINITY);
    match (&before.0, &now.event) {
        // Was a match, now nobody: the announced identity must have fallen clearly below.
        (TrackDecision::Match, TrackDecision::Unknown) => {
            score_of(&before.1).unwrap_or(f32::NEG_INFINITY) < threshold - margin
        }
        // Was unknown, now a match: clearly above the threshold.
        (TrackDecision::Unknown, TrackDecision::Match) => best >= threshold + margin,
        // Another identity: it must beat the announced one by the margin.
        (TrackDecision::Match, TrackDecision::Match) => {
            best - score_of(&before.1).unwrap_or(f32::NEG_INFINITY) >= margin
        }
        (TrackDecision::Unknown, TrackDecision::Unknown) => false,
    }
}

/// Quality of a face in [0, 1] for best-shot ranking: detector confidence, times a size term
/// (aligned pixels over 112, square-rooted so small faces are not dismissed outright), times a
/// frontal-pose term (nose centred between the eyes) and a sharpness term (variance of the
/// Laplacian of the aligned face), each of the last two ranging from 0.5 to 1.
pub fn quality(face: &Face, aligned_px: f32, aligned: &RgbImage) -> f32 {
    let size = (aligned_px / 112.0).clamp(0.0, 1.0).sqrt();
    let [le, re, nose, ..] = face.landmarks;
    let eye_dist = ((re.x - le.x).powi(2) + (re.y - le.y).powi(2)).sqrt();
    let yaw = if eye_dist > 0.0 { ((nose.x - (le.x + re.x) / 2.0) / eye_dist).abs() } else { 1.0 };
    let pose = (1.0 - 2.0 * yaw).clamp(0.0, 1.0);
    let lap = laplacian_variance(&image::imageops::grayscale(aligned));
    let sharp = lap / (lap + 100.0);
    (face.score.clamp(0.0, 1.0) * size * (0.5 + 0.5 * pose) * (0.5 + 0.5 * sharp)).clamp(0.0, 1.0)
}

/// How a track fuses its best shots, given as (quality, embedding): the quality-weighted mean of
/// the embeddings (a weight never below 1e-3, so a zero-quality shot still counts a little),
/// re-normalised. `None` when there is no shot or the mean is zero. `farsight eval-fusion`
/// measures exactly this function against a single best frame.
pub fn fuse<'a>(shots: impl IntoIterator<Item = (f32, &'a [f32])>) -> Option<Vec<f32>> {
    let mut acc: Vec<f32> = Vec::new();
    for (quality, embedding) in shots {
        if acc.is_empty() {
            acc = vec![0.0; embedding.len()];
        }
        let w = quality.max(1e-3);
        for (a, v) in acc.iter_mut().zip(embedding) {
            *a += w * v;
        }
    }
    normalize(acc)
}

fn laplacian_variance(g: &GrayImage) -> f32 {
    let (w, h) = g.dimensions();
    if w < 3 || h < 3 {
        return 0.0;
    }
    let px = |x: u32, y: u32| f32::from(g.get_pixel(x, y).0[0]);
    let (mut sum, mut sum2, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let l = f64::from(px(x - 1, y) + px(x + 1, y) + px(x, y - 1) + px(x, y + 1) - 4.0 * px(x, y));
            sum += l;
            sum2 += l * l;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum2 / n - mean * mean).max(0.0) as f32
}

#[derive(Debug, Clone)]
struct Shot {
    quality: f32,
    frame: u64,
    face: Face,
    aligned_px: f32,
    restorer: Option<String>,
    embedder: EmbedderKind,
    embedding: Embedding,
    crop: Option<RgbImage>,
}

#[derive(Debug)]
struct Track {
    id: u64,
    first: FrameStamp,
    last: FrameStamp,
    last_face: Face,
    frames_seen: u32,
    /// Motion of the box centre, frame pixels per second (smoothed).
    velocity: (f32, f32),
    /// Best first, at most `best_shots`. Empty until an embedded sighting arrives.
    shots: heapless::Vec<Shot, MAX_BEST_SHOTS>,
    fused: Vec<f32>,
    /// Embedded sightings so far, and the frame of the last one.
    embeds: u32,
    last_embedded: u64,
    /// The decision last announced by an update event.
    announced: Option<(TrackDecision, String)>,
}

impl Track {
    fn new(id: u64, stamp: FrameStamp, s: Sighting, keep: usize) -> Self {
        let mut t = Self {
            id,
            first: stamp,
            last: stamp,
            last_face: s.face,
            frames_seen: 0,
            velocity: (0.0, 0.0),
            shots: heapless::Vec::new(),
            fused: Vec::new(),
            embeds: 0,
            last_embedded: stamp.seq,
            announced: None,
        };
        t.add(stamp, s, keep);
        t
    }

    /// The box predicted at stream time `ts` (constant velocity, at most 2 s ahead).
    fn predicted(&self, ts: Duration) -> crate::geometry::Rect {
        let dt = ts.saturating_sub(self.last.ts).as_secs_f32().min(2.0);
        let r = self.last_face.rect;
        crate::geometry::Rect { x: r.x + self.velocity.0 * dt, y: r.y + self.velocity.1 * dt, ..r }
    }

    fn add(&mut self, stamp: FrameStamp, s: Sighting, keep: usize) {
        if stamp.ts > self.last.ts && self.frames_seen > 0 {
            let dt = (stamp.ts - self.last.ts).as_secs_f32();
            let (a, b) = (self.last_face.rect, s.face.rect);
            let (vx, vy) = ((b.x + b.w / 2.0 - a.x - a.w / 2.0) / dt, (b.y + b.h / 2.0 - a.y - a.h / 2.0) / dt);
            // Smoothed; a jump of more than ten face widths a second is an association, not motion.
            let limit = 10.0 * b.w.max(8.0);
            self.velocity = (
                0.5 * self.velocity.0 + 0.5 * vx.clamp(-limit, limit),
                0.5 * self.velocity.1 + 0.5 * vy.clamp(-limit, limit),
            );
        }
        if stamp.ts >= self.last.ts {
            self.last = stamp;
            self.last_face = s.face;
        }
        self.frames_seen += 1;
        let Some(embedding) = s.embedding else { return };
        self.embeds += 1;
        self.last_embedded = self.last_embedded.max(stamp.seq);
        let shot = Shot {
            quality: s.quality,
            frame: stamp.seq,
            face: s.face,
            aligned_px: s.aligned_px,
            restorer: s.restorer,
            embedder: s.embedder,
            embedding,
            crop: s.crop,
        };
        let at = self.shots.iter().position(|x| shot.quality > x.quality).unwrap_or(self.shots.len());
        if at < keep {
            if self.shots.len() >= keep {
                self.shots.pop();
            }
            // There is room: the list was just shortened below `keep` <= capacity.
            let _ = self.shots.insert(at, shot);
            self.fuse();
        }
    }

    /// What the workers need to know of this track.
    fn hint(&self, keep: usize) -> TrackHint {
        TrackHint {
            id: self.id,
            rect: self.last_face.rect,
            ts: self.last.ts,
            velocity: self.velocity,
            shots: self.shots.len(),
            capacity: keep,
            worst_quality: self.shots.last().map_or(0.0, |s| s.quality),
            embeds: self.embeds,
            last_embedded: self.last_embedded,
        }
    }

    /// The best shots' embeddings fused by [`fuse`].
    fn fuse(&mut self) {
        // All-zero only if every shot's embedding was zero; keep the previous fusion then.
        if let Some(v) = fuse(self.shots.iter().map(|s| (s.quality, s.embedding.as_slice()))) {
            self.fused = v;
        }
    }

    /// Whether every best shot came from the small-face embedder.
    fn small_face(&self) -> bool {
        self.shots.iter().all(|s| s.embedder != EmbedderKind::Sface)
    }

    fn emitted(&self, event: TrackEvent, crop: Option<RgbImage>) -> Emitted {
        Emitted { event, crop, embedding: self.fused.clone(), small_face: self.small_face() }
    }

    fn event(&self, camera: &str, matcher: &Matcher, phase: Phase) -> Option<TrackEvent> {
        let best = self.shots.first()?;
        // The fused embedding mixes the shots: only when every one came from the small-face
        // embedder does its (lower) threshold apply.
        let small_face = self.small_face();
        let (decision, identity, score, candidates) = matcher.decide(&self.fused, small_face);
        Some(TrackEvent {
            event: decision,
            phase,
            update: phase != Phase::Final,
            camera: camera.to_owned(),
            track: self.id,
            identity,
            score,
            candidates,
            best_shot: BestShot {
                frame: best.frame,
                rect: best.face.rect,
                face_px: best.face.rect.w,
                aligned_px: best.aligned_px,
                restored: best.restorer.is_some(),
                restorer: best.restorer.clone(),
                embedder: Some(best.embedder.name().to_owned()),
                detector_score: best.face.score,
                quality: best.quality,
                crop: None,
            },
            first_seen_ms: unix_ms(self.first.wall),
            last_seen_ms: unix_ms(self.last.wall),
            first_seen_s: self.first.ts.as_secs_f64(),
            last_seen_s: self.last.ts.as_secs_f64(),
            frames_seen: self.frames_seen,
            frames_used: self.shots.len() as u32,
            visitor: None,
            visitor_visits: None,
            visitor_cameras: None,
        })
    }
}

/// A closed or updated track's event, with the best shot's aligned face when crops are kept, and
/// what the visitors need of an unknown: the fused embedding and whether the small-face embedder
/// made every shot of it.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub event: TrackEvent,
    pub crop: Option<RgbImage>,
    pub embedding: Vec<f32>,
    pub small_face: bool,
}

/// Open tracks of every camera.
#[derive(Debug)]
pub struct Tracker {
    config: TrackConfig,
    cameras: HashMap<Arc<str>, Vec<Track>>,
    next_id: u64,
    /// Tracks closed with fewer than `min_frames` sightings (no event).
    pub discarded: u64,
    /// Unembedded sightings that matched no open track (dropped).
    pub unassigned: u64,
}

impl Tracker {
    pub fn new(config: TrackConfig) -> Self {
        Self { config, cameras: HashMap::new(), next_id: 1, discarded: 0, unassigned: 0 }
    }

    /// New settings (a reload): tracks opened from now on, and every later decision, use them.
    pub fn reconfigure(&mut self, config: TrackConfig) {
        self.config = config;
    }

    /// The camera's open tracks as the workers see them (see [`crate::scene`]).
    pub fn hints(&self, camera: &str) -> Vec<TrackHint> {
        let keep = self.config.best_shots.clamp(1, MAX_BEST_SHOTS);
        self.cameras.get(camera).map_or_else(Vec::new, |ts| ts.iter().map(|t| t.hint(keep)).collect())
    }

    /// Open tracks across all cameras.
    pub fn open_tracks(&self) -> usize {
        self.cameras.values().map(Vec::len).sum()
    }

    /// Adds one frame's faces: each continues the best-fitting open track or starts a new one.
    /// Returns the events this causes: final events of tracks the frame shows are lost, the
    /// decisions of tracks that just became confident (with `announce`), and updates of
    /// announced decisions that changed (with `updates`).
    pub fn update(
        &mut self,
        camera: &Arc<str>,
        stamp: FrameStamp,
        sightings: Vec<Sighting>,
        matcher: &Matcher,
    ) -> Vec<Emitted> {
        let mut out = self.expire(camera, stamp.ts, matcher);
        let keep = self.config.best_shots.clamp(1, MAX_BEST_SHOTS);
        let tracks = self.cameras.entry(camera.clone()).or_default();
        // Every plausible (track, sighting) pair, best first; greedy one-to-one assignment.
        let mut pairs = Vec::new();
        for (ti, t) in tracks.iter().enumerate() {
            // Where the face should be now: a small face that moves a face width between frames
            // would overlap its last box too little.
            let a = t.predicted(stamp.ts);
            for (si, s) in sightings.iter().enumerate() {
                let b = &s.face.rect;
                let iou = a.iou(b);
                let jump = ((a.x + a.w / 2.0 - b.x - b.w / 2.0).powi(2) + (a.y + a.h / 2.0 - b.y - b.h / 2.0).powi(2))
                    .sqrt()
                    / a.w.max(b.w).max(1.0);
                // An unembedded sighting (or a track with no shot yet) is followed by overlap alone.
                let sim = match (&s.embedding, t.fused.is_empty()) {
                    (Some(e), false) => Some(cosine(&t.fused, e)),
                    _ => None,
                };
                let c = &self.config;
                // A small face's box jitters by a quarter of its size from frame to frame: a centre
                // within half a face width of the prediction counts as overlapping too.
                let near = iou >= c.iou_min || jump <= 0.5;
                let (overlaps, far) = match sim {
                    Some(sim) => {
                        (near && sim >= c.overlap_similarity_min, sim >= c.similarity_min && jump <= c.max_jump)
                    }
                    None => (near, false),
                };
                if overlaps || far {
                    pairs.push((iou + sim.unwrap_or(0.0), ti, si));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut assigned: Vec<Option<usize>> = vec![None; sightings.len()];
        let mut track_taken = vec![false; tracks.len()];
        for (_, ti, si) in pairs {
            if assigned[si].is_none() && !track_taken[ti] {
                assigned[si] = Some(ti);
                track_taken[ti] = true;
            }
        }
        let mut touched = Vec::new();
        for (s, to) in sightings.into_iter().zip(assigned) {
            match to {
                Some(ti) => {
                    tracks[ti].add(stamp, s, keep);
                    touched.push(ti);
                }
                // A face nobody embedded cannot open a track (it was meant for one that has moved on).
                None if s.embedding.is_none() => self.unassigned += 1,
                None => {
                    tracks.push(Track::new(self.next_id, stamp, s, keep));
                    self.next_id += 1;
                    touched.push(tracks.len() - 1);
                }
            }
        }
        if self.config.announce {
            let c = &self.config;
            let unknown_after = Duration::from_secs_f32(c.unknown_after_s);
            for ti in touched {
                let t = &mut tracks[ti];
                if t.frames_seen < c.min_frames.max(c.announce_frames) {
                    continue;
                }
                let phase = if t.announced.is_some() { Phase::Update } else { Phase::Decision };
                let Some(ev) = t.event(camera, matcher, phase) else { continue };
                let now = (ev.event, ev.identity.clone());
                let confident =
                    ev.event == TrackDecision::Match || t.last.ts.saturating_sub(t.first.ts) >= unknown_after;
                let send = match &t.announced {
                    None => confident,
                    Some(before) => {
                        c.updates
                            && *before != now
                            && clearly_changed(before, &ev, matcher.threshold_for(t.small_face()), c.update_margin)
                    }
                };
                if send {
                    t.announced = Some(now);
                    out.push(t.emitted(ev, None));
                }
            }
        }
        out
    }

    /// Closes the camera's tracks not seen since `now - lost_after_s` (stream time).
    pub fn expire(&mut self, camera: &Arc<str>, now: Duration, matcher: &Matcher) -> Vec<Emitted> {
        let lost_after = Duration::from_secs_f32(self.config.lost_after_s);
        let Some(tracks) = self.cameras.get_mut(camera) else { return Vec::new() };
        let (lost, open): (Vec<Track>, Vec<Track>) =
            std::mem::take(tracks).into_iter().partition(|t| now.saturating_sub(t.last.ts) > lost_after);
        *tracks = open;
        self.finish(camera, lost, matcher)
    }

    /// Closes every track of `camera` (its source ended or the process is stopping).
    pub fn end_camera(&mut self, camera: &Arc<str>, matcher: &Matcher) -> Vec<Emitted> {
        let tracks = self.cameras.remove(camera).unwrap_or_default();
        self.finish(camera, tracks, matcher)
    }

    /// Closes every open track of every camera.
    pub fn close_all(&mut self, matcher: &Matcher) -> Vec<Emitted> {
        let cameras: Vec<Arc<str>> = self.cameras.keys().cloned().collect();
        cameras.iter().flat_map(|c| self.end_camera(c, matcher)).collect()
    }

    fn finish(&mut self, camera: &str, mut tracks: Vec<Track>, matcher: &Matcher) -> Vec<Emitted> {
        tracks.sort_by_key(|t| t.id);
        let mut out = Vec::new();
        for mut t in tracks {
            if t.frames_seen < self.config.min_frames {
                self.discarded += 1;
                continue;
            }
            if let Some(event) = t.event(camera, matcher, Phase::Final) {
                let crop = t.shots.first_mut().and_then(|s| s.crop.take());
                out.push(t.emitted(event, crop));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
