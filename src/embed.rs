//! Face embedding: SFace (OpenCV zoo, converted to fp32, see `models/MODELS.md`) turns an aligned
//! 112x112 RGB face into an L2-normalised 128-d vector; cosine similarity is then a dot product.
//! Preprocessing is exactly what SFace was trained with: RGB (not BGR: BGR lowers genuine
//! scores), 0..255 floats, NCHW, no mean or scale.
//!
//! The small-face path ([`EmbedConfig`]): faces whose aligned crop spans fewer frame pixels than
//! `small_face_below_px` are upscaled by Catmull-Rom (the `bicubic` restorer) and embedded by
//! `lrembed` (SFace fine-tuned so a small face lands where SFace puts the full-resolution one,
//! `models/lrembed/`), whose vectors live in SFace's space: they are matched against the same
//! SFace templates, with their own threshold. Templates are always made by SFace.

use crate::align::ALIGNED_SIZE;
use crate::model::{ModelError, ModelFile, Plan};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Length of an SFace embedding.
pub const EMBEDDING_DIM: usize = 128;
/// The embedder's file name inside the models folder.
pub const EMBEDDER_FILE: &str = "sface.onnx";
/// The embedder's name; stored with every gallery template together with the file's sha256.
pub const EMBEDDER_NAME: &str = "sface-2021dec";
/// The small-face embedder's file name inside the models folder.
pub const SMALL_FACE_FILE: &str = "lrembed.onnx";
/// The small-face embedder's name (run `a112`, step 600; `models/MODELS.md`, "lrembed").
pub const SMALL_FACE_NAME: &str = "lrembed-a112-600";

/// The embedders, by their names on the command line and in the config. Both make SFace-space
/// vectors; only [`EmbedderKind::Sface`] makes gallery templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EmbedderKind {
    /// SFace (`models/sface.onnx`): the gallery's embedder, for every face.
    Sface,
    /// lrembed (`models/lrembed.onnx`): SFace fine-tuned for small faces upscaled by bicubic.
    Lrembed,
}

impl EmbedderKind {
    /// Every embedder, in the order they are listed to users.
    pub const ALL: [EmbedderKind; 2] = [EmbedderKind::Sface, EmbedderKind::Lrembed];

    /// The name on the command line, in the config and in evaluation rows.
    pub fn name(self) -> &'static str {
        match self {
            EmbedderKind::Sface => "sface",
            EmbedderKind::Lrembed => "lrembed",
        }
    }

    /// The model file inside the models folder.
    pub fn model_file(self) -> &'static str {
        match self {
            EmbedderKind::Sface => EMBEDDER_FILE,
            EmbedderKind::Lrembed => SMALL_FACE_FILE,
        }
    }

    /// The name stored with embeddings (and, for SFace, with gallery templates).
    pub fn id_name(self) -> &'static str {
        match self {
            EmbedderKind::Sface => EMBEDDER_NAME,
            EmbedderKind::Lrembed => SMALL_FACE_NAME,
        }
    }
}

impl std::fmt::Display for EmbedderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `[embed]` config section: which embedder small faces take, below which size, and the
/// match threshold for what it embeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedConfig {
    /// Embedder for faces whose aligned crop spans fewer than `small_face_below_px` frame pixels
    /// (they are upscaled by bicubic, not by `restore.method`, first). `"sface"` turns the
    /// small-face path off: every face then goes through `restore` and SFace.
    pub small_face_embedder: EmbedderKind,
    pub small_face_below_px: f32,
    /// Cosine at or above which a face embedded by the small-face path (or a track whose every
    /// best shot was) matches; `match.threshold` holds for everything else. lrembed's impostor
    /// scores against full-resolution templates sit higher than SFace's (mean ~0.11 vs ~0.05 at
    /// 14 px), so its FAR-1e-3 threshold is higher too.
    pub small_face_threshold: f32,
}

impl Default for EmbedConfig {
    /// lrembed below 28 aligned px: on LFW folds 6-10 it beats SFace behind the restorer at 7-14
    /// px in both modes, while at 28 px (crop) and at a 28 px face box (~38 aligned px, frame) its
    /// TAR@FAR=1e-3 falls below bicubic's. Threshold 0.41: the highest cosine threshold giving
    /// FAR <= 1e-3 on folds 1-5 at 10, 14 and 20 px (0.414, 0.370, 0.364), see
    /// `models/MODELS.md`, "lrembed".
    fn default() -> Self {
        Self { small_face_embedder: EmbedderKind::Lrembed, small_face_below_px: 28.0, small_face_threshold: 0.41 }
    }
}

