//! The only module that touches tract: reads an ONNX file once, fixes its input shape before
//! optimising (tract optimises far better with concrete dimensions), and runs the plan.
//! A [`ModelFile`] is parsed once and can make plans for several input shapes (the detector sees
//! frames of different sizes); a [`Plan`] is shared between threads (`Arc`), each `run` gets its
//! own scratch state. Keeping tract behind this module (this file, `model/depthwise.rs` and
//! `model/gemv.rs`) means a tract upgrade touches nothing else.

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
    /// A model released after its start-up check whose file is no longer the one checked.
    #[error("model file {path} changed since farsight started: restart farsight to load the new file")]
    Changed { path: PathBuf },
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
        // The file is hashed as a stream, then read once into a buffer tract decodes in place:
        // prost's copy of a big initializer (SFace's 25 MB last layer) is then the only one.
        // Decoding from tract's memory map instead copied each such field twice (into a
        // `Bytes`, then into the field's Vec) with the whole file mapped beside them: 150 -> 125
        // MiB at lrembed's load, the peak of a 640x480 `run`. Reading into a Vec of our own and
        // giving tract a copy of it kept three copies of SFace's 39 MB alive at once.
        let sha256 = sha256_file(path)?;
        let parse_err = |e: TractError| ModelError::Parse { path: path.to_owned(), source: e.into() };
        let onnx = onnx();
        let mut file =
            std::fs::File::open(path).map_err(|source| ModelError::Read { path: path.to_owned(), source })?;
        let proto = onnx.proto_model_for_read(&mut file).map_err(parse_err)?;
        let model = onnx.model_for_proto_model(&proto).map_err(parse_err)?;
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
        Self::plan_model(self.model.clone(), &self.path, shape, Precision::Shipped)
    }

    /// [`ModelFile::plan`] with every layer in f32 as the file has it (no int8 rows, see
    /// [`Precision`]): what the golden tests hold to onnxruntime at float rounding.
    pub fn plan_exact(&self, shape: &[usize]) -> Result<Plan, ModelError> {
        Self::plan_model(self.model.clone(), &self.path, shape, Precision::Exact)
    }

    /// [`ModelFile::plan`] for a role that needs one shape only: the parsed model is handed to
    /// the optimiser instead of cloned, so its weights are not kept alive beside the copies the
    /// optimiser makes (SFace's peak while planning: 121 -> 83 MiB of heap).
    pub fn into_plan(self, shape: &[usize]) -> Result<Plan, ModelError> {
        Self::plan_model(self.model, &self.path, shape, Precision::Shipped)
    }

    fn plan_model(
        model: InferenceModel,
        path: &Path,
        shape: &[usize],
        precision: Precision,
    ) -> Result<Plan, ModelError> {
        let shape_err =
            |e: TractError| ModelError::Shape { path: path.to_owned(), shape: shape.to_vec(), source: e.into() };
        let runnable = model
            .with_input_fact(0, f32::fact(shape).into())
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .and_then(|mut m| {
                depthwise::replace(&mut m)?;
                if precision == Precision::Shipped {
                    gemv::replace(&mut m)?;
                }
                m.into_optimized()
            })
            .and_then(|m| m.into_runnable())
            .map_err(shape_err)?;
        Ok(Plan { path: path.to_owned(), input_shape: shape.to_vec(), runnable })
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
        // tract copied it: not kept alive through the run (a 640x480 detector input is 3.7 MB,
        // per worker).
        drop(input);
        let outputs = self.runnable.run(tvec!(tensor.into_tvalue())).map_err(run_err)?;
        outputs
            .iter()
            .map(|o| {
                let view = o.to_plain_array_view::<f32>().map_err(run_err)?;
                Ok(Output { shape: view.shape().to_vec(), data: view.iter().copied().collect() })
            })
            .collect()
    }

    /// Runs the plan `iterations` times (after two warm-ups) on `input` and returns each node's
    /// median CPU time on this thread, slowest first: the per-operation profile behind
    /// `farsight bench --models --profile`. Thread CPU time, not wall time, so other processes on
    /// the machine inflate it little.
    pub fn profile(&self, input: &[f32], iterations: usize) -> Result<Vec<NodeProfile>, ModelError> {
        let run_err = |e: TractError| ModelError::Run { path: self.path.clone(), source: e.into() };
        let tensor = Tensor::from_shape(&self.input_shape, input).map_err(run_err)?;
        let model = self.runnable.model();
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); model.nodes().len()];
        let mut state = self.runnable.spawn().map_err(run_err)?;
        for it in 0..iterations.max(1) + 2 {
            state
                .run_plan_with_eval(tvec!(tensor.clone().into_tvalue()), |ctx, op_state, node, inputs| {
                    let start = thread_cpu_ms();
                    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    if it >= 2 {
                        times[node.id].push(thread_cpu_ms() - start);
                    }
                    out
                })
                .map_err(run_err)?;
        }
        let mut rows: Vec<NodeProfile> = times
            .into_iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
            .map(|(id, mut t)| {
                t.sort_by(f64::total_cmp);
                let node = model.node(id);
                NodeProfile {
                    name: node.name.clone(),
                    op: node.op().name().to_string(),
                    info: node.op().info().unwrap_or_default().join("; "),
                    output: node.outputs.first().map(|o| format!("{:?}", o.fact)).unwrap_or_default(),
                    cpu_ms: t[t.len() / 2],
                }
            })
            .collect();
        rows.sort_by(|a, b| b.cpu_ms.total_cmp(&a.cpu_ms));
        Ok(rows)
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

