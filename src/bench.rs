//! `farsight bench`: per-stage latency (detector at 640x480 and 1280x720, alignment, restoration
//! by bicubic and by both FTLGAN models, embedding per face) and end-to-end images per second,
//! single-threaded. Machines here are shared and noisy, so every stage is reported as a median
//! *and* as a ratio to a fixed reference workload (a 192x192 f32 matrix product in plain Rust)
//! timed interleaved in the same process: the ratio is what to compare between runs and machines.
//! `farsight bench --models FILE` ([`models`]) times single model files on given input tensors
//! instead, for `scripts/bench/models.py`, which compares them with onnxruntime.
//! `farsight bench --detectors` ([`regions`]) measures recall by face size against cost for the
//! region detectors.

pub mod regions;

use crate::align::{downsample, Alignment, ALIGNED_SIZE};
use crate::detect::Detector;
use crate::gallery::Snapshot;
use crate::model::{thread_cpu_ms, ModelError, ModelFile, NodeProfile};
use crate::recognize::{RecognizeError, Recognizer};
use crate::restore::{RestoreKind, Restorer};
use image::{imageops::FilterType, RgbImage};
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Recognize(#[from] RecognizeError),
    #[error("the benchmark image has no detectable face: use a photo with one clear face")]
    NoFace,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot read {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Input(String),
}

/// One measured stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageTiming {
    pub stage: String,
    pub median_ms: f64,
    pub p90_ms: f64,
    /// Median stage time divided by the median reference time measured alongside it.
    pub ratio_to_reference: f64,
}

/// A stage that could not be timed (its model is missing or unusable), and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedStage {
    pub stage: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub iterations: usize,
    pub reference_median_ms: f64,
    pub stages: Vec<StageTiming>,
    /// Stages left out, with the reason (e.g. `models/ftlgan.onnx` not trained yet).
    pub skipped: Vec<SkippedStage>,
    /// Images per second through detect -> align -> restore -> embed -> match at the image's size.
    pub end_to_end_images_per_s: f64,
}

/// The reference workload: a naive 192x192x192 f32 matrix product (~14 MFLOP).
fn reference_workload() {
    const N: usize = 192;
    let a: Vec<f32> = (0..N * N).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..N * N).map(|i| (i % 5) as f32 * 0.2).collect();
    let mut c = vec![0f32; N * N];
    for i in 0..N {
        for k in 0..N {
            let aik = a[i * N + k];
            for j in 0..N {
                c[i * N + j] += aik * b[k * N + j];
            }
        }
    }
    black_box(&c);
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Times `f` and the reference workload alternately, `iterations` times each after one warm-up.
fn measure<F: FnMut() -> Result<(), BenchError>>(
    stage: &str,
    iterations: usize,
    mut f: F,
) -> Result<(StageTiming, f64), BenchError> {
    f()?;
    reference_workload();
    let (mut st, mut rt) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
    for _ in 0..iterations.max(1) {
        let t = Instant::now();
        f()?;
        st.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        reference_workload();
        rt.push(t.elapsed().as_secs_f64() * 1e3);
    }
    st.sort_by(f64::total_cmp);
    rt.sort_by(f64::total_cmp);
    let (median, reference) = (percentile(&st, 0.5), percentile(&rt, 0.5));
    log::info!("{stage}: median {median:.2} ms ({:.2}x reference)", median / reference);
    Ok((
        StageTiming {
            stage: stage.to_owned(),
            median_ms: median,
            p90_ms: percentile(&st, 0.9),
            ratio_to_reference: median / reference,
        },
        reference,
    ))
}