impl EmbedConfig {
    /// Appends every problem with the values to `p`. Pure.
    pub fn validate(&self, p: &mut Vec<String>) {
        if !(self.small_face_below_px >= 0.0 && self.small_face_below_px <= ALIGNED_SIZE as f32) {
            p.push(format!(
                "embed.small_face_below_px = {} must be between 0 and {ALIGNED_SIZE} (aligned pixels; the small-face \
                 path takes faces smaller than the embedder's input)",
                self.small_face_below_px
            ));
        }
        if !(self.small_face_threshold >= -1.0 && self.small_face_threshold <= 1.0) {
            p.push(format!(
                "embed.small_face_threshold = {} must be a cosine similarity in [-1, 1]",
                self.small_face_threshold
            ));
        }
    }

    /// The small-face embedder when the path is on (an embedder other than SFace, below a size
    /// above zero).
    pub fn small_face(&self) -> Option<EmbedderKind> {
        (self.small_face_embedder != EmbedderKind::Sface && self.small_face_below_px > 0.0)
            .then_some(self.small_face_embedder)
    }
}

/// An L2-normalised embedding.
pub type Embedding = Vec<f32>;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the embedder takes a {ALIGNED_SIZE}x{ALIGNED_SIZE} face, got {0}x{1}")]
    WrongSize(u32, u32),
    #[error("the embedder returned a zero or non-finite vector")]
    Degenerate,
}

/// Which model made an embedding: templates from different models are never compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderId {
    pub name: String,
    pub sha256: String,
}

/// The loaded embedder; share it behind an `Arc` between threads (a clone shares the plan).
#[derive(Debug, Clone)]
pub struct Embedder {
    plan: Plan,
    id: EmbedderId,
}

impl Embedder {
    /// Loads `models_dir/sface.onnx`, fixes its input to 1x3x112x112 and checks it returns one
    /// 128-d vector, so a wrong model fails at start.
    pub fn load(models_dir: &Path) -> Result<Self, ModelError> {
        Self::load_kind(models_dir, EmbedderKind::Sface)
    }

    /// Loads the embedder `kind` from `models_dir` with [`Embedder::load`]'s checks. A missing,
    /// corrupt or wrong-shape small-face model is refused with what to do about it (restore the
    /// committed file, or turn the path off).
    pub fn load_kind(models_dir: &Path, kind: EmbedderKind) -> Result<Self, ModelError> {
        let path = models_dir.join(kind.model_file());
        let load = || -> Result<Self, ModelError> {
            let file = ModelFile::load(&path)?;
            let s = ALIGNED_SIZE as usize;
            let id = EmbedderId { name: kind.id_name().to_owned(), sha256: file.sha256().to_owned() };
            let plan = file.into_plan(&[1, 3, s, s])?;
            plan.expect_outputs(&[vec![1, EMBEDDING_DIM]], "128-d face embedder")?;
            Ok(Self { plan, id })
        };
        match (kind, load()) {
            (EmbedderKind::Sface, r) | (_, r @ Ok(_)) => r,
            (_, Err(ModelError::Missing { path })) => Err(ModelError::NotBuilt {
                path,
                how: format!(
                    "it is committed to the farsight repository (git checkout -- models/{f}; `python3 \
                     models/fetch.py --check` verifies it) and installed by the Debian package, or set \
                     embed.small_face_embedder = \"sface\" to turn the small-face path off",
                    f = kind.model_file()
                ),
            }),
            (_, Err(e)) => Err(ModelError::Unusable {
                error: Box::new(e),
                fix: format!(
                    "restore the committed models/{} (`python3 models/fetch.py --check` verifies its sha256), or set \
                     embed.small_face_embedder = \"sface\" to turn the small-face path off",
                    kind.model_file()
                ),
            }),
        }
    }

    pub fn id(&self) -> &EmbedderId {
        &self.id
    }

    /// Embeds an aligned 112x112 face.
    pub fn embed(&self, face: &RgbImage) -> Result<Embedding, EmbedError> {
        let (w, h) = face.dimensions();
        if (w, h) != (ALIGNED_SIZE, ALIGNED_SIZE) {
            return Err(EmbedError::WrongSize(w, h));
        }
        let plane = (w * h) as usize;
        let mut input = vec![0f32; 3 * plane];
        for (i, p) in face.pixels().enumerate() {
            for c in 0..3 {
                input[c * plane + i] = p.0[c] as f32;
            }
        }
        let out = self.plan.run(input)?;
        let v = out.into_iter().next().map(|o| o.data).unwrap_or_default();
        normalize(v).ok_or(EmbedError::Degenerate)
    }
}

/// Scales `v` to unit length; `None` for a zero or non-finite vector.
pub fn normalize(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

/// Cosine similarity of two L2-normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_refuses_zero_and_nan() {
        assert!(normalize(vec![0.0; 4]).is_none());
        assert!(normalize(vec![f32::NAN, 1.0]).is_none());
        let v = normalize(vec![3.0, 4.0]).unwrap();
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-6);
        assert!((v[0] - 0.6).abs() < 1e-6);
    }
}