/// tract's ONNX parser with farsight's replacements for operators tract runs slowly on our
/// graphs (see [`prelu`]).
fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert("PRelu", |_, _| Ok((tract_onnx::tract_hir::internal::expand(prelu::Prelu), vec![])));
    onnx
}

/// How a plan keeps its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    /// The embedders' last layer (6.4 M weights each) as int8 rows ([`gemv`]): 19 MB less
    /// per embedder, cosine to the exact embedding >= 0.99998.
    Shipped,
    /// Every weight f32, as in the file.
    Exact,
}

/// The embedders' large last layer kept as int8 rows (see the module).
mod gemv;

/// Our depthwise 3x3 convolution and 2x2 max pool, which [`ModelFile::plan`] puts in place of
/// tract's (see the module).
mod depthwise;

/// PRelu as tract 0.23 expands it (`Iff(0 < x, x, slope * x)`) costs three passes over the
/// tensor, and the per-channel `slope * x` runs as a broadcast multiply at ~4 ns an element:
/// 58% of SFace's time (27 PRelu after every convolution). With a constant slope this expansion
/// wires `x + (slope - 1) * min(x, 0)` instead, which tract runs as one fused min-multiply pass
/// and one add: SFace 58 -> 31 ms of CPU on the dev machine, the same values up to float
/// rounding (max |diff| vs onnxruntime on the golden crop stays ~1e-5 on outputs of norm 10).
mod prelu {
    use tract_onnx::tract_hir::internal::*;
    use tract_onnx::tract_hir::ops::math;

    #[derive(Debug, Clone, Hash, PartialEq, Eq)]
    pub struct Prelu;

    impl Expansion for Prelu {
        fn name(&self) -> StaticName {
            "Prelu".into()
        }

        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            check_input_arity(inputs, 2)?;
            check_output_arity(outputs, 1)?;
            s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
            s.equals(&inputs[0].shape, &outputs[0].shape)?;
            Ok(())
        }

        fn wire(&self, name: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
            let x = inputs[0];
            let rank = model.outlet_fact(x)?.rank();
            let dt = model.outlet_fact(x)?.datum_type;
            let zero = tensor0(0.0).cast_to_dt(dt)?.into_owned().broadcast_into_rank(rank)?;
            let zero = model.add_const(format!("{name}.zero"), zero)?;
            match model.outlet_fact(inputs[1])?.konst.clone() {
                Some(k) if dt == f32::datum_type() && k.rank() <= rank => {
                    let mut minus_one = k.as_ref().clone();
                    minus_one.to_plain_array_view_mut::<f32>()?.mapv_inplace(|v| v - 1.0);
                    let minus_one =
                        model.add_const(format!("{name}.slope-minus-one"), minus_one.broadcast_into_rank(rank)?)?;
                    let neg = model.wire_node(format!("{name}.neg"), math::min(), &[x, zero])?[0];
                    let scaled = model.wire_node(format!("{name}.scaled"), math::mul(), &[neg, minus_one])?[0];
                    model.wire_node(name, math::add(), &[x, scaled])
                }
                // A computed slope (no model of ours has one): tract's own expansion.
                _ => {
                    let mut slope = inputs[1];
                    while model.outlet_fact(slope)?.rank() < rank {
                        slope = model.wire_node(
                            format!("{name}.add-axis-{}", model.outlet_fact(slope)?.rank()),
                            AxisOp::Add(0),
                            &[slope],
                        )?[0];
                    }
                    let ab = model.wire_node(format!("{name}.mul"), math::mul(), &[x, slope])?[0];
                    let test = model.wire_node(
                        format!("{name}.test"),
                        tract_onnx::tract_core::ops::binary::TypedBinOp(
                            tract_onnx::tract_core::ops::logic::comp_gt(),
                            None,
                        ),
                        &[zero, x],
                    )?[0];
                    model.wire_node(name, tract_onnx::tract_core::ops::logic::Iff, &[test, ab, x])
                }
            }
        }
    }
}

/// One node of an optimised plan, timed by [`Plan::profile`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeProfile {
    /// The node's name (from the ONNX node it came from, with tract's suffixes).
    pub name: String,
    /// tract's operator (`OptMatMul`, `DepthWise`, `Iff`...).
    pub op: String,
    /// tract's own description of the operator (kernel chosen, fused ops...).
    pub info: String,
    /// The first output's type and shape.
    pub output: String,
    /// Median CPU time of the calling thread, ms.
    pub cpu_ms: f64,
}

/// CPU time of the calling thread, in ms.
pub fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Every model file farsight can load from its models folder (detectors, embedder, restorers).
pub const KNOWN_FILES: &[&str] = &[
    "centerface.onnx",
    "retinaface-mnet025.onnx",
    "yunet.onnx",
    "sface.onnx",
    "ftlgan.onnx",
    "ftlgan-fp32.onnx",
    "lrembed.onnx",
];

/// Lower-case hex sha256 of the file at `path`, read as a stream.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let read_err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::Missing { path: path.to_owned() }
        } else {
            ModelError::Read { path: path.to_owned(), source }
        }
    };
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).map_err(read_err)?, &mut hasher).map_err(read_err)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

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
