//! Recognition of still frames: detect -> align -> restore (small faces only) -> embed, and
//! matching the embeddings against a gallery snapshot. `enroll`, `identify`, `run` over images and
//! `eval` all go through [`Recognizer`], so they see faces exactly the same way.
//!
//! Which restorer and embedder a face takes depends only on its aligned size ([`Recognizer::route`]):
//! below `embed.small_face_below_px` the small-face path (bicubic, then the small-face embedder),
//! else `restore.method` / `restore.fallback` and SFace. Gallery templates always take SFace.

use crate::align::{Alignment, ALIGNED_SIZE};
use crate::config::Config;
use crate::detect::{DetectError, Detector, DetectorConfig, Face};
use crate::embed::{EmbedError, Embedder, EmbedderKind, Embedding};
use crate::event::{FaceEvent, UNKNOWN};
use crate::gallery::Snapshot;
use crate::model::ModelError;
use crate::restore::{self, RestoreError, RestoreKind, Restorer};
use image::RgbImage;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

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
    /// A frame whose pixels could not be converted to RGB.
    #[error("bad frame: {0}")]
    BadFrame(String),
}

/// A face found in a frame, with its embedding.
#[derive(Debug, Clone)]
pub struct Observation {
    pub face: Face,
    /// Frame pixels spanned by the aligned 112x112 crop.
    pub aligned_px: f32,
    /// The restorer's name when the face was restored.
    pub restorer: Option<String>,
    /// The embedder that made `embedding` (both embedders make SFace-space vectors).
    pub embedder: EmbedderKind,
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
    detector: PhotoDetector,
    /// The streaming pipeline's region detector (`scene.detector`); the photo detector itself
    /// when they are the same.
    region_detector: Arc<Detector>,
    embedder: Embedder,
    restorer: Box<dyn Restorer>,
    restore_below: f32,
    fallback: Box<dyn Restorer>,
    small_face: Option<SmallFace>,
    models_dir: PathBuf,
}

/// A model checked at start that can be released and loaded again on first use (the photo
/// detector in `run`, the small-face embedder in photo commands). On reload the file's sha256
/// must be the one checked at start: a file swapped in since is refused, not loaded.
struct Reloadable<T> {
    path: PathBuf,
    sha256: String,
    loaded: OnceLock<Arc<T>>,
    loading: Mutex<()>,
}

impl<T> Reloadable<T> {
    /// `loaded` is `None` for a model checked and dropped: the first use loads it.
    fn new(path: PathBuf, sha256: String, loaded: Option<Arc<T>>) -> Self {
        let cell = OnceLock::new();
        if let Some(m) = loaded {
            let _ = cell.set(m);
        }
        Self { path, sha256, loaded: cell, loading: Mutex::new(()) }
    }

    /// The model, loaded by `load` if it was released.
    fn get<E: From<ModelError>>(&self, what: &str, load: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        if let Some(m) = self.loaded.get() {
            return Ok(m);
        }
        let _one = self.loading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(m) = self.loaded.get() {
            return Ok(m);
        }
        if crate::model::sha256_file(&self.path)? != self.sha256 {
            return Err(ModelError::Changed { path: self.path.clone() }.into());
        }
        let m = load()?;
        log::info!("{what} {} loaded again for its first use", self.path.display());
        Ok(self.loaded.get_or_init(|| Arc::new(m)))
    }

    fn release(&mut self) {
        self.loaded.take();
    }
}

/// The photo detector (`detector.kind`: enroll, identify, eval, HTTP photos, image folders),
/// checked at start; a daemon whose windows run another detector releases it
/// ([`Recognizer::release_photo_detector`]) and it is loaded again on the first photo.
struct PhotoDetector {
    config: DetectorConfig,
    models_dir: PathBuf,
    model: Reloadable<Detector>,
}

impl PhotoDetector {
    fn get(&self) -> Result<&Detector, DetectError> {
        self.model.get("photo detector", || Detector::load(&self.models_dir, self.config.clone()))
    }
}

/// The small-face path: faces below `below` aligned px are upscaled by `upscale` (bicubic, the
/// input the small-face embedder was trained on) and embedded by `embedder`. Photo commands
/// load it on demand, after its start-up check ([`Recognizer::load_for_photos`]).
struct SmallFace {
    embedder: Reloadable<Embedder>,
    kind: EmbedderKind,
    below: f32,
    upscale: Box<dyn Restorer>,
    models_dir: PathBuf,
}

