//! Restoration: brings a low-resolution aligned face (n x n, n < 112) up to the 112x112 the
//! embedder takes. This is the seam FTLGAN plugs into; today it offers `none` (pixel replication:
//! what the embedder sees without any restoration) and `bicubic` (Catmull-Rom interpolation).
//! Faces already at 112 px or more are never restored.

use crate::align::ALIGNED_SIZE;
use image::imageops::FilterType;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// The restoration methods, by their names on the command line and in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RestoreKind {
    /// Nearest-neighbour upscaling: the raw low-resolution pixels, enlarged.
    None,
    /// Bicubic (Catmull-Rom) upscaling.
    Bicubic,
}

impl RestoreKind {
    pub fn name(self) -> &'static str {
        match self {
            RestoreKind::None => "none",
            RestoreKind::Bicubic => "bicubic",
        }
    }
}

impl std::fmt::Display for RestoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RestoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "none" => Ok(RestoreKind::None),
            "bicubic" => Ok(RestoreKind::Bicubic),
            other => Err(format!("unknown restorer {other:?} (known: none, bicubic)")),
        }
    }
}

/// Why a face could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot restore an empty {0}x{1} face")]
    Empty(u32, u32),
}

/// Turns an aligned low-resolution face into an aligned 112x112 face.
pub trait Restorer: Send + Sync {
    /// The name this restorer is reported under (events, evaluation rows).
    fn name(&self) -> &str;
    /// Restores `face` (square, any side) to 112x112.
    fn restore(&self, face: &RgbImage) -> Result<RgbImage, RestoreError>;
}

/// Plain interpolation restorers (`none`, `bicubic`).
#[derive(Debug, Clone, Copy)]
pub struct Interpolate(pub RestoreKind);

impl Restorer for Interpolate {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn restore(&self, face: &RgbImage) -> Result<RgbImage, RestoreError> {
        let (w, h) = face.dimensions();
        if w == 0 || h == 0 {
            return Err(RestoreError::Empty(w, h));
        }
        if (w, h) == (ALIGNED_SIZE, ALIGNED_SIZE) {
            return Ok(face.clone());
        }
        let filter = match self.0 {
            RestoreKind::None => FilterType::Nearest,
            RestoreKind::Bicubic => FilterType::CatmullRom,
        };
        Ok(image::imageops::resize(face, ALIGNED_SIZE, ALIGNED_SIZE, filter))
    }
}

/// Builds the restorer for `kind`.
pub fn build(kind: RestoreKind) -> Box<dyn Restorer> {
    Box::new(Interpolate(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn none_replicates_pixels_and_bicubic_interpolates() {
        let small = RgbImage::from_fn(14, 14, |x, _| if x < 7 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) });
        let none = build(RestoreKind::None).restore(&small).unwrap();
        let bic = build(RestoreKind::Bicubic).restore(&small).unwrap();
        assert_eq!(none.dimensions(), (112, 112));
        assert_eq!(bic.dimensions(), (112, 112));
        // At the edge between the halves, nearest keeps hard values, bicubic blends.
        assert!(none.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        assert!(bic.pixels().any(|p| p.0[0] > 20 && p.0[0] < 235));
    }

    #[test]
    fn full_size_faces_pass_through_and_empty_faces_are_refused() {
        let face = RgbImage::from_pixel(112, 112, Rgb([9, 8, 7]));
        assert_eq!(build(RestoreKind::Bicubic).restore(&face).unwrap(), face);
        assert!(build(RestoreKind::None).restore(&RgbImage::new(0, 0)).is_err());
    }

    #[test]
    fn restorer_names_parse_back() {
        for k in [RestoreKind::None, RestoreKind::Bicubic] {
            assert_eq!(k.name().parse::<RestoreKind>().unwrap(), k);
        }
        assert!("ftlgan-typo".parse::<RestoreKind>().is_err());
    }
}
