//! `farsight eval-visitors`: calibrates the visitor threshold and measures the clustering on an
//! LFW-layout dataset. Calibration folds (1-5): every image of their pairs is embedded, every two
//! images form a pair (same name: genuine, else impostor), and the threshold is the lowest cosine
//! whose false-accept rate is at most the target. Evaluation folds (6-10, never used to choose
//! anything): every image of their pairs arrives once, in the pairs file's order, as an unknown
//! track would, and is clustered online; pairwise and BCubed figures compare the visitors with
//! the people. At 112 px the aligned face is embedded by SFace; at a smaller size the aligned face
//! is downsampled to it (antialiased) and goes through the product's small-face path (the
//! restorer and embedder `farsight run` would use at that size, as `eval --restore shipped`).

use super::cluster::{Linkage, Online};
use super::scores::{score, ClusterScores};
use crate::align::{downsample, Alignment, ALIGNED_SIZE};
use crate::eval::{pick_centre_face, read_pairs, ImageRef, PairsError};
use crate::recognize::{RecognizeError, Recognizer};
use crate::source::images;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What to measure.
#[derive(Debug, Clone)]
pub struct VisitorEvalOptions {
    pub dataset: PathBuf,
    pub pairs: PathBuf,
    /// Folds the thresholds are calibrated on (1-5).
    pub calibrate_folds: Vec<usize>,
    /// Folds the clustering is measured on (6-10).
    pub folds: Vec<usize>,
    /// Probe sizes in aligned pixels (112: full resolution).
    pub sizes: Vec<u32>,
    /// False-accept rates to calibrate at; the clustering is measured at each.
    pub fars: Vec<f64>,
    pub threads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum VisitorEvalError {
    #[error(
        "dataset folder {0} does not exist: the visitor measurement needs LFW (DIR/<Name>/<Name>_NNNN.jpg, e.g. \
         ../shared/datasets/lfw) and its pairs file"
    )]
    NoDataset(PathBuf),
    #[error(transparent)]
    Pairs(#[from] PairsError),
    #[error("folds {0:?} select no pairs: check --folds and --calibrate-folds against the pairs file")]
    NoPairs(Vec<usize>),
    #[error("calibration folds {calibrate:?} and evaluation folds {evaluate:?} overlap: they must be disjoint")]
    Overlap { calibrate: Vec<usize>, evaluate: Vec<usize> },
    #[error("{failed} of {total} images could not be used (first: {first}): wrong dataset or models?")]
    TooManyFailures { failed: usize, total: usize, first: String },
}

/// A calibrated threshold.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub size: u32,
    pub far: f64,
    /// The lowest cosine with a false-accept rate at most `far` on the calibration folds.
    pub threshold: f32,
    /// Genuine pairs accepted at that threshold.
    pub tar: f64,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
}

/// One clustering measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterRow {
    pub size: u32,
    pub far: f64,
    pub threshold: f32,
    pub linkage: Linkage,
    #[serde(flatten)]
    pub scores: ClusterScores,
}

/// The whole measurement.
#[derive(Debug, Clone, Serialize)]
pub struct VisitorEvalReport {
    pub dataset: PathBuf,
    pub pairs_file: PathBuf,
    pub calibrate_folds: Vec<usize>,
    pub folds: Vec<usize>,
    pub embedder: String,
    /// Images skipped because no face was found at full resolution (or they could not be read).
    pub skipped_calibration: usize,
    pub skipped_evaluation: usize,
    pub calibration: Vec<Calibration>,
    pub clustering: Vec<ClusterRow>,
}

/// One image's result: its embeddings, `None` without a face, or what went wrong.
type Outcome = Result<Option<Embedded>, String>;

/// One image's embeddings at every size, with their quality.
struct Embedded {
    by_size: Vec<(u32, Vec<f32>, f32)>,
}

/// The images of the selected folds' pairs, once each, in the file's order.
fn images_of(pairs: &[crate::eval::Pair], folds: &[usize]) -> Vec<ImageRef> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for p in pairs.iter().filter(|p| folds.contains(&p.fold)) {
        for img in [&p.first, &p.second] {
            if seen.insert(img.clone()) {
                out.push(img.clone());
            }
        }
    }
    out
}

