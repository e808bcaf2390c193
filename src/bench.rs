//! `farsight bench`: per-stage latency (detector at 640x480 and 1280x720, alignment, restoration
//! by bicubic and by both FTLGAN models, embedding per face) and end-to-end images per second,
//! single-threaded. Machines here are shared and noisy, so every stage is reported as a median
//! *and* as a ratio to a fixed reference workload (a 192x192 f32 matrix product in plain Rust)
//! timed interleaved in the same process: the ratio is what to compare between runs and machines.

use crate::align::{downsample, Alignment, ALIGNED_SIZE};
use crate::detect::Detector;
use crate::gallery::Snapshot;
use crate::recognize::{RecognizeError, Recognizer};
use crate::restore::{RestoreKind, Restorer};
use image::{imageops::FilterType, RgbImage};
use serde::Serialize;
use std::hint::black_box;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Recognize(#[from] RecognizeError),
    #[error("the benchmark image has no detectable face: use a photo with one clear face")]
    NoFace,
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
    for det in std::iter::once(rec.detector()).chain(other_detectors.iter().copied()) {
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
        rec.detector().detect(photo).map_err(RecognizeError::from)?.into_iter().next().ok_or(BenchError::NoFace)?;
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