/// Runs every stage on `photo` (which must show a face); `other_detectors` are timed too.
pub fn run(
    rec: &Recognizer,
    other_detectors: &[&Detector],
    photo: &RgbImage,
    iterations: usize,
) -> Result<BenchReport, BenchError> {
    let mut stages = Vec::new();
    let mut references = Vec::new();
    let photo_detector = rec.detector().map_err(RecognizeError::from)?;
    for det in std::iter::once(photo_detector).chain(other_detectors.iter().copied()) {
        for (w, h) in [(640u32, 480u32), (1280, 720)] {
            let frame = image::imageops::resize(photo, w, h, FilterType::Triangle);
            let (t, r) = measure(&format!("detect {:?} {w}x{h}", det.config().kind), iterations, || {
                black_box(det.detect(&frame).map_err(RecognizeError::from)?);
                Ok(())
            })?;
            stages.push(t);
            references.push(r);
        }
    }
    let face =
        photo_detector.detect(photo).map_err(RecognizeError::from)?.into_iter().next().ok_or(BenchError::NoFace)?;
    let alignment = Alignment::from_landmarks(&face.landmarks).ok_or(BenchError::NoFace)?;
    let aligned = alignment.warp(photo, ALIGNED_SIZE).ok_or(BenchError::NoFace)?;
    let small = downsample(&aligned, 14);
    let mut skipped = Vec::new();
    let (t, r) = measure("align 5-point warp to 112x112", iterations, || {
        black_box(alignment.warp(photo, ALIGNED_SIZE));
        Ok(())
    })?;
    stages.push(t);
    references.push(r);
    // Every restorer on the same 14 px face; a model that is missing or unusable is skipped with
    // its reason rather than failing the whole benchmark.
    for kind in [RestoreKind::Bicubic, RestoreKind::Ftlgan, RestoreKind::FtlganFp32] {
        let stage = format!("restore {kind} 14->112");
        let restorer: Box<dyn Restorer> = match rec.load_restorer(kind) {
            Ok(r) => r,
            Err(e) => {
                skipped.push(SkippedStage { stage, reason: e.to_string() });
                continue;
            }
        };
        let (t, r) = measure(&stage, iterations, || {
            black_box(restorer.restore(&small).map_err(RecognizeError::from)?);
            Ok(())
        })?;
        stages.push(t);
        references.push(r);
    }
    let (t, r) = measure("embed SFace per face", iterations, || {
        black_box(rec.embedder().embed(&aligned).map_err(RecognizeError::from)?);
        Ok(())
    })?;
    stages.push(t);
    references.push(r);
    // What `farsight run` does with a 14 px face, restoration and embedding together (the
    // small-face path when it is on, else the restorer in front of SFace): issue 13's cost bound
    // is this against SFace alone on a 112 px face, the stage above.
    let (t, r) = measure("embed 14 px face (run's path)", iterations, || {
        black_box(rec.embed_native(&small, 14.0)?);
        Ok(())
    })?;
    stages.push(t);
    references.push(r);
    let snapshot = Snapshot::default();
    let (w, h) = photo.dimensions();
    let (t, r) = measure(&format!("end to end {w}x{h} image"), iterations, || {
        for obs in rec.observe(photo)? {
            black_box(crate::recognize::to_event(&obs, &snapshot, 0.5, 3, "bench", 0));
        }
        Ok(())
    })?;
    let end_to_end_images_per_s = 1e3 / t.median_ms;
    stages.push(t);
    references.push(r);
    references.sort_by(f64::total_cmp);
    Ok(BenchReport {
        iterations,
        reference_median_ms: percentile(&references, 0.5),
        stages,
        skipped,
        end_to_end_images_per_s,
    })
}

/// One case of `farsight bench --models`: a model file timed on one input tensor (what
/// `scripts/bench/models.py` writes, with onnxruntime's output on the same input as `expect`).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCase {
    pub name: String,
    pub model: PathBuf,
    pub shape: Vec<usize>,
    /// Raw little-endian f32, row-major, of `shape`.
    pub input: PathBuf,
    /// Raw little-endian f32: every output flattened and concatenated, in output order.
    pub expect: Option<PathBuf>,
}

/// Timing of one [`ModelCase`] in tract, as farsight runs it ([`Plan::run`]).
#[derive(Debug, Clone, Serialize)]
pub struct ModelTiming {
    pub name: String,
    pub model: PathBuf,
    pub shape: Vec<usize>,
    /// File read + parse + plan for the shape, wall ms.
    pub load_ms: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    /// Median CPU time of the calling thread: close to the quiet-machine figure even when other
    /// processes hold the cores (tract runs single-threaded here).
    pub cpu_median_ms: f64,
    /// Largest |tract - expected| over all outputs (NaN without `expect`).
    pub max_abs_diff: f32,
    /// Per-node profile (with `profile`), slowest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeProfile>,
}