/// Runs the calibration and the measurement.
pub fn run(rec: &Recognizer, opts: &VisitorEvalOptions) -> Result<VisitorEvalReport, VisitorEvalError> {
    if !opts.dataset.is_dir() {
        return Err(VisitorEvalError::NoDataset(opts.dataset.clone()));
    }
    if opts.calibrate_folds.iter().any(|f| opts.folds.contains(f)) {
        return Err(VisitorEvalError::Overlap {
            calibrate: opts.calibrate_folds.clone(),
            evaluate: opts.folds.clone(),
        });
    }
    let pairs = read_pairs(&opts.pairs)?;
    let calib_images = images_of(&pairs, &opts.calibrate_folds);
    let eval_images = images_of(&pairs, &opts.folds);
    for (imgs, folds) in [(&calib_images, &opts.calibrate_folds), (&eval_images, &opts.folds)] {
        if imgs.is_empty() {
            return Err(VisitorEvalError::NoPairs(folds.clone()));
        }
    }
    let calib = embed_all(rec, opts, &calib_images, "calibration")?;
    let evald = embed_all(rec, opts, &eval_images, "evaluation")?;
    let mut calibration = Vec::new();
    let mut clustering = Vec::new();
    for &size in &opts.sizes {
        let cal_set: Vec<(&str, &[f32])> =
            calib.iter().filter_map(|(img, e)| Some((img.name.as_str(), vector_at(e.as_ref()?, size)?.0))).collect();
        let (genuine, mut impostor) = all_pair_scores(&cal_set);
        impostor.sort_by(|a, b| b.total_cmp(a));
        for &far in &opts.fars {
            let threshold = threshold_at_far(&impostor, far);
            let tar = genuine.iter().filter(|&&s| s >= threshold).count() as f64 / genuine.len().max(1) as f64;
            calibration.push(Calibration {
                size,
                far,
                threshold,
                tar,
                genuine_pairs: genuine.len(),
                impostor_pairs: impostor.len(),
            });
            for linkage in [Linkage::Centroid, Linkage::Max] {
                let mut online = Online::new(linkage, threshold);
                let mut labels = Vec::new();
                let mut assigned = Vec::new();
                for (img, e) in &evald {
                    let Some((v, q)) = e.as_ref().and_then(|e| vector_at(e, size)) else { continue };
                    labels.push(img.name.as_str());
                    let c = online.push(v.to_vec(), q);
                    // An unusable embedding is its own singleton.
                    assigned.push(if c == usize::MAX { usize::MAX - labels.len() } else { c });
                }
                clustering.push(ClusterRow { size, far, threshold, linkage, scores: score(&labels, &assigned) });
            }
        }
    }
    Ok(VisitorEvalReport {
        dataset: opts.dataset.clone(),
        pairs_file: opts.pairs.clone(),
        calibrate_folds: opts.calibrate_folds.clone(),
        folds: opts.folds.clone(),
        embedder: format!("{} (sha256 {})", rec.embedder().id().name, &rec.embedder().id().sha256[..12]),
        skipped_calibration: calib.iter().filter(|(_, e)| e.is_none()).count(),
        skipped_evaluation: evald.iter().filter(|(_, e)| e.is_none()).count(),
        calibration,
        clustering,
    })
}

fn vector_at(e: &Embedded, size: u32) -> Option<(&[f32], f32)> {
    e.by_size.iter().find(|(s, _, _)| *s == size).map(|(_, v, q)| (v.as_slice(), *q))
}

/// Genuine and impostor cosines of every two items.
fn all_pair_scores(items: &[(&str, &[f32])]) -> (Vec<f32>, Vec<f32>) {
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for (i, (a, va)) in items.iter().enumerate() {
        for (b, vb) in &items[i + 1..] {
            let s = crate::embed::cosine(va, vb);
            if a == b {
                genuine.push(s);
            } else {
                impostor.push(s);
            }
        }
    }
    (genuine, impostor)
}

/// The lowest threshold at which at most `far` of the impostors (sorted best first) score at or
/// above it: just above the impostor score ranked `floor(far * n)`.
fn threshold_at_far(impostor_desc: &[f32], far: f64) -> f32 {
    let allowed = (far * impostor_desc.len() as f64).floor() as usize;
    match impostor_desc.get(allowed) {
        Some(&s) => next_up(s),
        None => f32::NEG_INFINITY,
    }
}

/// The smallest f32 above `x` (so that `score >= threshold` excludes `x` itself).
fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    let next = if x == 0.0 {
        1
    } else if x > 0.0 {
        bits + 1
    } else {
        bits - 1
    };
    f32::from_bits(next)
}

/// Embeds every image at every size on `opts.threads` threads, in the images' order; an image
/// whose face is not found at full resolution is `None` (counted in the report).
fn embed_all(
    rec: &Recognizer,
    opts: &VisitorEvalOptions,
    imgs: &[ImageRef],
    what: &str,
) -> Result<Vec<(ImageRef, Option<Embedded>)>, VisitorEvalError> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..imgs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(img) = imgs.get(i) else { break };
                let r = embed_one(rec, &img.path(&opts.dataset), &opts.sizes);
                out.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(imgs.len() / 10 + 1) {
                    log::info!("eval-visitors: {what}: {n}/{} images", imgs.len());
                }
            });
        }
    });
    let results = out.into_inner().unwrap_or_else(|p| p.into_inner());
    let failures: Vec<String> = results.iter().filter_map(|r| r.as_ref()?.as_ref().err().cloned()).collect();
    if failures.len() * 100 > imgs.len() {
        return Err(VisitorEvalError::TooManyFailures {
            failed: failures.len(),
            total: imgs.len(),
            first: failures[0].clone(),
        });
    }
    for f in &failures {
        log::warn!("eval-visitors: skipped {f}");
    }
    Ok(imgs.iter().cloned().zip(results.into_iter().map(|r| r.and_then(Result::ok).flatten())).collect())
}

