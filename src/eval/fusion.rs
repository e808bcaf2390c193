//! `farsight eval-fusion`: what fusing a track's frames buys at a small face size, against a
//! single frame. For every pair of the selected folds the reference is the pair's first image at
//! full resolution (SFace, the gallery's template format, as in `farsight eval`); the probe is a
//! *track* of up to K frames: the pair's second image, then other photos of that second person
//! among the images of the selected folds (never the reference image), in a seeded random order.
//! Each frame is an independent degradation of a different photo to the probe size
//! ([`super::degrade`]), embedded as `farsight run` embeds a face of that size (the config's
//! small-face path) and given the quality [`crate::track::quality`] gives it in `run`. Each
//! track is scored against the reference by several methods (the pair's own frame, the best
//! frame, the tracker's fusion [`crate::track::fuse`], and alternatives) at every track length
//! 1..K, over all pairs and over the pairs whose track has all K frames.

use super::degrade::{seed_of, Draw, Rng, DESCRIPTION};
use super::metrics::ScoredPair;
use super::probe::{self, LabelledFace};
use super::{
    face_and_frame, first_pairs_per_fold, locate_all, pairs, parallel, score_row, usable, EvalError, EvalRestore,
    ImageRef, Mode, Pair, Row, SHIPPED,
};
use crate::embed::{cosine, EmbedderKind, Embedding};
use crate::recognize::{RecognizeError, Recognizer};
use crate::track::{fuse, quality};
use image::RgbImage;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Which photos make a probe track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Photos {
    /// The pair's second image, then other photos of that person (the measurement).
    Different,
    /// The pair's second image K times, one degradation: every fusion must equal the single
    /// frame (a check of the harness, not a measurement).
    Repeat,
}

/// How a track is turned into one embedding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The pair's own second image alone (the track's first frame).
    Single,
    /// The track's highest-quality frame.
    Best,
    /// [`crate::track::fuse`] over the best `best_shots` frames, exactly as the tracker does.
    Tracker,
    /// Unweighted mean of the best shots.
    Mean,
    /// Mean of the best shots weighted by quality^p.
    QualityPower(f32),
    /// The tracker's fusion after dropping the shot least consistent with the others (three
    /// shots or more): the one with the lowest cosine to the fusion of the rest.
    DropOutlier,
}

