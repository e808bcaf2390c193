//! Restoration: brings a low-resolution aligned face (n x n, n < 112) up to the 112x112 the
//! embedder takes. `none` (pixel replication: what the embedder sees without any restoration) and
//! `bicubic` (Catmull-Rom interpolation) are plain interpolation; `ftlgan` (int8) and
//! `ftlgan-fp32` run the learned FTLGAN generator (`models/ftlgan/`) on the bicubic face.
//! Faces already at 112 px are never restored.

use crate::align::ALIGNED_SIZE;
use crate::model::{ModelError, ModelFile, Plan};
use image::imageops::FilterType;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The restoration methods, by their names on the command line and in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreKind {
    /// Nearest-neighbour upscaling: the raw low-resolution pixels, enlarged.
    None,
    /// Bicubic (Catmull-Rom) upscaling.
    Bicubic,
    /// FTLGAN, the int8 model (`models/ftlgan.onnx`), on the bicubic face.
    Ftlgan,
    /// FTLGAN, the float model (`models/ftlgan-fp32.onnx`), on the bicubic face.
    FtlganFp32,
}

impl RestoreKind {
    /// Every restorer, in the order they are listed to users.
    pub const ALL: [RestoreKind; 4] =
        [RestoreKind::None, RestoreKind::Bicubic, RestoreKind::Ftlgan, RestoreKind::FtlganFp32];

    /// The name on the command line, in the config, in events and in evaluation rows.
    pub fn name(self) -> &'static str {
        match self {
            RestoreKind::None => "none",
            RestoreKind::Bicubic => "bicubic",
            RestoreKind::Ftlgan => "ftlgan",
            RestoreKind::FtlganFp32 => "ftlgan-fp32",
        }
    }

    /// The model file inside the models folder, for the model-backed restorers.
    pub fn model_file(self) -> Option<&'static str> {
        match self {
            RestoreKind::None | RestoreKind::Bicubic => None,
            RestoreKind::Ftlgan => Some("ftlgan.onnx"),
            RestoreKind::FtlganFp32 => Some("ftlgan-fp32.onnx"),
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
        let s = s.trim();
        RestoreKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let known: Vec<&str> = RestoreKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown restorer {s:?} (known: {})", known.join(", "))
        })
    }
}

/// Why a face could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot restore an empty {0}x{1} face")]
    Empty(u32, u32),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Turns an aligned low-resolution face into an aligned 112x112 face. Built once and shared by
/// every thread that restores.
pub trait Restorer: Send + Sync {
    /// The name this restorer is reported under (events, evaluation rows).
    fn name(&self) -> &str;
    /// Restores `face` (square, any side) to 112x112.
    fn restore(&self, face: &RgbImage) -> Result<RgbImage, RestoreError>;
    /// sha256 of the model file, for model-backed restorers (reports say which file ran).
    fn model_sha256(&self) -> Option<&str> {
        None
    }
}

/// Plain interpolation restorers (`none`, `bicubic`).
#[derive(Debug, Clone, Copy)]
pub struct Interpolate(pub RestoreKind);

impl Restorer for Interpolate {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn restore(&self, face: &RgbImage) -> Result<RgbImage, RestoreError> {
        let filter = match self.0 {
            RestoreKind::None => FilterType::Nearest,
            _ => FilterType::CatmullRom,
        };
        Ok(upscale(face, filter)?.unwrap_or_else(|| face.clone()))
    }
}

/// `face` brought to 112x112 with `filter`; `None` when it already is 112x112.
fn upscale(face: &RgbImage, filter: FilterType) -> Result<Option<RgbImage>, RestoreError> {
    let (w, h) = face.dimensions();
    if w == 0 || h == 0 {
        return Err(RestoreError::Empty(w, h));
    }
    if (w, h) == (ALIGNED_SIZE, ALIGNED_SIZE) {
        return Ok(None);
    }
    Ok(Some(image::imageops::resize(face, ALIGNED_SIZE, ALIGNED_SIZE, filter)))
}