/// One image: its labelled (centre) face aligned to 112, embedded at every size.
fn embed_one(rec: &Recognizer, path: &std::path::Path, sizes: &[u32]) -> Result<Option<Embedded>, String> {
    let err = |e: &dyn std::error::Error| format!("{}: {e}", path.display());
    let img = images::load(path, &Default::default()).map_err(|e| format!("{}: {}", path.display(), e))?;
    let faces = rec.detector().and_then(|d| d.detect(&img)).map_err(|e| err(&e))?;
    let Some(face) = pick_centre_face(&faces, img.width(), img.height()) else { return Ok(None) };
    let alignment = Alignment::from_landmarks(&face.landmarks).ok_or_else(|| err(&RecognizeError::Degenerate))?;
    let aligned = alignment.warp(&img, ALIGNED_SIZE).ok_or_else(|| err(&RecognizeError::Degenerate))?;
    let mut by_size = Vec::new();
    for &size in sizes {
        let (v, q) = if size >= ALIGNED_SIZE {
            let v = rec.embedder().embed(&aligned).map_err(|e| err(&e))?;
            (v, crate::track::quality(&face, ALIGNED_SIZE as f32, &aligned))
        } else {
            let low = downsample(&aligned, size);
            let (v, _) = rec.embed_native(&low, size as f32).map_err(|e| err(&e))?;
            (v, crate::track::quality(&face, size as f32, &low))
        };
        by_size.push((size, v, q));
    }
    Ok(Some(Embedded { by_size }))
}

/// The report as Markdown tables.
pub fn format_tables(r: &VisitorEvalReport) -> String {
    let mut out = format!(
        "calibration on folds {:?} (every pair of their images; {} images skipped: no face)\n\n\
         | size | FAR | threshold | TAR | genuine pairs | impostor pairs |\n|---:|---:|---:|---:|---:|---:|\n",
        r.calibrate_folds, r.skipped_calibration
    );
    for c in &r.calibration {
        out.push_str(&format!(
            "| {} | {:e} | {:.4} | {:.3} | {} | {} |\n",
            c.size, c.far, c.threshold, c.tar, c.genuine_pairs, c.impostor_pairs
        ));
    }
    let mut by: BTreeMap<(u32, String), Vec<&ClusterRow>> = BTreeMap::new();
    for row in &r.clustering {
        by.entry((row.size, format!("{:e}", row.far))).or_default().push(row);
    }
    out.push_str(&format!(
        "\nonline clustering of folds {:?} ({} images skipped: no face)\n\n\
         | size | FAR | threshold | linkage | images | people | visitors | pairwise P | pairwise R | BCubed P | BCubed R | BCubed F |\n\
         |---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        r.folds, r.skipped_evaluation
    ));
    for rows in by.values() {
        for row in rows {
            let s = &row.scores;
            out.push_str(&format!(
                "| {} | {:e} | {:.4} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                row.size,
                row.far,
                row.threshold,
                row.linkage.name(),
                s.items,
                s.people,
                s.clusters,
                s.pairwise_precision,
                s.pairwise_recall,
                s.bcubed_precision,
                s.bcubed_recall,
                s.bcubed_f
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_admits_at_most_the_allowed_impostors() {
        let impostor: Vec<f32> = (0..1000).rev().map(|i| i as f32 / 1000.0).collect();
        let t = threshold_at_far(&impostor, 1e-2);
        let accepted = impostor.iter().filter(|&&s| s >= t).count();
        assert_eq!(accepted, 10, "threshold {t}");
        assert_eq!(threshold_at_far(&[], 1e-3), f32::NEG_INFINITY);
    }

    #[test]
    fn images_are_taken_once_in_file_order() {
        let text = "2 1\nA 1 2\nB 1 C 1\nA 1 3\nB 1 D 1\n";
        let pairs = crate::eval::parse_pairs(text, std::path::Path::new("p"));
        let imgs = images_of(&pairs.unwrap(), &[2]);
        let names: Vec<String> = imgs.iter().map(|i| format!("{}{}", i.name, i.number)).collect();
        assert_eq!(names, ["A1", "A3", "B1", "D1"]);
    }
}
