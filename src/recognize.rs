//! Recognition of still frames: detect -> align -> restore (small faces only) -> embed, and
//! matching the embeddings against a gallery snapshot. `enroll`, `identify`, `run` over images and
//! `eval` all go through [`Recognizer`], so they see faces exactly the same way.

use crate::align::{Alignment, ALIGNED_SIZE};
use crate::config::Config;
use crate::detect::{DetectError, Detector, DetectorConfig, Face};
use crate::embed::{EmbedError, Embedder, Embedding};
use crate::event::{FaceEvent, UNKNOWN};
use crate::gallery::Snapshot;
use crate::model::ModelError;
use crate::restore::{self, RestoreError, RestoreKind, Restorer};
use image::RgbImage;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RecognizeError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("the face's landmarks are degenerate (cannot align)")]
    Degenerate,
}

/// A face found in a frame, with its embedding.
#[derive(Debug, Clone)]
pub struct Observation {
    pub face: Face,
    /// Frame pixels spanned by the aligned 112x112 crop.
    pub aligned_px: f32,
    /// The restorer's name when the face was restored.
    pub restorer: Option<String>,
    pub embedding: Embedding,
}

/// A detected face aligned at its native size: enough to judge its quality, before the costly
/// restoration and embedding ([`Recognizer::finish`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub face: Face,
    pub alignment: Alignment,
    /// Frame pixels spanned by the aligned crop.
    pub aligned_px: f32,
    /// The aligned face at its native size (at most 112 x 112).
    pub native: RgbImage,
}

/// The loaded models and the restoration policy.
pub struct Recognizer {
    detector: Detector,
    /// The streaming pipeline's region detector (`scene.detector`) when it is not `detector`.
    region_detector: Option<Detector>,
    embedder: Embedder,
    restorer: Box<dyn Restorer>,
    restore_below: f32,
    fallback: Box<dyn Restorer>,
    models_dir: PathBuf,
}

impl std::fmt::Debug for Recognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recognizer")
            .field("detector", &self.detector)
            .field("region_detector", &self.region_detector)
            .field("embedder", &self.embedder)
            .field("restorer", &self.restorer.name())
            .field("restore_below", &self.restore_below)
            .field("fallback", &self.fallback.name())
            .finish()
    }
}

/// Why the models could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Detector(#[from] DetectError),
    #[error(transparent)]
    Embedder(#[from] ModelError),
    #[error(transparent)]
    Restorer(ModelError),
}

impl Recognizer {
    /// Loads the detector, the embedder, the restorers and the streaming region detector
    /// (`scene.detector` with `scene.region_threshold`, unless that is `detector` itself) named by
    /// `config` and checks each on a probe input, so a bad model file fails here, at start. The
    /// restorers are built once and shared by every thread that uses this recognizer.
    pub fn load(config: &Config) -> Result<Self, LoadError> {
        let detector = Detector::load(&config.models_dir, config.detector.clone())?;
        let embedder = Embedder::load(&config.models_dir)?;
        let build = |kind| restore::build(kind, &config.models_dir).map_err(LoadError::Restorer);
        let restorer = build(config.restore.method)?;
        let fallback = build(config.restore.fallback)?;
        let region = DetectorConfig {
            kind: config.scene.detector,
            score_threshold: config.scene.region_threshold(config.detector.score_threshold),
            ..config.detector.clone()
        };
        let region_detector =
            if region == config.detector { None } else { Some(Detector::load(&config.models_dir, region)?) };
        Ok(Self {
            detector,
            region_detector,
            embedder,
            restorer,
            restore_below: config.restore.below_px,
            fallback,
            models_dir: config.models_dir.clone(),
        })
    }

