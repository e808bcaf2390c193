//! Face embedding: SFace (OpenCV zoo, converted to fp32, see `models/MODELS.md`) turns an aligned
//! 112x112 RGB face into an L2-normalised 128-d vector; cosine similarity is then a dot product.
//! Preprocessing is exactly what SFace was trained with: RGB (not BGR: BGR lowers genuine
//! scores), 0..255 floats, NCHW, no mean or scale.

use crate::align::ALIGNED_SIZE;
use crate::model::{ModelError, ModelFile, Plan};
use image::RgbImage;
use std::path::Path;

/// Length of an SFace embedding.
pub const EMBEDDING_DIM: usize = 128;
/// The embedder's file name inside the models folder.
pub const EMBEDDER_FILE: &str = "sface.onnx";
/// The embedder's name; stored with every gallery template together with the file's sha256.
pub const EMBEDDER_NAME: &str = "sface-2021dec";

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

/// The loaded embedder; share it behind an `Arc` between threads.
#[derive(Debug)]
pub struct Embedder {
    plan: Plan,
    id: EmbedderId,
}

impl Embedder {
    /// Loads `models_dir/sface.onnx`, fixes its input to 1x3x112x112 and checks it returns one
    /// 128-d vector, so a wrong model fails at start.
    pub fn load(models_dir: &Path) -> Result<Self, ModelError> {
        let file = ModelFile::load(&models_dir.join(EMBEDDER_FILE))?;
        let s = ALIGNED_SIZE as usize;
        let id = EmbedderId { name: EMBEDDER_NAME.to_owned(), sha256: file.sha256().to_owned() };
        let plan = file.into_plan(&[1, 3, s, s])?;
        plan.expect_outputs(&[vec![1, EMBEDDING_DIM]], "128-d face embedder")?;
        Ok(Self { plan, id })
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