/// How to get a good FTLGAN file (the models are trained here, not downloaded), and the way out.
fn ftlgan_fix(kind: RestoreKind) -> String {
    let script = if kind == RestoreKind::FtlganFp32 { "export.py" } else { "quantise.py" };
    format!(
        "{file} is made by the FTLGAN training steps in models/ftlgan/ (models/ftlgan/{script} writes it) and \
         `python3 models/fetch.py` verifies it; or choose another restorer (restore.method = \"bicubic\", \
         eval --restore bicubic)",
        file = kind.model_file().unwrap_or("the model file")
    )
}

/// A learned restorer (FTLGAN): the face is brought to 112x112 by Catmull-Rom exactly as
/// `bicubic` does, then the model maps it to the restored face. Contract, checked at load:
/// input `[1,3,112,112]` f32 RGB 0..1 NCHW, output `[1,3,112,112]` f32 RGB 0..1.
#[derive(Debug)]
pub struct ModelRestorer {
    kind: RestoreKind,
    plan: Plan,
    sha256: String,
}

impl ModelRestorer {
    /// Loads `models_dir/<kind's file>` and checks the contract with a probe run, so a missing,
    /// corrupt or wrong file fails here (at start) with a message that names it and says what to
    /// do, never on the first small face.
    pub fn load(kind: RestoreKind, models_dir: &Path) -> Result<Self, ModelError> {
        let Some(file) = kind.model_file() else {
            return Err(ModelError::Contract {
                path: models_dir.to_owned(),
                what: format!("restorer {kind} has no model file"),
            });
        };
        let path = models_dir.join(file);
        let fix = |error: ModelError| match error {
            ModelError::Missing { path } => ModelError::NotBuilt {
                path,
                how: format!("{}, or point the config's models_dir at the folder holding it", ftlgan_fix(kind)),
            },
            error => ModelError::Unusable { error: Box::new(error), fix: format!("replace it: {}", ftlgan_fix(kind)) },
        };
        Self::load_checked(kind, &path).map_err(fix)
    }

    fn load_checked(kind: RestoreKind, path: &Path) -> Result<Self, ModelError> {
        let file = ModelFile::load(path)?;
        let s = ALIGNED_SIZE as usize;
        let contract = |what: String| ModelError::Contract { path: path.to_owned(), what };
        match file.declared_inputs().as_slice() {
            [None] => {}
            [Some(shape)] if shape == &[1, 3, s, s] => {}
            [Some(shape)] => {
                return Err(contract(format!(
                    "not a face restorer: its input is {shape:?}, a restorer takes [1, 3, 112, 112]"
                )))
            }
            inputs => {
                return Err(contract(format!("not a face restorer: {} inputs, a restorer takes one", inputs.len())))
            }
        }
        let plan = file.plan(&[1, 3, s, s])?;
        plan.expect_outputs(&[vec![1, 3, s, s]], "face restorer")?;
        let restorer = Self { kind, plan, sha256: file.sha256().to_owned() };
        // Probe: a mid-grey face must come back as finite values in 0..1 (a model that outputs
        // 0..255, or NaN from a broken quantisation, is refused here).
        let out = restorer.run(vec![0.5; 3 * s * s])?;
        if let Some(bad) = out.iter().find(|v| !(v.is_finite() && (-0.05..=1.05).contains(*v))) {
            return Err(contract(format!("on a grey probe face the restorer output {bad}, expected values in 0..1")));
        }
        Ok(restorer)
    }

    /// Runs the model on a dense NCHW `[1,3,112,112]` input; returns the output's values.
    fn run(&self, input: Vec<f32>) -> Result<Vec<f32>, ModelError> {
        let out = self.plan.run(input)?.into_iter().next().map(|o| o.data).unwrap_or_default();
        let s = ALIGNED_SIZE as usize;
        if out.len() != 3 * s * s {
            return Err(ModelError::Contract {
                path: self.plan.path().to_owned(),
                what: format!("the restorer returned {} values, expected 3x112x112", out.len()),
            });
        }
        Ok(out)
    }
}

impl Restorer for ModelRestorer {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn model_sha256(&self) -> Option<&str> {
        Some(&self.sha256)
    }