impl Method {
    pub fn name(self) -> String {
        match self {
            Method::Single => "single".into(),
            Method::Best => "best-frame".into(),
            Method::Tracker => "tracker".into(),
            Method::Mean => "mean".into(),
            Method::QualityPower(p) => format!("quality^{p}"),
            Method::DropOutlier => "tracker-drop-outlier".into(),
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct FusionOptions {
    pub dataset: PathBuf,
    pub pairs: PathBuf,
    /// 1-based folds; the tracks' photos come from these folds' images.
    pub folds: Vec<usize>,
    /// Probe face size (aligned pixels in crop mode, face box width in frame mode).
    pub size: u32,
    pub modes: Vec<Mode>,
    /// Longest track (K).
    pub frames: usize,
    /// Shots a track keeps (`track.best_shots`): every fusion method fuses at most these.
    pub best_shots: usize,
    /// Exponents p of the quality^p alternatives.
    pub powers: Vec<f32>,
    pub seed: u64,
    pub photos: Photos,
    pub max_pairs_per_fold: Option<usize>,
    pub threads: usize,
    pub progress: bool,
}

/// One row: a method at a track length over a subset of the pairs, with `farsight eval`'s
/// metrics (`restore` "shipped": the config's small-face path).
#[derive(Debug, Clone, Serialize)]
pub struct FusionRow {
    pub method: String,
    /// The longest track allowed (pairs with fewer photos use what they have).
    pub frames: usize,
    /// `all` pairs, or `full`: the pairs whose track has all K frames.
    pub subset: &'static str,
    /// Frames the method drew on, on average over the pairs (before the best-shots cap): frames
    /// whose face the detector missed are left out of a track, as the tracker never sees them.
    pub mean_frames: f64,
    /// The same for the genuine and the impostor pairs apart (with `all`, genuine tracks are
    /// longer: an impostor pair's second person often has one photo in the folds).
    pub genuine_mean_frames: f64,
    pub impostor_mean_frames: f64,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    #[serde(flatten)]
    pub metrics: Row,
}

/// The whole measurement.
#[derive(Debug, Clone, Serialize)]
pub struct FusionReport {
    pub dataset: PathBuf,
    pub pairs_file: PathBuf,
    pub folds: Vec<usize>,
    pub protocol: &'static str,
    pub degradation: &'static str,
    pub miss_policy: &'static str,
    pub size: u32,
    pub frames: usize,
    pub best_shots: usize,
    pub seed: u64,
    pub photos: Photos,
    pub detector: String,
    pub embedder: String,
    pub small_face_path: Option<String>,
    /// Distinct images embedded (references and probe frames).
    pub images: usize,
    /// Pairs skipped because the reference or the pair's second image could not be used.
    pub pairs_skipped: usize,
    /// Pairs by the number of frames their track has (index 0: one frame).
    pub track_lengths: Vec<usize>,
    pub rows: Vec<FusionRow>,
}

/// One degraded frame of a probe track.
#[derive(Debug, Clone)]
struct Frame {
    embedding: Embedding,
    kind: EmbedderKind,
    quality: f32,
    /// The detector missed the face (frame mode: in the shrunk frame; crop mode: at full
    /// resolution). It is still embedded, with quality 0, by eval's miss policy, but a track
    /// leaves it out (the tracker never sees it) unless it has nothing else.
    missed: bool,
}

#[derive(Debug, Default)]
struct Computed {
    reference: Option<Embedding>,
    frames: HashMap<Mode, Frame>,
}

/// Runs the measurement.
pub fn run(rec: &Recognizer, opts: &FusionOptions) -> Result<FusionReport, EvalError> {
    if !opts.dataset.is_dir() {
        return Err(EvalError::NoDataset(opts.dataset.clone()));
    }
    let k = opts.frames.max(1);
    let selected =
        first_pairs_per_fold(pairs::select(pairs::read(&opts.pairs)?, &opts.folds)?, opts.max_pairs_per_fold)?;
    // The photos of each person among the images of the selected folds (all their pairs, even
    // when --max-pairs-per-fold keeps only some: those images are the folds' all the same).
    let all_pairs = pairs::select(pairs::read(&opts.pairs)?, &opts.folds)?;
    let mut photos: BTreeMap<&str, BTreeSet<&ImageRef>> = BTreeMap::new();
    for p in &all_pairs {
        for img in [&p.first, &p.second] {
            photos.entry(img.name.as_str()).or_default().insert(img);
        }
    }
    let tracks: Vec<Vec<ImageRef>> = selected.iter().map(|p| track_of(p, &photos, k, opts)).collect();

    let references: BTreeSet<ImageRef> = selected.iter().map(|p| p.first.clone()).collect();
    let probes: BTreeSet<ImageRef> = tracks.iter().flatten().cloned().collect();
    let images: Vec<ImageRef> = references.union(&probes).cloned().collect();

    let (located, mean) = locate_all(rec, &opts.dataset, opts.threads, opts.progress, &images)?;

    let results = parallel(opts.threads, opts.progress, "embedding", &images, |img| {
        let (face, frame) = face_and_frame(&located, &mean, img, &opts.dataset)?;
        let modes: &[Mode] = if probes.contains(img) { &opts.modes } else { &[] };
        compute(rec, &frame, &face, img, references.contains(img), modes, opts)
            .map_err(|e| format!("{}: {}", img.path(&opts.dataset).display(), crate::error_chain(&e)))
    })?;
    let ok: HashMap<&ImageRef, &Computed> = usable(&results)?;

    // Pairs kept: reference and the pair's own second image usable; other frames that failed
    // are left out of their track.
    let kept: Vec<(&Pair, Vec<&ImageRef>)> = selected
        .iter()
        .zip(&tracks)
        .filter(|(p, _)| ok.get(&p.first).is_some_and(|c| c.reference.is_some()) && ok.contains_key(&p.second))
        .map(|(p, t)| (p, t.iter().filter(|i| ok.contains_key(i)).collect()))
        .collect();
    let pairs_skipped = selected.len() - kept.len();
    let mut track_lengths = vec![0; k];
    for (_, t) in &kept {
        track_lengths[t.len().clamp(1, k) - 1] += 1;
    }

    let mut methods = vec![Method::Single, Method::Best, Method::Tracker, Method::Mean];
    methods.extend(opts.powers.iter().map(|&p| Method::QualityPower(p)));
    methods.push(Method::DropOutlier);
    let mut rows = Vec::new();
    for &mode in &opts.modes {
        for subset in ["all", "full"] {
            for n in 1..=k {
                for &method in &methods {
                    let mut scored = Vec::new();
                    let (mut seen, mut small_face, mut misses) = (0usize, 0usize, 0usize);
                    // Frames fused and pairs, impostor [0] and genuine [1].
                    let (mut fused, mut count) = ([0usize; 2], [0usize; 2]);
                    for (p, t) in &kept {
                        if subset == "full" && t.len() < k {
                            continue;
                        }
                        let frames: Vec<&Frame> = t.iter().take(n).filter_map(|i| ok[i].frames.get(&mode)).collect();
                        let Some(reference) = ok[&p.first].reference.as_ref() else { continue };
                        let Some((e, used)) = score_track(method, &frames, opts.best_shots) else { continue };
                        seen += frames.len();
                        fused[usize::from(p.genuine)] += used;
                        count[usize::from(p.genuine)] += 1;
                        small_face += frames.iter().filter(|f| f.kind != EmbedderKind::Sface).count();
                        misses += frames.iter().filter(|f| f.missed).count();
                        scored.push(ScoredPair {
                            fold: p.fold,
                            genuine: p.genuine,
                            score: cosine(&e, reference) as f64,
                        });
                    }
                    let mut metrics = score_row(mode, opts.size, EvalRestore::Shipped, SHIPPED, &scored, misses, seen);
                    metrics.small_face_probes = small_face;
                    let mean = |f: usize, n: usize| if n == 0 { 0.0 } else { f as f64 / n as f64 };
                    rows.push(FusionRow {
                        method: method.name(),
                        frames: n,
                        subset,
                        mean_frames: mean(fused[0] + fused[1], count[0] + count[1]),
                        genuine_mean_frames: mean(fused[1], count[1]),
                        impostor_mean_frames: mean(fused[0], count[0]),
                        genuine_pairs: count[1],
                        impostor_pairs: count[0],
                        metrics,
                    });
                }
            }
        }
    }
    Ok(FusionReport {
        dataset: opts.dataset.clone(),
        pairs_file: opts.pairs.clone(),
        folds: opts.folds.clone(),
        protocol: "reference = first image of each pair at full resolution (SFace); probe = a track of up to K \
                   frames: the pair's second image, then other photos of that person from the images of the \
                   selected folds (never the reference), each its own random degradation to the probe size, \
                   embedded as `farsight run` would (the config's small-face path) with run's track quality",
        degradation: DESCRIPTION,
        miss_policy: "a frame whose face the detector misses (frame mode: in the shrunk frame; crop mode: at full \
                      resolution) is left out of the track, as the tracker never sees it; the `single` method (the \
                      pair's own frame) and a track whose every frame was missed use eval's policy instead: aligned \
                      from where the face is known to be (full-resolution landmarks scaled down; the dataset's mean \
                      face position in crop mode), quality 0",
        size: opts.size,
        frames: k,
        best_shots: opts.best_shots,
        seed: opts.seed,
        photos: opts.photos,
        detector: rec.detector_label(),
        embedder: format!("{} (sha256 {})", rec.embedder().id().name, &rec.embedder().id().sha256[..12]),
        small_face_path: rec.small_face_embedder()?.map(|(k, e)| {
            format!("{} below {} aligned px (sha256 {})", k.name(), rec.small_face_below(), &e.id().sha256[..12])
        }),
        images: images.len(),
        pairs_skipped,
        track_lengths,
        rows,
    })
}

/// The pair's probe track: its second image, then up to K - 1 other photos of that person
/// (never the pair's reference image) in an order drawn from the seed and the pair.
fn track_of(p: &Pair, photos: &BTreeMap<&str, BTreeSet<&ImageRef>>, k: usize, opts: &FusionOptions) -> Vec<ImageRef> {
    if opts.photos == Photos::Repeat {
        return vec![p.second.clone(); k];
    }
    let mut others: Vec<&ImageRef> = photos
        .get(p.second.name.as_str())
        .map(|s| s.iter().copied().filter(|i| **i != p.second && **i != p.first).collect())
        .unwrap_or_default();
    let (a, b) = (p.first.number.to_le_bytes(), p.second.number.to_le_bytes());
    let mut rng = Rng::new(seed_of(&[
        &opts.seed.to_le_bytes(),
        b"track",
        p.first.name.as_bytes(),
        &a,
        p.second.name.as_bytes(),
        &b,
    ]));
    // Fisher-Yates.
    for i in (1..others.len()).rev() {
        others.swap(i, rng.below(i + 1));
    }
    std::iter::once(p.second.clone()).chain(others.into_iter().take(k - 1).cloned()).collect()
}

/// The reference embedding (when wanted) and one degraded frame per mode of one image.
fn compute(
    rec: &Recognizer,
    img: &RgbImage,
    face: &LabelledFace,
    at: &ImageRef,
    want_reference: bool,
    modes: &[Mode],
    opts: &FusionOptions,
) -> Result<Computed, RecognizeError> {
    let mut out = Computed::default();
    if want_reference {
        out.reference = probe::process(rec, img, face, true, &[], &[], &[], false)?.reference;
    }
    for &mode in modes {
        let number = at.number.to_le_bytes();
        let draw = Draw::sample(seed_of(&[
            &opts.seed.to_le_bytes(),
            mode.name().as_bytes(),
            &opts.size.to_le_bytes(),
            at.name.as_bytes(),
            &number,
        ]));
        let frame = match mode {
            Mode::Crop => {
                let low = draw.crop(img, face, opts.size).ok_or(RecognizeError::Degenerate)?;
                let (embedding, kind) = rec.embed_native(&low, opts.size as f32)?;
                let detected = crate::detect::Face { rect: face.rect, score: face.score, landmarks: face.landmarks };
                Frame { embedding, kind, quality: quality(&detected, opts.size as f32, &low), missed: !face.detected }
            }
            Mode::Frame => {
                // As a worker of `farsight run` does with a detected face: prepare, quality,
                // route (restore + embed).
                let shrunk = probe::shrink_and_detect(rec, img, face, opts.size, Some(&draw))?;
                let prepared = rec.prepare(&shrunk.canvas, &shrunk.face)?;
                let q = quality(&shrunk.face, prepared.aligned_px, &prepared.native);
                let (obs, _) = rec.finish(&shrunk.canvas, &prepared)?;
                Frame { embedding: obs.embedding, kind: obs.embedder, quality: q, missed: shrunk.detected.is_none() }
            }
        };
        out.frames.insert(mode, frame);
    }
    Ok(out)
}

/// One shot as the fusion sees it.
#[derive(Debug, Clone, Copy)]
pub struct Shot<'a> {
    pub quality: f32,
    pub embedding: &'a [f32],
}

/// The shots a track keeps: the best `best_shots` by quality, best first (ties: earlier first),
/// as the tracker ranks them.
pub fn best_shots<'a>(frames: &[Shot<'a>], best_shots: usize) -> Vec<Shot<'a>> {
    let mut kept = frames.to_vec();
    kept.sort_by(|a, b| b.quality.total_cmp(&a.quality));
    kept.truncate(best_shots.max(1));
    kept
}