impl SmallFace {
    fn embedder(&self) -> Result<&Embedder, ModelError> {
        self.embedder.get("small-face embedder", || Embedder::load_kind(&self.models_dir, self.kind))
    }
}

/// Whether the small-face embedder stays loaded after its start-up check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SmallFaceResidency {
    /// Loaded once and kept (`run`: small faces are what it is for).
    Resident,
    /// Checked, dropped, and loaded on the first face under `embed.small_face_below_px`:
    /// `identify` of one photo 163 -> 137 MiB when it has no small face.
    OnDemand,
}

/// How a face of a given aligned size is restored and embedded ([`Recognizer::route`]).
#[derive(Clone, Copy)]
pub struct Route<'a> {
    /// `None` for faces of 112 px or more, which are warped straight to 112x112.
    pub restorer: Option<&'a dyn Restorer>,
    pub embedder: &'a Embedder,
    pub kind: EmbedderKind,
}

impl std::fmt::Debug for Recognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recognizer")
            .field("detector", &self.detector.model.loaded.get())
            .field("region_detector", &self.region_detector)
            .field("embedder", &self.embedder)
            .field("restorer", &self.restorer.name())
            .field("restore_below", &self.restore_below)
            .field("fallback", &self.fallback.name())
            .field("small_face", &self.small_face.as_ref().map(|s| (s.kind, s.below)))
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
    #[error(transparent)]
    SmallFaceEmbedder(ModelError),
}

impl Recognizer {
    /// Loads the detector, the embedder, the restorers and the streaming region detector
    /// (`scene.detector` with `scene.region_threshold`, unless that is `detector` itself) named by
    /// `config` and checks each on a probe input, so a bad model file fails here, at start. The
    /// restorers are built once and shared by every thread that uses this recognizer.
    pub fn load(config: &Config) -> Result<Self, LoadError> {
        Self::load_with(config, SmallFaceResidency::Resident)
    }

    /// [`Recognizer::load`] for photo commands (`identify`, `enroll`): the small-face embedder
    /// is checked first, while nothing else is resident, and dropped; the first face under
    /// `embed.small_face_below_px` loads it again (its sha256 checked against the start's).
    /// Start-up errors come in the same order as [`Recognizer::load`]'s.
    pub fn load_for_photos(config: &Config) -> Result<Self, LoadError> {
        Self::load_with(config, SmallFaceResidency::OnDemand)
    }

    fn load_with(config: &Config, residency: SmallFaceResidency) -> Result<Self, LoadError> {
        // On demand, the small-face embedder's check comes first: parsing it holds ~80 MiB, so
        // with SFace already resident it was the peak of a whole `identify`. Its error is
        // reported in its usual place, after SFace's and the restorers'.
        let early = match (residency, config.embed.small_face()) {
            (SmallFaceResidency::OnDemand, Some(kind)) => {
                Some(Embedder::load_kind(&config.models_dir, kind).map(|e| (kind, e.id().sha256.clone())))
            }
            _ => None,
        };
        if early.is_some() {
            // `identify` of one photo 142.5 -> 134.4 MiB (farm-bench, 12 pairs, quiet).
            crate::heap::release_free_pages();
        }
        // The embedders before the detectors: parsing one holds its file's weights twice (the
        // protobuf and tract's tensors, 77 MB for SFace's 38.5 MB), so the fewer models already
        // resident then, the lower the peak (`identify`'s peak heap 117 -> 101 MiB). The
        // restorers are small (FTLGAN: 0.1 MB); errors come in the order SFace, restorers,
        // small-face embedder, detectors.
        let embedder = Embedder::load(&config.models_dir)?;
        let build = |kind| restore::build(kind, &config.models_dir).map_err(LoadError::Restorer);
        let restorer = build(config.restore.method)?;
        let fallback = build(config.restore.fallback)?;
        let small_face_embedder = match (early, config.embed.small_face()) {
            (Some(checked), _) => Some(checked.map(|(kind, sha256)| (kind, sha256, None))),
            (None, Some(kind)) => Some(
                Embedder::load_kind(&config.models_dir, kind).map(|e| (kind, e.id().sha256.clone(), Some(Arc::new(e)))),
            ),
            (None, None) => None,
        }
        .transpose()
        .map_err(LoadError::SmallFaceEmbedder)?;
        let detector = Arc::new(Detector::load(&config.models_dir, config.detector.clone())?);
        let region = DetectorConfig {
            kind: config.scene.detector,
            score_threshold: config.scene.region_threshold(config.detector.score_threshold),
            ..config.detector.clone()
        };
        let region_detector = if region == config.detector {
            detector.clone()
        } else {
            Arc::new(Detector::load(&config.models_dir, region)?)
        };
        let small_face = match small_face_embedder {
            Some((kind, sha256, embedder)) => Some(SmallFace {
                embedder: Reloadable::new(config.models_dir.join(kind.model_file()), sha256, embedder),
                kind,
                below: config.embed.small_face_below_px,
                upscale: build(RestoreKind::Bicubic)?,
                models_dir: config.models_dir.clone(),
            }),
            None => None,
        };
        Ok(Self {
            detector: PhotoDetector {
                config: config.detector.clone(),
                models_dir: config.models_dir.clone(),
                model: Reloadable::new(
                    config.models_dir.join(config.detector.kind.file_name()),
                    detector.sha256().to_owned(),
                    Some(detector),
                ),
            },
            region_detector,
            embedder,
            restorer,
            restore_below: config.restore.below_px,
            fallback,
            small_face,
            models_dir: config.models_dir.clone(),
        })
    }