    fn restore(&self, face: &RgbImage) -> Result<RgbImage, RestoreError> {
        let Some(up) = upscale(face, FilterType::CatmullRom)? else { return Ok(face.clone()) };
        let plane = (ALIGNED_SIZE * ALIGNED_SIZE) as usize;
        let mut input = vec![0f32; 3 * plane];
        for (i, p) in up.pixels().enumerate() {
            for c in 0..3 {
                input[c * plane + i] = p.0[c] as f32 / 255.0;
            }
        }
        let out = self.run(input)?;
        Ok(RgbImage::from_fn(ALIGNED_SIZE, ALIGNED_SIZE, |x, y| {
            let i = (y * ALIGNED_SIZE + x) as usize;
            image::Rgb([0, 1, 2].map(|c| (out[c * plane + i] * 255.0).round().clamp(0.0, 255.0) as u8))
        }))
    }
}

/// Builds the restorer for `kind`; the model-backed ones load (and check) their file from
/// `models_dir`. Build once and share: loading a model takes tens of milliseconds.
pub fn build(kind: RestoreKind, models_dir: &Path) -> Result<Box<dyn Restorer>, ModelError> {
    Ok(match kind {
        RestoreKind::None | RestoreKind::Bicubic => Box::new(Interpolate(kind)),
        RestoreKind::Ftlgan | RestoreKind::FtlganFp32 => Box::new(ModelRestorer::load(kind, models_dir)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DEFAULT_MODELS_DIR};
    use image::Rgb;
    use std::path::PathBuf;

    fn models() -> PathBuf {
        PathBuf::from(DEFAULT_MODELS_DIR)
    }

    fn interp(kind: RestoreKind) -> Box<dyn Restorer> {
        build(kind, Path::new("/nonexistent")).unwrap()
    }

    /// A 14 px face-like test card: a gradient with a dark band, so bicubic has edges to blend.
    fn card(n: u32) -> RgbImage {
        RgbImage::from_fn(n, n, |x, y| {
            let band = (n / 3..n / 2).contains(&y);
            let v = if band { 30 } else { (60 + 180 * x / n.max(1)) as u8 };
            Rgb([v, v.saturating_sub(20), (100 + 10 * (y % 5)) as u8])
        })
    }

    #[test]
    fn none_replicates_pixels_and_bicubic_interpolates() {
        let small = RgbImage::from_fn(14, 14, |x, _| if x < 7 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) });
        let none = interp(RestoreKind::None).restore(&small).unwrap();
        let bic = interp(RestoreKind::Bicubic).restore(&small).unwrap();
        assert_eq!(none.dimensions(), (112, 112));
        assert_eq!(bic.dimensions(), (112, 112));
        // At the edge between the halves, nearest keeps hard values, bicubic blends.
        assert!(none.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        assert!(bic.pixels().any(|p| p.0[0] > 20 && p.0[0] < 235));
    }

    #[test]
    fn full_size_faces_pass_through_and_empty_faces_are_refused() {
        let face = RgbImage::from_pixel(112, 112, Rgb([9, 8, 7]));
        assert_eq!(interp(RestoreKind::Bicubic).restore(&face).unwrap(), face);
        assert!(interp(RestoreKind::None).restore(&RgbImage::new(0, 0)).is_err());
    }

    #[test]
    fn restorer_names_agree_on_the_command_line_in_the_config_and_in_from_str() {
        use clap::ValueEnum;
        for k in RestoreKind::ALL {
            assert_eq!(k.name().parse::<RestoreKind>().unwrap(), k);
            assert_eq!(k.to_string(), k.name());
            assert_eq!(RestoreKind::from_str(k.name(), false).unwrap(), k, "clap");
            let cfg = Config::parse(&format!("version = 1\n[restore]\nmethod = {:?}\n", k.name()), Path::new("f.toml"));
            assert_eq!(cfg.unwrap().restore.method, k, "config");
            assert_eq!(serde_json::to_value(k).unwrap(), k.name(), "json");
        }
        assert_eq!(RestoreKind::value_variants().len(), RestoreKind::ALL.len());
        let err = "ftlgan-typo".parse::<RestoreKind>().unwrap_err();
        assert!(err.contains("known: none, bicubic, ftlgan, ftlgan-fp32"), "{err}");
    }

    #[test]
    fn ftlgan_models_restore_small_faces_and_pass_full_size_ones_through() {
        for kind in [RestoreKind::Ftlgan, RestoreKind::FtlganFp32] {
            let r = build(kind, &models()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(r.name(), kind.name());
            let out = r.restore(&card(14)).unwrap();
            assert_eq!(out.dimensions(), (112, 112));
            let face = card(112);
            assert_eq!(r.restore(&face).unwrap(), face, "{kind}: a 112 px face is never touched");
            assert!(matches!(r.restore(&RgbImage::new(0, 3)), Err(RestoreError::Empty(0, 3))));
        }
    }

    #[test]
    fn ftlgan_restorer_is_shared_between_threads() {
        let r = ModelRestorer::load(RestoreKind::FtlganFp32, &models()).unwrap();
        let face = card(20);
        let first = r.restore(&face).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..2).map(|_| s.spawn(|| r.restore(&face).unwrap())).collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), first, "same input, same output on every thread");
            }
        });
        assert_eq!(r.model_sha256().map(str::len), Some(64));
        assert_eq!(interp(RestoreKind::Bicubic).model_sha256(), None);
    }

    /// A models folder holding `bytes` as `ftlgan.onnx` (nothing else).
    fn folder_with_ftlgan(bytes: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ftlgan.onnx"), bytes).unwrap();
        dir
    }

    fn refusal(dir: &Path) -> String {
        match build(RestoreKind::Ftlgan, dir) {
            Ok(_) => panic!("a bad ftlgan.onnx in {} was accepted", dir.display()),
            Err(e) => e.to_string(),
        }
    }

    /// Every refusal names the file and says how to make a good one.
    fn says_what_to_do(msg: &str) {
        assert!(msg.contains("ftlgan.onnx"), "{msg}");
        assert!(msg.contains("models/ftlgan/") && msg.contains("models/fetch.py"), "{msg}");
        assert!(msg.contains("bicubic"), "{msg}");
    }

    #[test]
    fn a_missing_ftlgan_file_names_the_steps_that_make_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = build(RestoreKind::Ftlgan, dir.path()).err().unwrap();
        assert!(matches!(err, ModelError::NotBuilt { .. }), "{err}");
        let msg = err.to_string();
        says_what_to_do(&msg);
        assert!(msg.contains("is missing") && msg.contains("quantise.py"), "{msg}");
        let msg = build(RestoreKind::FtlganFp32, dir.path()).err().unwrap().to_string();
        assert!(msg.contains("ftlgan-fp32.onnx is missing") && msg.contains("export.py"), "{msg}");
    }

    #[test]
    fn a_corrupt_ftlgan_file_is_refused() {
        // Deterministic pseudo-random bytes (an xorshift), not a protobuf.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let dir = folder_with_ftlgan(&bytes);
        let msg = refusal(dir.path());
        says_what_to_do(&msg);
        assert!(msg.contains("not an ONNX model"), "{msg}");
        let dir = folder_with_ftlgan(b"");
        says_what_to_do(&refusal(dir.path()));
    }

    #[test]
    fn the_embedder_copied_as_ftlgan_is_refused_for_its_output_shape() {
        let dir = folder_with_ftlgan(&std::fs::read(models().join("sface.onnx")).unwrap());
        let msg = refusal(dir.path());
        says_what_to_do(&msg);
        assert!(msg.contains("not a face restorer") && msg.contains("[[1, 128]]"), "{msg}");
    }

    #[test]
    fn a_model_for_another_input_size_is_refused() {
        // YuNet declares a 1x3x640x640 input.
        let dir = folder_with_ftlgan(&std::fs::read(models().join("yunet.onnx")).unwrap());
        let msg = refusal(dir.path());
        says_what_to_do(&msg);
        assert!(msg.contains("its input is [1, 3, 640, 640]"), "{msg}");
    }
}
