//! SFace's last layer, `pre_fc1` (and lrembed's, the same graph), is a Gemm of the flattened
//! 1024x7x7 feature map by a 128x50176 weight matrix: 6.4 M weights, two thirds of the model.
//! tract 0.23 packs it as f32 (25.7 MB per embedder, 51 MB of a run's ~210 MB heap with both
//! embedders loaded) and folds int8 weights back to f32 when it optimises, so quantising the
//! file would not shrink it in memory. [`replace`] swaps every such layer (an `EinSum` of one
//! input row by a constant f32 matrix of at least [`MIN_WEIGHTS`] weights) for [`GemvI8`]: the
//! matrix kept as int8 with one scale per output row (symmetric, `scale = max |w| / 127`),
//! converted to f32 on the fly and multiplied with f32 activations. 4x less memory, and the
//! layer (memory-bound: it streams its weights once) takes 0.74 ms against tract's 1.50 (quiet
//! dev machine, `farsight bench --models ... --profile`).
//!
//! Accuracy (measured with onnxruntime on 300 LFW crops, `models/MODELS.md`, "Loading in
//! tract"): cosine between the exact and the int8-row embedding >= 0.99998 for SFace and
//! lrembed, largest change of an output 0.6-1.1% of the largest output. The golden tests
//! check the f32 graph against onnxruntime at 1e-3 (with [`super::Precision::Exact`]) and
//! the shipped plan at the cosine this costs.

use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

/// Smaller matrices stay f32 in tract: only the embedders' last layer is worth a kernel.
pub const MIN_WEIGHTS: usize = 1 << 20;

/// `y[n] = scale[n] * sum over k of w[n][k] * x[k]`, the input flattened to `k` values and the
/// output to `n`.
#[derive(Debug, Clone, PartialEq)]
pub struct GemvI8 {
    pub input_shape: TVec<usize>,
    /// `n` values, e.g. `[1, n]`.
    pub output_shape: TVec<usize>,
    pub n: usize,
    pub k: usize,
    /// `[n][k]`, row-major.
    pub weights: Arc<Vec<i8>>,
    pub scales: Arc<Vec<f32>>,
}

impl Eq for GemvI8 {}

impl std::hash::Hash for GemvI8 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.input_shape, &self.output_shape, self.n, self.k, &self.weights).hash(state);
        self.scales.iter().for_each(|s| s.to_bits().hash(state));
    }
}

impl GemvI8 {
    /// Quantises `w` (`[n][k]`, row-major, `k` the input's size, `n` the output's) one row at a
    /// time.
    pub fn quantise(input_shape: TVec<usize>, output_shape: TVec<usize>, w: &[f32]) -> GemvI8 {
        let (n, k) = (output_shape.iter().product(), input_shape.iter().product());
        let mut weights = Vec::with_capacity(n * k);
        let mut scales = Vec::with_capacity(n);
        for row in w.chunks_exact(k) {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            weights.extend(row.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8));
            scales.push(scale);
        }
        GemvI8 { input_shape, output_shape, n, k, weights: Arc::new(weights), scales: Arc::new(scales) }
    }
}

impl Op for GemvI8 {
    fn name(&self) -> StaticName {
        "FarsightGemvI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{}x{} int8 weights, one scale a row", self.n, self.k)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for GemvI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].to_plain_array_view::<f32>()?;
        let x = x.as_slice().context("gemv input is not contiguous")?;
        ensure!(x.len() == self.k, "gemv input has {} values, expected {}", x.len(), self.k);
        let mut out = Tensor::zero::<f32>(&self.output_shape)?;
        let mut view = out.to_plain_array_view_mut::<f32>()?;
        let y = view.as_slice_mut().context("gemv output is not contiguous")?;
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature the function is compiled for.
            unsafe { gemv_avx2(&self.weights, &self.scales, x, y) };
            return Ok(tvec!(out.into_tvalue()));
        }
        gemv(&self.weights, &self.scales, x, y);
        Ok(tvec!(out.into_tvalue()))
    }
}

/// [`gemv`] compiled for AVX2 (8 lanes, and one instruction to widen 8 int8 to int32).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gemv_avx2(w: &[i8], scales: &[f32], x: &[f32], y: &mut [f32]) {
    gemv(w, scales, x, y)
}

/// Each output is one pass over its weight row; 16 partial sums so the compiler keeps them
/// in vector registers (Rust never reassociates float additions on its own).
#[inline(always)]
fn gemv(w: &[i8], scales: &[f32], x: &[f32], y: &mut [f32]) {
    const L: usize = 16;
    let k = x.len();
    for ((row, out), scale) in w.chunks_exact(k).zip(y.iter_mut()).zip(scales) {
        let mut acc = [0f32; L];
        let (rows, xs) = (row.chunks_exact(L), x.chunks_exact(L));
        let tail: f32 = rows.remainder().iter().zip(xs.remainder()).map(|(&a, b)| a as f32 * b).sum();
        for (a, b) in rows.zip(xs) {
            for j in 0..L {
                acc[j] += a[j] as f32 * b[j];
            }
        }
        *out = scale * (acc.iter().sum::<f32>() + tail);
    }
}