    /// Builds another restorer from the same models folder (evaluation and benchmarks compare
    /// several); build it once and share it.
    pub fn load_restorer(&self, kind: RestoreKind) -> Result<Box<dyn Restorer>, ModelError> {
        restore::build(kind, &self.models_dir)
    }

    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// The detector for whole photos and frames (`enroll`, `identify`, `eval`, image folders):
    /// `detector.kind`.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// The detector the streaming pipeline runs on its windows (`scene.detector`): YuNet by
    /// default, see `SceneConfig::detector`.
    pub fn region_detector(&self) -> &Detector {
        self.region_detector.as_ref().unwrap_or(&self.detector)
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Detects every face in `frame` and embeds each one. A face that cannot be aligned is
    /// skipped with a warning; a model failure is an error.
    pub fn observe(&self, frame: &RgbImage) -> Result<Vec<Observation>, RecognizeError> {
        Ok(self.observe_aligned(frame)?.into_iter().map(|(o, _)| o).collect())
    }

    /// [`Recognizer::observe`], also returning each face's aligned 112x112 crop (what the
    /// embedder saw), for quality scoring and best-shot crops.
    pub fn observe_aligned(&self, frame: &RgbImage) -> Result<Vec<(Observation, RgbImage)>, RecognizeError> {
        let faces = self.detector.detect(frame)?;
        let mut out = Vec::with_capacity(faces.len());
        for face in faces {
            match self.embed_face_aligned(frame, &face) {
                Ok(o) => out.push(o),
                Err(RecognizeError::Degenerate) => {
                    log::warn!("skipping a face with degenerate landmarks at {:?}", face.rect)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Aligns, restores when small, and embeds one detected face.
    pub fn embed_face(&self, frame: &RgbImage, face: &Face) -> Result<Observation, RecognizeError> {
        Ok(self.embed_face_aligned(frame, face)?.0)
    }

    fn embed_face_aligned(&self, frame: &RgbImage, face: &Face) -> Result<(Observation, RgbImage), RecognizeError> {
        let alignment = Alignment::from_landmarks(&face.landmarks).ok_or(RecognizeError::Degenerate)?;
        let aligned_px = alignment.native_size();
        let restorer = if aligned_px < self.restore_below { &self.restorer } else { &self.fallback };
        let (aligned, restorer) = self.aligned_face(frame, &alignment, restorer.as_ref())?;
        let embedding = self.embedder.embed(&aligned)?;
        Ok((Observation { face: *face, aligned_px, restorer, embedding }, aligned))
    }

    /// Aligns a detected face at its native size (cheap: no restoration, no model).
    pub fn prepare(&self, frame: &RgbImage, face: &Face) -> Result<Prepared, RecognizeError> {
        let alignment = Alignment::from_landmarks(&face.landmarks).ok_or(RecognizeError::Degenerate)?;
        let aligned_px = alignment.native_size();
        let n = (aligned_px.round() as u32).clamp(2, ALIGNED_SIZE);
        let native = alignment.warp(frame, n).ok_or(RecognizeError::Degenerate)?;
        Ok(Prepared { face: *face, alignment, aligned_px, native })
    }

    /// Restores (when small) and embeds a prepared face: the observation and the 112x112 face the
    /// embedder saw. `frame` is the frame it was prepared from (a face of 112 px or more is
    /// warped from it straight to 112).
    pub fn finish(&self, frame: &RgbImage, p: &Prepared) -> Result<(Observation, RgbImage), RecognizeError> {
        let (aligned, restorer) = if p.aligned_px >= ALIGNED_SIZE as f32 {
            (p.alignment.warp(frame, ALIGNED_SIZE).ok_or(RecognizeError::Degenerate)?, None)
        } else {
            let restorer = if p.aligned_px < self.restore_below { &self.restorer } else { &self.fallback };
            (restorer.restore(&p.native)?, Some(restorer.name().to_owned()))
        };
        let embedding = self.embedder.embed(&aligned)?;
        Ok((Observation { face: p.face, aligned_px: p.aligned_px, restorer, embedding }, aligned))
    }

    /// The 112x112 face the embedder sees: warped straight to 112 when the face is at least
    /// 112 px, else warped at its native size and restored by `restorer`.
    pub fn aligned_face(
        &self,
        frame: &RgbImage,
        alignment: &Alignment,
        restorer: &dyn Restorer,
    ) -> Result<(RgbImage, Option<String>), RecognizeError> {
        let native = alignment.native_size();
        if native >= ALIGNED_SIZE as f32 {
            let face = alignment.warp(frame, ALIGNED_SIZE).ok_or(RecognizeError::Degenerate)?;
            return Ok((face, None));
        }
        let n = (native.round() as u32).clamp(2, ALIGNED_SIZE);
        let small = alignment.warp(frame, n).ok_or(RecognizeError::Degenerate)?;
        Ok((restorer.restore(&small)?, Some(restorer.name().to_owned())))
    }

    /// Embeds an image that must hold exactly one face (or, with `largest`, uses the largest).
    /// The error says how many faces were found, for `enroll`'s messages.
    pub fn single_face(&self, frame: &RgbImage, largest: bool) -> Result<Result<Observation, usize>, RecognizeError> {
        let mut obs = self.observe(frame)?;
        match obs.len() {
            1 => Ok(Ok(obs.remove(0))),
            n if n > 1 && largest => {
                obs.sort_by(|a, b| b.face.rect.area().total_cmp(&a.face.rect.area()));
                Ok(Ok(obs.remove(0)))
            }
            n => Ok(Err(n)),
        }
    }
}

/// Matches one observation against the gallery and builds its event.
pub fn to_event(
    obs: &Observation,
    snapshot: &Snapshot,
    threshold: f32,
    top_k: usize,
    source: &str,
    frame: u64,
) -> FaceEvent {
    let candidates = snapshot.search(&obs.embedding, top_k);
    let best = candidates.first();
    let matched = best.is_some_and(|c| c.score >= threshold);
    FaceEvent {
        event: "face",
        source: source.to_owned(),
        frame,
        identity: if matched { best.map(|c| c.name.clone()).unwrap_or_default() } else { UNKNOWN.to_owned() },
        matched,
        score: best.map(|c| c.score),
        rect: obs.face.rect,
        face_px: obs.face.rect.w,
        aligned_px: obs.aligned_px,
        restored: obs.restorer.is_some(),
        restorer: obs.restorer.clone(),
        detector_score: obs.face.score,
        candidates,
    }
}