fn read_f32(path: &Path) -> Result<Vec<f32>, BenchError> {
    let bytes = std::fs::read(path).map_err(|source| BenchError::Io { path: path.to_owned(), source })?;
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Times each case: loads its model and plans it for its shape (timed as `load_ms`), checks the
/// outputs against `expect`, then `iterations` timed runs after two warm-ups.
/// With `profile`, each case is also profiled node by node ([`crate::model::Plan::profile`]).
pub fn models(cases: &[ModelCase], iterations: usize, profile: bool) -> Result<Vec<ModelTiming>, BenchError> {
    let mut rows = Vec::new();
    for case in cases {
        let input = read_f32(&case.input)?;
        if input.len() != case.shape.iter().product::<usize>() {
            return Err(BenchError::Input(format!("{}: input does not hold a {:?} tensor", case.name, case.shape)));
        }
        let t = Instant::now();
        let plan = ModelFile::load(&case.model)?.plan(&case.shape)?;
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        let got: Vec<f32> = plan.run(input.clone())?.into_iter().flat_map(|o| o.data).collect();
        let max_abs_diff = match &case.expect {
            Some(p) => {
                let want = read_f32(p)?;
                if want.len() != got.len() {
                    return Err(BenchError::Input(format!(
                        "{}: {} output values, expected {}",
                        case.name,
                        got.len(),
                        want.len()
                    )));
                }
                got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
            }
            None => f32::NAN,
        };
        plan.run(input.clone())?;
        let (mut wall, mut cpu) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
        for _ in 0..iterations.max(1) {
            let x = input.clone();
            let (t, c) = (Instant::now(), thread_cpu_ms());
            black_box(plan.run(x)?);
            cpu.push(thread_cpu_ms() - c);
            wall.push(t.elapsed().as_secs_f64() * 1e3);
        }
        wall.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        log::info!("{}: median {:.2} ms (cpu {:.2} ms)", case.name, percentile(&wall, 0.5), percentile(&cpu, 0.5));
        let nodes = if profile { plan.profile(&input, iterations)? } else { Vec::new() };
        rows.push(ModelTiming {
            name: case.name.clone(),
            model: case.model.clone(),
            shape: case.shape.clone(),
            load_ms,
            median_ms: percentile(&wall, 0.5),
            p90_ms: percentile(&wall, 0.9),
            cpu_median_ms: percentile(&cpu, 0.5),
            max_abs_diff,
            nodes,
        });
    }
    Ok(rows)
}

/// The table `farsight bench --models` prints: one line per case, then with a profile the time
/// per tract operator and the slowest nodes of each case.
pub fn format_models(rows: &[ModelTiming]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "case", "median ms", "p90 ms", "cpu ms", "load ms", "max|diff|"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<24} {:>10.2} {:>10.2} {:>10.2} {:>10.0} {:>10.1e}",
            r.name, r.median_ms, r.p90_ms, r.cpu_median_ms, r.load_ms, r.max_abs_diff
        );
    }
    for r in rows.iter().filter(|r| !r.nodes.is_empty()) {
        let total: f64 = r.nodes.iter().map(|n| n.cpu_ms).sum();
        let mut by_op: Vec<(&str, f64, usize)> = Vec::new();
        for n in &r.nodes {
            match by_op.iter_mut().find(|o| o.0 == n.op) {
                Some(o) => {
                    o.1 += n.cpu_ms;
                    o.2 += 1;
                }
                None => by_op.push((&n.op, n.cpu_ms, 1)),
            }
        }
        by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
        let _ =
            writeln!(out, "\n{}: {} nodes, {total:.2} ms (sum of per-node median CPU times)", r.name, r.nodes.len());
        for (op, ms, count) in &by_op {
            let _ = writeln!(out, "  {op:<32} {count:>4} nodes {ms:>9.2} ms {:>5.1}%", 100.0 * ms / total);
        }
        let _ = writeln!(out, "  slowest nodes:");
        for n in r.nodes.iter().take(15) {
            let _ = writeln!(out, "  {:>8.3} ms  {} [{}] {} -> {}", n.cpu_ms, n.name, n.op, n.info, n.output);
        }
    }
    out
}
