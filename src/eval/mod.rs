//! `farsight eval`: the face-verification protocol on any dataset in the LFW layout. For every
//! pair, the first image is the *probe* (degraded to N px, then restored) and the second the
//! *reference* (full resolution, as an enrolled gallery photo would be): the question is whether a
//! tiny face can be matched against a good photo. Each (mode, size, restorer, embedder) row
//! reports d', ROC AUC, LFW-style accuracy (threshold chosen on the other folds), TAR at
//! FAR=1e-3, the thresholds a calibration needs, and how often the detector missed the face.
//! References are always SFace (the gallery's template format); the `shipped` restorer evaluates
//! what `farsight run` does with the config (restore policy and small-face path together).

mod degrade;
pub mod fusion;
pub mod metrics;
mod pairs;
mod probe;
pub mod roc_plot;

pub use pairs::{parse as parse_pairs, parse_folds, read as read_pairs, ImageRef, Pair, PairsError};
pub use probe::pick_centre_face;

use crate::embed::{Embedder, EmbedderKind};
use crate::geometry::{Landmarks, Rect};
use crate::model::ModelError;
use crate::recognize::{RecognizeError, Recognizer};
use crate::restore::{RestoreKind, Restorer};
use crate::source::images;
use metrics::{RocPoint, ScoredPair};
use probe::{ImageResult, LabelledFace, Variant};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// How low resolution is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Downsample the aligned 112x112 face to N x N (antialiased), restore back to 112.
    Crop,
    /// Shrink the whole image so the face box is N px wide and run the real detector on it.
    Frame,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Crop => "crop",
            Mode::Frame => "frame",
        }
    }
}

/// The restore axis: a restorer (embedded by each `--embedder`), or `shipped`: exactly what
/// `farsight run` does with the config, restorer and embedder chosen per face by its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EvalRestore {
    None,
    Bicubic,
    Ftlgan,
    FtlganFp32,
    /// The config's restore policy and small-face path (`[restore]`, `[embed]`).
    Shipped,
}

impl EvalRestore {
    /// The restorer, `None` for `shipped`.
    pub fn kind(self) -> Option<RestoreKind> {
        match self {
            EvalRestore::None => Some(RestoreKind::None),
            EvalRestore::Bicubic => Some(RestoreKind::Bicubic),
            EvalRestore::Ftlgan => Some(RestoreKind::Ftlgan),
            EvalRestore::FtlganFp32 => Some(RestoreKind::FtlganFp32),
            EvalRestore::Shipped => None,
        }
    }

    /// The name on the command line and in rows.
    pub fn name(self) -> &'static str {
        self.kind().map_or("shipped", RestoreKind::name)
    }
}

impl From<RestoreKind> for EvalRestore {
    fn from(k: RestoreKind) -> Self {
        match k {
            RestoreKind::None => EvalRestore::None,
            RestoreKind::Bicubic => EvalRestore::Bicubic,
            RestoreKind::Ftlgan => EvalRestore::Ftlgan,
            RestoreKind::FtlganFp32 => EvalRestore::FtlganFp32,
        }
    }
}

