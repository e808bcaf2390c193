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
use crate::event::{BestShot, Phase, TrackDecision, TrackEvent, UNKNOWN};
use crate::frame::unix_ms;
use crate::gallery::{Candidate, Snapshot};
use crate::recognize::Observation;
use image::{GrayImage, RgbImage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The most best shots a track keeps.
pub const MAX_BEST_SHOTS: usize = 8;

/// One face of one frame, ready for tracking.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub observation: Observation,
    /// See [`quality`].
    pub quality: f32,
    /// The aligned 112x112 face, kept only when crops are saved.
    pub crop: Option<RgbImage>,
}

/// When and where a frame was taken.
#[derive(Debug, Clone, Copy)]
pub struct FrameStamp {
    pub seq: u64,
    pub ts: Duration,
    pub wall: SystemTime,
}

/// How the gallery is searched: the snapshot, the threshold and the candidates listed.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub snapshot: Arc<Snapshot>,
    pub threshold: f32,
    pub top_k: usize,
}

impl Matcher {
    /// The decision for an embedding, with the identity and the candidates.
    fn decide(&self, embedding: &[f32]) -> (TrackDecision, String, Option<f32>, Vec<Candidate>) {
        let candidates = self.snapshot.search(embedding, self.top_k);
        let best = candidates.first();
        let score = best.map(|c| c.score);
        match best {
            Some(c) if c.score >= self.threshold => (TrackDecision::Match, c.name.clone(), score, candidates),
            _ => (TrackDecision::Unknown, UNKNOWN.to_owned(), score, candidates),
        }
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
    observation: Observation,
    crop: Option<RgbImage>,
}

#[derive(Debug)]
struct Track {
    id: u64,
    first: FrameStamp,
    last: FrameStamp,
    last_face: Face,
    frames_seen: u32,
    /// Best first, at most `best_shots`.
    shots: heapless::Vec<Shot, MAX_BEST_SHOTS>,
    fused: Vec<f32>,
    /// The decision last announced by an update event.
    announced: Option<(TrackDecision, String)>,
}

impl Track {
    fn new(id: u64, stamp: FrameStamp, s: Sighting) -> Self {
        let fused = s.observation.embedding.clone();
        let last_face = s.observation.face;
        let mut shots = heapless::Vec::new();
        // Capacity is at least 1, so the first shot always fits.
        let _ = shots.push(Shot { quality: s.quality, frame: stamp.seq, observation: s.observation, crop: s.crop });
        Self { id, first: stamp, last: stamp, last_face, frames_seen: 1, shots, fused, announced: None }
    }

    fn add(&mut self, stamp: FrameStamp, s: Sighting, keep: usize) {
        if stamp.ts >= self.last.ts {
            self.last = stamp;
            self.last_face = s.observation.face;
        }
        self.frames_seen += 1;
        let shot = Shot { quality: s.quality, frame: stamp.seq, observation: s.observation, crop: s.crop };
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

    /// Quality-weighted mean of the best shots' embeddings, re-normalised.
    fn fuse(&mut self) {
        let dim = self.shots.first().map_or(0, |s| s.observation.embedding.len());
        let mut acc = vec![0.0f32; dim];
        for s in &self.shots {
            let w = s.quality.max(1e-3);
            for (a, v) in acc.iter_mut().zip(&s.observation.embedding) {
                *a += w * v;
            }
        }
        // All-zero only if every shot's embedding was zero; keep the previous fusion then.
        if let Some(v) = normalize(acc) {
            self.fused = v;
        }
    }

    fn event(&self, camera: &str, matcher: &Matcher, phase: Phase) -> Option<TrackEvent> {
        let best = self.shots.first()?;
        let (decision, identity, score, candidates) = matcher.decide(&self.fused);
        let o = &best.observation;
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
                rect: o.face.rect,
                face_px: o.face.rect.w,
                aligned_px: o.aligned_px,
                restored: o.restorer.is_some(),
                restorer: o.restorer.clone(),
                detector_score: o.face.score,
                quality: best.quality,
                crop: None,
            },
            first_seen_ms: unix_ms(self.first.wall),
            last_seen_ms: unix_ms(self.last.wall),
            first_seen_s: self.first.ts.as_secs_f64(),
            last_seen_s: self.last.ts.as_secs_f64(),
            frames_seen: self.frames_seen,
            frames_used: self.shots.len() as u32,
        })
    }
}

/// A closed or updated track's event, with the best shot's aligned face when crops are kept.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub event: TrackEvent,
    pub crop: Option<RgbImage>,
}

/// Open tracks of every camera.
#[derive(Debug)]
pub struct Tracker {
    config: TrackConfig,
    cameras: HashMap<Arc<str>, Vec<Track>>,
    next_id: u64,
    /// Tracks closed with fewer than `min_frames` sightings (no event).
    pub discarded: u64,
}

impl Tracker {
    pub fn new(config: TrackConfig) -> Self {
        Self { config, cameras: HashMap::new(), next_id: 1, discarded: 0 }
    }

    /// New settings (a reload): tracks opened from now on, and every later decision, use them.
    pub fn reconfigure(&mut self, config: TrackConfig) {
        self.config = config;
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
            for (si, s) in sightings.iter().enumerate() {
                let rect = &s.observation.face.rect;
                let iou = t.last_face.rect.iou(rect);
                let sim = cosine(&t.fused, &s.observation.embedding);
                let (a, b) = (t.last_face.rect, rect);
                let jump = ((a.x + a.w / 2.0 - b.x - b.w / 2.0).powi(2) + (a.y + a.h / 2.0 - b.y - b.h / 2.0).powi(2))
                    .sqrt()
                    / a.w.max(b.w).max(1.0);
                let overlaps = iou >= self.config.iou_min && sim >= self.config.overlap_similarity_min;
                if overlaps || (sim >= self.config.similarity_min && jump <= self.config.max_jump) {
                    pairs.push((iou + sim, ti, si));
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
                None => {
                    tracks.push(Track::new(self.next_id, stamp, s));
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
                    Some(before) => c.updates && *before != now,
                };
                if send {
                    t.announced = Some(now);
                    out.push(Emitted { event: ev, crop: None });
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
                out.push(Emitted { event, crop });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