    /// The restorer and embedder a face spanning `aligned_px` frame pixels takes: the small-face
    /// path below its size, else the restore policy (no restorer at 112 px or more) and SFace.
    /// Loads the small-face embedder again if it was released (an error if its file changed or
    /// went missing since start).
    pub fn route(&self, aligned_px: f32) -> Result<Route<'_>, EmbedError> {
        if aligned_px >= ALIGNED_SIZE as f32 {
            return Ok(Route { restorer: None, embedder: &self.embedder, kind: EmbedderKind::Sface });
        }
        if let Some(s) = self.small_face.as_ref().filter(|s| aligned_px < s.below) {
            return Ok(Route { restorer: Some(s.upscale.as_ref()), embedder: s.embedder()?, kind: s.kind });
        }
        let restorer = if aligned_px < self.restore_below { &self.restorer } else { &self.fallback };
        Ok(Route { restorer: Some(restorer.as_ref()), embedder: &self.embedder, kind: EmbedderKind::Sface })
    }

    /// Aligned size below which the small-face path is taken (0 when it is off).
    pub fn small_face_below(&self) -> f32 {
        self.small_face.as_ref().map_or(0.0, |s| s.below)
    }

    /// The small-face embedder when the path is on (evaluation reuses it), loaded again if it
    /// was released.
    pub fn small_face_embedder(&self) -> Result<Option<(EmbedderKind, &Embedder)>, ModelError> {
        self.small_face.as_ref().map(|s| Ok((s.kind, s.embedder()?))).transpose()
    }

    /// Loads an embedder from the same models folder (evaluation compares several); the ones
    /// this recognizer already holds are shared, not loaded again.
    pub fn load_embedder(&self, kind: EmbedderKind) -> Result<Embedder, ModelError> {
        match (kind, &self.small_face) {
            (EmbedderKind::Sface, _) => Ok(self.embedder.clone()),
            (k, Some(s)) if s.kind == k => Ok(s.embedder()?.clone()),
            (k, _) => Embedder::load_kind(&self.models_dir, k),
        }
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
    /// `detector.kind`. Loaded again here if it was released (an error if its file changed or
    /// went missing since start).
    pub fn detector(&self) -> Result<&Detector, DetectError> {
        self.detector.get()
    }

    /// "Centerface (sha256 0123456789ab)": the photo detector, for reports, without loading it.
    pub fn detector_label(&self) -> String {
        format!(
            "{:?} (sha256 {})",
            self.detector.config.kind,
            &self.detector.model.sha256[..12.min(self.detector.model.sha256.len())]
        )
    }

    /// Frees the photo detector until a photo needs it (`farsight run`: the windows of video run
    /// `scene.detector`, and CenterFace's parsed file and plan are ~15 MiB of a 640x480 run's
    /// peak). Kept when it is also the region detector: freeing it would free nothing, and the
    /// first photo would then load a second copy.
    pub fn release_photo_detector(&mut self) {
        if self.detector.model.loaded.get().is_some_and(|d| !Arc::ptr_eq(d, &self.region_detector)) {
            self.detector.model.release();
        }
    }

    /// The detector the streaming pipeline runs on its windows (`scene.detector`): YuNet by
    /// default, see `SceneConfig::detector`.
    pub fn region_detector(&self) -> &Detector {
        &self.region_detector
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
        let faces = self.detector()?.detect(frame)?;
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
        self.finish(frame, &self.prepare(frame, face)?)
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
        self.finish_routed(frame, p, self.route(p.aligned_px)?)
    }

    fn finish_routed(
        &self,
        frame: &RgbImage,
        p: &Prepared,
        route: Route<'_>,
    ) -> Result<(Observation, RgbImage), RecognizeError> {
        let (aligned, restorer) = match route.restorer {
            None => (p.alignment.warp(frame, ALIGNED_SIZE).ok_or(RecognizeError::Degenerate)?, None),
            Some(r) => (r.restore(&p.native)?, Some(r.name().to_owned())),
        };
        let embedding = route.embedder.embed(&aligned)?;
        let obs = Observation { face: p.face, aligned_px: p.aligned_px, restorer, embedder: route.kind, embedding };
        Ok((obs, aligned))
    }

    /// Embeds an aligned face as `farsight run` would: `native` is the face warped at its native
    /// size (`aligned_px` rounded, below 112), routed by [`Recognizer::route`]. Returns the
    /// embedding and the embedder that made it (`farsight eval --restore shipped`, crop mode).
    pub fn embed_native(
        &self,
        native: &RgbImage,
        aligned_px: f32,
    ) -> Result<(Embedding, EmbedderKind), RecognizeError> {
        let route = self.route(aligned_px.min(ALIGNED_SIZE as f32 - 0.5))?;
        let restorer = route.restorer.unwrap_or(self.fallback.as_ref());
        Ok((route.embedder.embed(&restorer.restore(native)?)?, route.kind))
    }

    /// Embeds the face at `alignment` in `frame` as `farsight run` would (its size decides the
    /// restorer and the embedder): `farsight eval --restore shipped`, frame mode.
    pub fn embed_aligned(
        &self,
        frame: &RgbImage,
        alignment: &Alignment,
    ) -> Result<(Embedding, EmbedderKind), RecognizeError> {
        let route = self.route(alignment.native_size())?;
        let (face, _) = match route.restorer {
            Some(r) => self.aligned_face(frame, alignment, r)?,
            None => (alignment.warp(frame, ALIGNED_SIZE).ok_or(RecognizeError::Degenerate)?, None),
        };
        Ok((route.embedder.embed(&face)?, route.kind))
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
    /// The error says how many faces were found, for `enroll`'s messages. A small face takes the
    /// small-face path, as in `identify`: use [`Recognizer::single_face_template`] to enroll.
    pub fn single_face(&self, frame: &RgbImage, largest: bool) -> Result<Result<Observation, usize>, RecognizeError> {
        self.single_face_with(frame, largest, false)
    }

    /// [`Recognizer::single_face`] for a gallery template: always SFace, whatever the face's size
    /// (the gallery keeps one template format, tagged with [`Recognizer::embedder`]'s id).
    pub fn single_face_template(
        &self,
        frame: &RgbImage,
        largest: bool,
    ) -> Result<Result<Observation, usize>, RecognizeError> {
        self.single_face_with(frame, largest, true)
    }

    fn single_face_with(
        &self,
        frame: &RgbImage,
        largest: bool,
        template: bool,
    ) -> Result<Result<Observation, usize>, RecognizeError> {
        let mut obs = Vec::new();
        for face in self.detector()?.detect(frame)? {
            let p = match self.prepare(frame, &face) {
                Ok(p) => p,
                Err(RecognizeError::Degenerate) => {
                    log::warn!("skipping a face with degenerate landmarks at {:?}", face.rect);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let route = if template && p.aligned_px < ALIGNED_SIZE as f32 {
                // A template is always SFace (restored by the policy when small): the small-face
                // embedder is not even loaded.
                let restorer = if p.aligned_px < self.restore_below { &self.restorer } else { &self.fallback };
                Route { restorer: Some(restorer.as_ref()), embedder: &self.embedder, kind: EmbedderKind::Sface }
            } else {
                self.route(p.aligned_px)?
            };
            obs.push(self.finish_routed(frame, &p, route)?.0);
        }
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

/// Matches one observation against the gallery and builds its event. `threshold` is the one of
/// the observation's path (`match.threshold`, or `embed.small_face_threshold` for a face the
/// small-face embedder made): see [`threshold_for`].
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
        embedder: obs.embedder.name().to_owned(),
        detector_score: obs.face.score,
        candidates,
    }
}

/// The match threshold for an embedding made by `embedder`: `match.threshold` for SFace,
/// `embed.small_face_threshold` for the small-face embedder (calibrated on folds 1-5).
pub fn threshold_for(config: &Config, embedder: EmbedderKind) -> f32 {
    match embedder {
        EmbedderKind::Sface => config.matching.threshold,
        _ => config.embed.small_face_threshold,
    }
}