/// The embedder of a row: one of the embedders, or `shipped` (the config's choice per face).
pub const SHIPPED: &str = "shipped";

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub dataset: PathBuf,
    pub pairs: PathBuf,
    /// 1-based folds; empty means every fold of the pairs file.
    pub folds: Vec<usize>,
    pub sizes: Vec<u32>,
    pub restorers: Vec<EvalRestore>,
    /// Probe embedders crossed with every restorer but `shipped` (references are always SFace).
    pub embedders: Vec<EmbedderKind>,
    pub modes: Vec<Mode>,
    /// Use only the first N genuine and N impostor pairs of each fold (quick runs).
    pub max_pairs_per_fold: Option<usize>,
    pub threads: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// One row of the report. The names of these fields are a published contract (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub mode: Mode,
    pub size: u32,
    pub restore: EvalRestore,
    /// `sface`, `lrembed`, or `shipped` for `restore = shipped` rows.
    pub embedder: String,
    pub d_prime: Option<f64>,
    pub auc: Option<f64>,
    pub accuracy: Option<f64>,
    pub accuracy_std: Option<f64>,
    #[serde(rename = "tar_at_far_1e-3")]
    pub tar_at_far_1e_3: Option<f64>,
    /// The lowest cosine threshold with FAR <= 1e-3 on these pairs (calibration: run on folds
    /// 1-5, never on the evaluation folds).
    #[serde(rename = "threshold_at_far_1e-3")]
    pub threshold_at_far_1e_3: Option<f64>,
    /// The cosine threshold that maximises accuracy on all these pairs (calibration, as above).
    pub threshold_best_accuracy: Option<f64>,
    /// Probes the small-face embedder embedded (`shipped` rows; the others: 0 or all).
    pub small_face_probes: usize,
    pub pairs: usize,
    pub genuine_mean: Option<f64>,
    pub impostor_mean: Option<f64>,
    /// Probe images whose face the detector did not find (at full resolution in crop mode, in the
    /// shrunk frame in frame mode); see `miss_policy`.
    pub detector_misses: usize,
    pub probe_images: usize,
    #[serde(skip)]
    pub roc: Vec<RocPoint>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: PathBuf,
    pub pairs_file: PathBuf,
    pub folds: Vec<usize>,
    pub protocol: &'static str,
    pub miss_policy: &'static str,
    pub detector: String,
    pub embedder: String,
    /// The probe embedders compared, with their file's sha256.
    pub embedders: Vec<String>,
    /// The config's small-face path, which `shipped` rows follow (`None` when off).
    pub small_face_path: Option<String>,
    /// The restorers compared, model-backed ones with their file's sha256 (FTLGAN is retrained).
    pub restorers: Vec<String>,
    /// Images of the selected pairs whose labelled face the detector missed at full resolution.
    pub full_resolution_misses: usize,
    /// Pairs skipped because an image could not be read or embedded.
    pub pairs_skipped: usize,
    pub rows: Vec<Row>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Pairs(#[from] PairsError),
    #[error("dataset folder {0} does not exist (expected the LFW layout: DIR/<Name>/<Name>_NNNN.jpg)")]
    NoDataset(PathBuf),
    #[error("no pairs selected: check --folds against the pairs file")]
    NoPairs,
    #[error("the detector found no face in any of the {0} images: wrong dataset or detector settings")]
    NothingDetected(usize),
    #[error("{failed} of {total} images could not be read: first error: {first}")]
    TooManyFailures { failed: usize, total: usize, first: String },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode the report as JSON")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Plot(#[from] roc_plot::PlotError),
    /// A restorer's model could not be loaded (checked before any image is read).
    #[error(transparent)]
    Restorer(#[from] ModelError),
}

/// Runs the evaluation.
pub fn run(rec: &Recognizer, opts: &EvalOptions) -> Result<Report, EvalError> {
    if !opts.dataset.is_dir() {
        return Err(EvalError::NoDataset(opts.dataset.clone()));
    }
    // Built once, before any image, and shared by the worker threads.
    let restorers: Vec<(RestoreKind, Box<dyn Restorer>)> = opts
        .restorers
        .iter()
        .filter_map(|r| r.kind())
        .map(|k| Ok((k, rec.load_restorer(k)?)))
        .collect::<Result<_, ModelError>>()?;
    let embedders: Vec<(EmbedderKind, Embedder)> =
        opts.embedders.iter().map(|&k| Ok((k, rec.load_embedder(k)?))).collect::<Result<_, ModelError>>()?;
    let shipped = opts.restorers.contains(&EvalRestore::Shipped);
    let all = pairs::read(&opts.pairs)?;
    let folds: Vec<usize> = if opts.folds.is_empty() {
        all.iter().map(|p| p.fold).collect::<BTreeSet<_>>().into_iter().collect()
    } else {
        opts.folds.clone()
    };
    let selected = first_pairs_per_fold(pairs::select(all, &folds)?, opts.max_pairs_per_fold)?;
    let probes: BTreeSet<ImageRef> = selected.iter().map(|p| p.first.clone()).collect();
    let references: BTreeSet<ImageRef> = selected.iter().map(|p| p.second.clone()).collect();
    let images: Vec<ImageRef> = probes.union(&references).cloned().collect();

    // Pass 1: find the labelled face of every image at full resolution.
    let (located, mean) = locate_all(rec, &opts.dataset, opts.threads, opts.progress, &images)?;
    let full_resolution_misses = located.values().filter(|r| matches!(r, Ok((f, _, _)) if !f.detected)).count();

    // Pass 2: embed references and probe variants.
    let variants: Vec<(Mode, u32)> = opts.modes.iter().flat_map(|&m| opts.sizes.iter().map(move |&s| (m, s))).collect();
    let results = parallel(opts.threads, opts.progress, "embedding", &images, |img| {
        let (face, frame) = face_and_frame(&located, &mean, img, &opts.dataset)?;
        let probe_variants: &[(Mode, u32)] = if probes.contains(img) { &variants } else { &[] };
        probe::process(rec, &frame, &face, references.contains(img), probe_variants, &restorers, &embedders, shipped)
            .map_err(|e: RecognizeError| format!("{}: {}", img.path(&opts.dataset).display(), crate::error_chain(&e)))
    })?;

    let ok: HashMap<&ImageRef, &ImageResult> = usable(&results)?;
    let pairs_skipped = selected.iter().filter(|p| !ok.contains_key(&p.first) || !ok.contains_key(&p.second)).count();

    let mut rows = Vec::new();
    let keys: Vec<(EvalRestore, Option<EmbedderKind>)> = opts
        .restorers
        .iter()
        .flat_map(|&r| match r {
            EvalRestore::Shipped => vec![(r, None)],
            _ => opts.embedders.iter().map(|&e| (r, Some(e))).collect(),
        })
        .collect();
    for &(mode, size) in &variants {
        for &(restore, embedder) in &keys {
            let key = Variant { mode, size, restore, embedder };
            let mut small_face_probes = 0;
            for r in probes.iter().filter_map(|img| ok.get(img)) {
                if r.variants.get(&key).is_some_and(|(_, k)| *k != EmbedderKind::Sface) {
                    small_face_probes += 1;
                }
            }
            let scored: Vec<ScoredPair> = selected
                .iter()
                .filter_map(|p| {
                    let (a, _) = ok.get(&p.first)?.variants.get(&key)?;
                    let b = ok.get(&p.second)?.reference.as_ref()?;
                    Some(ScoredPair { fold: p.fold, genuine: p.genuine, score: crate::embed::cosine(a, b) as f64 })
                })
                .collect();
            let misses = probes
                .iter()
                .filter(|img| match (mode, ok.get(img)) {
                    (Mode::Frame, Some(r)) => r.misses.contains(&(mode, size)),
                    (Mode::Crop, Some(_)) => matches!(located.get(*img), Some(Ok((f, _, _))) if !f.detected),
                    _ => false,
                })
                .count();
            let embedder = embedder.map_or(SHIPPED, EmbedderKind::name);
            let mut row = score_row(mode, size, restore, embedder, &scored, misses, probes.len());
            row.small_face_probes = small_face_probes;
            rows.push(row);
        }
    }
    Ok(Report {
        dataset: opts.dataset.clone(),
        pairs_file: opts.pairs.clone(),
        folds,
        protocol:
            "probe = first image of each pair, degraded then restored; reference = second image at full resolution",
        miss_policy: "a face the detector misses is aligned from where it is known to be (full-resolution landmarks \
                      scaled down in frame mode; the dataset's mean face position in crop mode) and still scored",
        detector: rec.detector_label(),
        embedder: format!("{} (sha256 {})", rec.embedder().id().name, &rec.embedder().id().sha256[..12]),
        embedders: embedders
            .iter()
            .map(|(_, e)| format!("{} (sha256 {})", e.id().name, &e.id().sha256[..12]))
            .collect(),
        small_face_path: rec.small_face_embedder()?.map(|(k, e)| {
            format!("{} below {} aligned px (sha256 {})", k.name(), rec.small_face_below(), &e.id().sha256[..12])
        }),
        restorers: restorers
            .iter()
            .map(|(_, r)| match r.model_sha256() {
                Some(sha) => format!("{} (sha256 {})", r.name(), &sha[..sha.len().min(12)]),
                None => r.name().to_owned(),
            })
            .collect(),
        full_resolution_misses,
        pairs_skipped,
        rows,
    })
}

fn score_row(
    mode: Mode,
    size: u32,
    restore: EvalRestore,
    embedder: &str,
    scored: &[ScoredPair],
    misses: usize,
    probes: usize,
) -> Row {
    let genuine: Vec<f64> = scored.iter().filter(|p| p.genuine).map(|p| p.score).collect();
    let impostor: Vec<f64> = scored.iter().filter(|p| !p.genuine).map(|p| p.score).collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let acc = metrics::lfw_accuracy(scored);
    let roc = metrics::roc_curve(&genuine, &impostor);
    let all: Vec<&ScoredPair> = scored.iter().collect();
    Row {
        mode,
        size,
        restore,
        embedder: embedder.to_owned(),
        threshold_at_far_1e_3: roc
            .iter()
            .filter(|p| p.far <= 1e-3 && p.threshold.is_finite())
            .map(|p| p.threshold)
            .min_by(f64::total_cmp),
        threshold_best_accuracy: (!all.is_empty()).then(|| metrics::best_threshold(&all)),
        small_face_probes: 0,
        d_prime: metrics::d_prime(&genuine, &impostor),
        auc: metrics::roc_auc(&genuine, &impostor),
        accuracy: acc.as_ref().map(|a| a.mean),
        accuracy_std: acc.as_ref().map(|a| a.std),
        tar_at_far_1e_3: metrics::tar_at_far(&genuine, &impostor, 1e-3),
        pairs: scored.len(),
        genuine_mean: mean(&genuine),
        impostor_mean: mean(&impostor),
        detector_misses: misses,
        probe_images: probes,
        roc,
    }
}

/// The first `max` genuine and `max` impostor pairs of each fold (all of them without a limit);
/// none left is an error.
fn first_pairs_per_fold(mut selected: Vec<Pair>, max: Option<usize>) -> Result<Vec<Pair>, EvalError> {
    if let Some(n) = max {
        let mut seen: HashMap<(usize, bool), usize> = HashMap::new();
        selected.retain(|p| {
            let c = seen.entry((p.fold, p.genuine)).or_default();
            *c += 1;
            *c <= n
        });
    }
    if selected.is_empty() {
        return Err(EvalError::NoPairs);
    }
    Ok(selected)
}

/// The images whose work succeeded; each failure is logged and skipped, unless more than 1% of
/// the images failed (then something is wrong with the dataset or the models, not one image).
fn usable<T>(results: &HashMap<ImageRef, Result<T, String>>) -> Result<HashMap<&ImageRef, &T>, EvalError> {
    let failed: Vec<&String> = results.values().filter_map(|r| r.as_ref().err()).collect();
    if failed.len() * 100 > results.len() {
        return Err(EvalError::TooManyFailures {
            failed: failed.len(),
            total: results.len(),
            first: failed[0].clone(),
        });
    }
    for e in &failed {
        log::warn!("skipped: {e}");
    }
    Ok(results.iter().filter_map(|(k, v)| v.as_ref().ok().map(|v| (k, v))).collect())
}

/// Each image's labelled face and size, or why it could not be read.
type Located = HashMap<ImageRef, Result<(LabelledFace, u32, u32), String>>;

/// Every image's labelled face at full resolution ([`locate`], in parallel), and the dataset's
/// mean face (where a face the detector misses is taken to be).
fn locate_all(
    rec: &Recognizer,
    dataset: &Path,
    threads: usize,
    progress: bool,
    images: &[ImageRef],
) -> Result<(Located, (Landmarks, Rect)), EvalError> {
    let located = parallel(threads, progress, "locating faces", images, |img| locate(rec, &img.path(dataset)))?;
    let found: Vec<(LabelledFace, u32, u32)> =
        located.values().filter_map(|r| r.as_ref().ok()).filter(|(f, _, _)| f.detected).copied().collect();
    let mean = probe::mean_face(&found).ok_or(EvalError::NothingDetected(images.len()))?;
    Ok((located, mean))
}

/// An image located by [`locate_all`], loaded, with its labelled face (the mean face's position
/// when the detector missed it).
fn face_and_frame(
    located: &Located,
    mean: &(Landmarks, Rect),
    img: &ImageRef,
    dataset: &Path,
) -> Result<(LabelledFace, image::RgbImage), String> {
    let (face, w, h) = match located.get(img) {
        Some(Ok(l)) => *l,
        Some(Err(e)) => return Err(e.clone()),
        None => return Err("not located".to_owned()),
    };
    let face = if face.detected { face } else { probe::fallback_face(mean, w, h) };
    let frame = images::load(&img.path(dataset), &Default::default()).map_err(|e| crate::error_chain(&e))?;
    Ok((face, frame))
}

/// Loads an image and finds its labelled face; returns the face (or a not-detected marker) and
/// the image size.
fn locate(rec: &Recognizer, path: &Path) -> Result<(LabelledFace, u32, u32), String> {
    let img = images::load(path, &Default::default()).map_err(|e| crate::error_chain(&e))?;
    let (w, h) = img.dimensions();
    let faces = rec
        .detector()
        .and_then(|d| d.detect(&img))
        .map_err(|e| format!("{}: {}", path.display(), crate::error_chain(&e)))?;
    let face = match probe::pick_centre_face(&faces, w, h) {
        Some(f) => LabelledFace { landmarks: f.landmarks, rect: f.rect, score: f.score, detected: true },
        None => LabelledFace { landmarks: Default::default(), rect: Default::default(), score: 0.0, detected: false },
    };
    Ok((face, w, h))
}

/// Runs `work` over `items` on `opts.threads` threads with a progress bar; per-item failures are
/// kept as `Err(message)`, never stop the run.
fn parallel<T, F>(
    threads: usize,
    progress: bool,
    what: &str,
    items: &[ImageRef],
    work: F,
) -> Result<HashMap<ImageRef, Result<T, String>>, EvalError>
where
    T: Send,
    F: Fn(&ImageRef) -> Result<T, String> + Sync,
{
    let bar = if progress { indicatif::ProgressBar::new(items.len() as u64) } else { indicatif::ProgressBar::hidden() };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    // Without a terminal (logs, CI) the bar is hidden: log every 10% instead.
    let log_every =
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) { usize::MAX } else { items.len() / 10 + 1 };
    let done = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let out = Mutex::new(HashMap::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = work(item);
                out.lock().unwrap_or_else(|p| p.into_inner()).insert(item.clone(), r);
                bar.inc(1);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(log_every) {
                    log::info!("{what}: {n}/{}", items.len());
                }
            });
        }
    });
    bar.finish_and_clear();
    Ok(out.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// The report as a fixed-width table for the terminal.
pub fn format_table(report: &Report) -> String {
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    let mut s = format!(
        "{:<6} {:>4} {:<11} {:<8} {:>5} {:>7} {:>6} {:>13} {:>9} {:>8} {:>10} {:>10}\n",
        "mode",
        "px",
        "restore",
        "embedder",
        "pairs",
        "d'",
        "AUC",
        "accuracy",
        "TAR@1e-3",
        "thr@1e-3",
        "small-face",
        "det.miss"
    );
    for r in &report.rows {
        let acc = match (r.accuracy, r.accuracy_std) {
            (Some(a), Some(sd)) => format!("{a:.4}±{sd:.4}"),
            _ => "-".to_owned(),
        };
        s.push_str(&format!(
            "{:<6} {:>4} {:<11} {:<8} {:>5} {:>7} {:>6} {:>13} {:>9} {:>8} {:>10} {:>10}\n",
            r.mode.name(),
            r.size,
            r.restore.name(),
            r.embedder,
            r.pairs,
            f(r.d_prime),
            f(r.auc),
            acc,
            f(r.tar_at_far_1e_3),
            f(r.threshold_at_far_1e_3),
            format!("{}/{}", r.small_face_probes, r.probe_images),
            format!("{}/{}", r.detector_misses, r.probe_images)
        ));
    }
    s.push_str(&format!(
        "full-resolution detector misses: {} (aligned at the dataset's mean face position); pairs skipped: {}\n",
        report.full_resolution_misses, report.pairs_skipped
    ));
    s
}

/// Writes the report as JSON (`{"rows": [...], ...}`).
pub fn write_json(report: &Report, path: &Path) -> Result<(), EvalError> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").map_err(|source| EvalError::Write { path: path.to_owned(), source })
}

/// Writes every row's ROC curve into one PNG.
pub fn write_roc(report: &Report, path: &Path) -> Result<(), EvalError> {
    let curves: Vec<roc_plot::Curve> = report
        .rows
        .iter()
        .map(|r| roc_plot::Curve {
            label: format!(
                "{} {}px {} {} (AUC {:.3})",
                r.mode.name(),
                r.size,
                r.restore.name(),
                r.embedder,
                r.auc.unwrap_or(f64::NAN)
            ),
            points: &r.roc,
        })
        .collect();
    let folds: Vec<String> = report.folds.iter().map(|f| f.to_string()).collect();
    let title = format!("farsight verification ROC, folds {}", folds.join(","));
    Ok(roc_plot::write_roc_png(path, &title, &curves)?)
}