/// The shot least consistent with the others: lowest cosine to the fusion of the rest. `None`
/// with fewer than three shots (with two there is no majority to side with).
pub fn least_consistent(shots: &[Shot<'_>]) -> Option<usize> {
    if shots.len() < 3 {
        return None;
    }
    (0..shots.len())
        .map(|i| {
            let rest = shots.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, s)| (s.quality, s.embedding));
            (i, fuse(rest).map_or(f32::NEG_INFINITY, |f| cosine(&f, shots[i].embedding)))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// A track's embedding by `method`, from its frames in track order.
pub fn fuse_by(method: Method, frames: &[Shot<'_>], keep: usize) -> Option<Vec<f32>> {
    let first = frames.first()?;
    let kept = best_shots(frames, keep);
    match method {
        Method::Single => Some(first.embedding.to_vec()),
        Method::Best => Some(kept[0].embedding.to_vec()),
        Method::Tracker => fuse(kept.iter().map(|s| (s.quality, s.embedding))),
        Method::Mean => fuse(kept.iter().map(|s| (1.0, s.embedding))),
        Method::QualityPower(p) => fuse(kept.iter().map(|s| (s.quality.max(0.0).powf(p), s.embedding))),
        Method::DropOutlier => {
            let drop = least_consistent(&kept);
            fuse(kept.iter().enumerate().filter(|(i, _)| Some(*i) != drop).map(|(_, s)| (s.quality, s.embedding)))
        }
    }
}

/// A track's embedding by `method` and the number of frames it drew on. `single` is the pair's
/// own frame under eval's miss policy; every other method sees what the tracker would: the frames
/// whose face the detector found (all of them, under the miss policy, if it found none).
fn score_track<'a>(method: Method, frames: &[&'a Frame], keep: usize) -> Option<(Vec<f32>, usize)> {
    let shot = |f: &&'a Frame| Shot { quality: f.quality, embedding: f.embedding.as_slice() };
    if method == Method::Single {
        return Some((frames.first()?.embedding.clone(), 1));
    }
    let mut shots: Vec<Shot<'_>> = frames.iter().filter(|f| !f.missed).map(shot).collect();
    if shots.is_empty() {
        shots = frames.iter().map(shot).collect();
    }
    Some((fuse_by(method, &shots, keep)?, shots.len()))
}

/// The report as a fixed-width table for the terminal.
pub fn format_table(report: &FusionReport) -> String {
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    let mut s = format!(
        "{:<6} {:>3} {:<22} {:>6} {:>6} {:>5} {:>6} {:>7} {:>13} {:>9} {:>8} {:>9}\n",
        "mode",
        "px",
        "method",
        "frames",
        "subset",
        "pairs",
        "mean n",
        "d'",
        "accuracy",
        "TAR@1e-3",
        "thr@1e-3",
        "det.miss"
    );
    for r in &report.rows {
        let m = &r.metrics;
        let acc = match (m.accuracy, m.accuracy_std) {
            (Some(a), Some(sd)) => format!("{a:.4}±{sd:.4}"),
            _ => "-".to_owned(),
        };
        s.push_str(&format!(
            "{:<6} {:>3} {:<22} {:>6} {:>6} {:>5} {:>6.2} {:>7} {:>13} {:>9} {:>8} {:>9}\n",
            m.mode.name(),
            m.size,
            r.method,
            r.frames,
            r.subset,
            m.pairs,
            r.mean_frames,
            f(m.d_prime),
            acc,
            f(m.tar_at_far_1e_3),
            f(m.threshold_at_far_1e_3),
            format!("{}/{}", m.detector_misses, m.probe_images),
        ));
    }
    let lengths: Vec<String> = report.track_lengths.iter().enumerate().map(|(i, n)| format!("{}:{n}", i + 1)).collect();
    s.push_str(&format!(
        "pairs by track length {}; pairs skipped: {}; images embedded: {}\n",
        lengths.join(" "),
        report.pairs_skipped,
        report.images
    ));
    s
}

/// Writes the report as JSON.
pub fn write_json(report: &FusionReport, path: &Path) -> Result<(), EvalError> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").map_err(|source| EvalError::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::{normalize, EMBEDDING_DIM};

    fn unit(i: usize, mix: f32) -> Vec<f32> {
        let mut v = vec![0.0; EMBEDDING_DIM];
        v[i] = 1.0;
        v[(i + 1) % EMBEDDING_DIM] = mix;
        normalize(v).unwrap()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn every_method_of_identical_frames_is_the_single_frame() {
        let e = unit(3, 0.4);
        let frames = vec![Shot { quality: 0.3, embedding: &e }; 5];
        let methods = [
            Method::Single,
            Method::Best,
            Method::Tracker,
            Method::Mean,
            Method::QualityPower(2.0),
            Method::DropOutlier,
        ];
        for m in methods {
            assert!(close(&fuse_by(m, &frames, 5).unwrap(), &e), "{}", m.name());
        }
        assert!(fuse_by(Method::Tracker, &[], 5).is_none());
    }

    #[test]
    fn best_frame_is_the_highest_quality_and_single_the_first() {
        let (a, b, c) = (unit(0, 0.0), unit(1, 0.0), unit(2, 0.0));
        let frames = [
            Shot { quality: 0.2, embedding: &a },
            Shot { quality: 0.9, embedding: &b },
            Shot { quality: 0.5, embedding: &c },
        ];
        assert_eq!(fuse_by(Method::Single, &frames, 5).unwrap(), a);
        assert_eq!(fuse_by(Method::Best, &frames, 5).unwrap(), b);
        // The tracker keeps only the best shots: with one, its fusion is the best frame.
        assert!(close(&fuse_by(Method::Tracker, &frames, 1).unwrap(), &b));
    }

    #[test]
    fn the_outlier_is_the_frame_unlike_the_others() {
        let (a1, a2, a3, odd) = (unit(0, 0.1), unit(0, 0.2), unit(0, 0.3), unit(9, 0.0));
        let shots = [
            Shot { quality: 0.5, embedding: &a1 },
            Shot { quality: 0.5, embedding: &odd },
            Shot { quality: 0.5, embedding: &a2 },
            Shot { quality: 0.5, embedding: &a3 },
        ];
        assert_eq!(least_consistent(&shots), Some(1));
        assert_eq!(least_consistent(&shots[..2]), None);
        let dropped = fuse_by(Method::DropOutlier, &shots, 5).unwrap();
        assert!(dropped[9].abs() < 1e-6, "the odd frame's axis is gone");
    }
}
