//! The only module that touches tract: reads an ONNX file once, fixes its input shape before
//! optimising (tract optimises far better with concrete dimensions), and runs the plan.
//! A [`ModelFile`] is parsed once and can make plans for several input shapes (the detector sees
//! frames of different sizes); a [`Plan`] is shared between threads (`Arc`), each `run` gets its
//! own scratch state. Keeping tract behind this file means a tract upgrade touches one file.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::*;

/// Why a model could not be loaded or run. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model file {path} is missing: run `python3 models/fetch.py` (or point the config's \
         models_dir at the folder holding it)"
    )]
    Missing { path: PathBuf },
    /// A file no download provides (a model trained here): `how` says which steps make it.
    #[error("model file {path} is missing: {how}")]
    NotBuilt { path: PathBuf, how: String },
    #[error("cannot read model file {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an ONNX model tract can load (corrupt or wrong file?)")]
    Parse { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("{path} does not accept input shape {shape:?} (wrong model for this role?)")]
    Shape { path: PathBuf, shape: Vec<usize>, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("{path}: {what}")]
    Contract { path: PathBuf, what: String },
    #[error("running {path} failed")]
    Run { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    /// A file that is there but unusable in its role, with what to do about it. `error` is kept
    /// out of the source chain on purpose: its text is already part of this message.
    #[error("{error}; {fix}")]
    Unusable { error: Box<ModelError>, fix: String },
}

/// One model output, copied out of tract as a dense row-major f32 array.
#[derive(Debug, Clone)]
pub struct Output {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A parsed ONNX file, ready to be planned for concrete input shapes.
#[derive(Clone)]
pub struct ModelFile {
    path: PathBuf,
    sha256: String,
    model: InferenceModel,
}

impl std::fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFile").field("path", &self.path).field("sha256", &self.sha256).finish()
    }
}

impl ModelFile {
    /// Reads and parses `path`, recording its sha256.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ModelError::Missing { path: path.to_owned() }
            } else {
                ModelError::Read { path: path.to_owned(), source }
            }
        })?;
        let sha256 = sha256_hex(&bytes);
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(&bytes))
            .map_err(|e| ModelError::Parse { path: path.to_owned(), source: e.into() })?;
        Ok(Self { path: path.to_owned(), sha256, model })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lower-case hex sha256 of the file's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The input shapes the file declares, one per graph input: `Some` where every dim is a
    /// concrete number, `None` where a dim is symbolic or unknown. Files are not always right
    /// about their inputs (CenterFace says 10x3x32x32), so only roles whose exporter is ours
    /// should hold a file to these.
    pub fn declared_inputs(&self) -> Vec<Option<Vec<usize>>> {
        let n = self.model.input_outlets().map_or(0, |o| o.len());
        (0..n)
            .map(|i| {
                let fact = self.model.input_fact(i).ok()?;
                fact.shape.as_concrete_finite().ok().flatten().map(|s| s.to_vec())
            })
            .collect()
    }

    /// Optimises the model for one f32 input of the given shape (NCHW for every model we ship).
    pub fn plan(&self, shape: &[usize]) -> Result<Plan, ModelError> {
        let shape_err =
            |e: TractError| ModelError::Shape { path: self.path.clone(), shape: shape.to_vec(), source: e.into() };
        let runnable = self
            .model
            .clone()
            .with_input_fact(0, f32::fact(shape).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(shape_err)?;
        Ok(Plan { path: self.path.clone(), input_shape: shape.to_vec(), runnable })
    }
}

/// An optimised model for one input shape. Cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct Plan {
    path: PathBuf,
    input_shape: Vec<usize>,
    runnable: Arc<TypedRunnableModel>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan").field("path", &self.path).field("input", &self.input_shape).finish()
    }
}

impl Plan {
    /// The model file this plan was made from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Runs the model on `input`, a dense row-major tensor of [`Plan::input_shape`].
    pub fn run(&self, input: Vec<f32>) -> Result<Vec<Output>, ModelError> {
        let run_err = |e: TractError| ModelError::Run { path: self.path.clone(), source: e.into() };
        let tensor = Tensor::from_shape(&self.input_shape, &input).map_err(run_err)?;
        let outputs = self.runnable.run(tvec!(tensor.into_tvalue())).map_err(run_err)?;
        outputs
            .iter()
            .map(|o| {
                let view = o.to_plain_array_view::<f32>().map_err(run_err)?;
                Ok(Output { shape: view.shape().to_vec(), data: view.iter().copied().collect() })
            })
            .collect()
    }

    /// The concrete shapes of the plan's outputs, as tract inferred them.
    pub fn output_shapes(&self) -> Result<Vec<Vec<usize>>, ModelError> {
        let model = self.runnable.model();
        model
            .output_outlets()
            .map_err(|e| ModelError::Run { path: self.path.clone(), source: e.into() })?
            .iter()
            .map(|o| {
                let fact =
                    model.outlet_fact(*o).map_err(|e| ModelError::Run { path: self.path.clone(), source: e.into() })?;
                fact.shape.as_concrete().map(|s| s.to_vec()).ok_or_else(|| ModelError::Contract {
                    path: self.path.clone(),
                    what: format!("output shape {:?} is not concrete", fact.shape),
                })
            })
            .collect()
    }

    /// Fails with [`ModelError::Contract`] unless the outputs have exactly these shapes.
    pub fn expect_outputs(&self, expected: &[Vec<usize>], role: &str) -> Result<(), ModelError> {
        let got = self.output_shapes()?;
        if got != expected {
            return Err(ModelError::Contract {
                path: self.path.clone(),
                what: format!("not a {role}: outputs {got:?}, expected {expected:?}"),
            });
        }
        Ok(())
    }
}

/// Every model file farsight can load from its models folder (detectors, embedder, restorers).
pub const KNOWN_FILES: &[&str] =
    &["centerface.onnx", "retinaface-mnet025.onnx", "yunet.onnx", "sface.onnx", "ftlgan.onnx", "ftlgan-fp32.onnx"];

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_says_how_to_fetch_it() {
        let err = ModelFile::load(Path::new("/nonexistent/centerface.onnx")).unwrap_err();
        assert!(matches!(err, ModelError::Missing { .. }));
        assert!(err.to_string().contains("models/fetch.py"), "{err}");
    }

    #[test]
    fn corrupt_model_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.onnx");
        std::fs::write(&path, b"this is not protobuf at all \xff\xfe").unwrap();
        let err = ModelFile::load(&path).unwrap_err();
        assert!(matches!(err, ModelError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("broken.onnx"));
    }

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