impl TypedOp for GemvI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].shape.as_concrete() == Some(&self.input_shape[..]));
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(f32::datum_type()), (self.n * self.k).to_dim())))
    }

    as_op!();
}

/// The `EinSum` `node` as a [`GemvI8`] when it is one input row times a constant f32 matrix
/// over the same axes, with at least [`MIN_WEIGHTS`] weights: in SFace after tract's declutter
/// (which drops the batch axis) `bak,nbak->mn`, with the input row `[1024, 7, 7]`, the matrix
/// `[128, 1024, 7, 7]` and an output `[1, 128]`; a leading batch axis of 1 (`mbak`) is fine too.
fn as_gemv(model: &TypedModel, node: &TypedNode) -> TractResult<Option<GemvI8>> {
    let Some(einsum) = node.op_as::<EinSum>() else { return Ok(None) };
    if einsum.q_params.is_some() || einsum.operating_dt != f32::datum_type() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let (ins, outs) = einsum.axes.to_strs();
    let ([a, b], [o]) = (&ins[..], &outs[..]) else { return Ok(None) };
    let Some(n) = b.chars().next() else { return Ok(None) };
    let reduced = &b[n.len_utf8()..];
    // the input row: exactly the reduced axes, or a batch axis first that the output keeps
    let batch = a.len() == reduced.len() + 1 && a.ends_with(reduced);
    if reduced.is_empty() || !(a == reduced || batch) || !o.contains(n) || o.chars().any(|c| reduced.contains(c)) {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    let wf = model.outlet_fact(node.inputs[1])?;
    let y = model.outlet_fact(OutletId::new(node.id, 0))?;
    let (Some(xs), Some(ys), Some(konst)) = (x.shape.as_concrete(), y.shape.as_concrete(), wf.konst.clone()) else {
        return Ok(None);
    };
    let ws = konst.shape();
    let row = if batch { xs.split_first().filter(|(&b, _)| b == 1).map(|(_, r)| r) } else { Some(xs) };
    if x.datum_type != f32::datum_type()
        || konst.datum_type() != f32::datum_type()
        || row != Some(&ws[1..])
        || ys.iter().product::<usize>() != ws[0]
        || konst.len() < MIN_WEIGHTS
    {
        return Ok(None);
    }
    let w = konst.to_plain_array_view::<f32>()?;
    let w = w.as_slice().context("gemv weights are not contiguous")?;
    Ok(Some(GemvI8::quantise(xs.into(), ys.into(), w)))
}

/// Replaces every large constant-matrix layer [`GemvI8`] handles (see the module).
pub fn replace(model: &mut TypedModel) -> TractResult<()> {
    for id in model.eval_order()? {
        let node = model.node(id);
        if let Some(op) = as_gemv(model, node)? {
            TypedModelPatch::replace_single_op(model, node, &node.inputs[..1], op)?.apply(model)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel against a plain f64 product with the dequantised weights, on a length that
    /// is not a multiple of the lane count; and the quantisation error bounded by half a step.
    #[test]
    fn int8_gemv_computes_the_dequantised_product_and_rounds_to_half_a_step() {
        let (n, k) = (5, 1003);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1 + i / k) as f32).collect();
        let x: Vec<f32> = (0..k).map(|i| (i * 104729 % 997) as f32 / 498.0 - 1.0).collect();
        let op = GemvI8::quantise(tvec![1, k], tvec![1, n], &w);
        for (r, s) in op.scales.iter().enumerate() {
            for i in 0..k {
                let back = op.weights[r * k + i] as f32 * s;
                assert!((back - w[r * k + i]).abs() <= s * 0.5 + 1e-6);
            }
        }
        let mut y = vec![0f32; n];
        gemv(&op.weights, &op.scales, &x, &mut y);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let mut y2 = vec![0f32; n];
            // SAFETY: checked above.
            unsafe { gemv_avx2(&op.weights, &op.scales, &x, &mut y2) };
            assert_eq!(y, y2);
        }
        for (r, (got, row)) in y.iter().zip(op.weights.chunks_exact(k)).enumerate() {
            let want: f64 = row.iter().zip(&x).map(|(&a, &b)| a as f64 * op.scales[r] as f64 * b as f64).sum();
            assert!((*got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "row {r}: {got} vs {want}");
        }
    }
}
