//! Depthwise 3x3 convolutions (SFace has 13, the detectors more) run through tract 0.23's
//! `DepthWise`, which walks NCHW planes with its generic zone scanner: on small planes and at
//! stride 2 it managed 1-2 G multiply-adds a second, 24% of SFace's time for ~2% of its work,
//! and tract folds neither the BatchNorm nor the PRelu after it. [`replace`] swaps each one (f32,
//! NCHW or CHW, batch 1, 3x3, stride 1 or 2, padding 1, constant weights) for [`Dw3x3`], which
//! computes an output row in one pass over contiguous slices the compiler vectorises (AVX2 when
//! the CPU has it, NEON on ARM; a stride-2 plane is split into even and odd pixels first), and
//! absorbs the per-channel multiply/add and the PRelu that follow. Same for YuNet's 2x2 max
//! pools ([`MaxPool2x2`]). Quiet dev machine, `scripts/bench/models.py`, one run each: SFace
//! 27.2 -> 21.7 ms (onnxruntime 14.9), CenterFace 640x480 122 -> 93 ms (86), YuNet 640x480
//! 22.3 -> 18.5 ms (7.0). The unit test compares every fused form with tract's own ops.

use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_core::ops::cnn::{conv::Conv, conv::KernelFormat, MaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::math::{Add, Min, Mul};
use tract_onnx::tract_core::ops::nn::DataFormat;

#[derive(Debug, Clone, PartialEq)]
pub struct Dw3x3 {
    /// NCHW with N = 1 (else CHW: tract's declutter drops the batch axis).
    pub batch: bool,
    /// Channels, input height and width, stride (1 or 2).
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    /// `[c][3][3]` weights and `[c]` bias.
    pub weights: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
    /// A PRelu fused after the convolution: `[c]` slopes minus one (see [`super::prelu`]).
    pub prelu: Option<Arc<Vec<f32>>>,
}

impl Eq for Dw3x3 {}

impl std::hash::Hash for Dw3x3 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.batch, self.c, self.h, self.w, self.stride).hash(state);
        let prelu = self.prelu.iter().flat_map(|p| p.iter());
        self.weights.iter().chain(self.bias.iter()).chain(prelu).for_each(|v| v.to_bits().hash(state));
    }
}

impl Dw3x3 {
    fn out_hw(&self) -> (usize, usize) {
        ((self.h - 1) / self.stride + 1, (self.w - 1) / self.stride + 1)
    }

    fn shape(&self, h: usize, w: usize) -> TVec<usize> {
        if self.batch {
            tvec![1, self.c, h, w]
        } else {
            tvec![self.c, h, w]
        }
    }
}

impl Op for Dw3x3 {
    fn name(&self) -> StaticName {
        "FarsightDw3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let prelu = if self.prelu.is_some() { " + PRelu" } else { "" };
        Ok(vec![format!("{}x{}x{} stride {}{prelu}", self.c, self.h, self.w, self.stride)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Dw3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].to_plain_array_view::<f32>()?;
        let x = x.as_slice().context("depthwise input is not contiguous")?;
        let (oh, ow) = self.out_hw();
        let mut out = Tensor::zero::<f32>(&self.shape(oh, ow))?;
        let mut view = out.to_plain_array_view_mut::<f32>()?;
        let y = view.as_slice_mut().context("depthwise output is not contiguous")?;
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { planes_avx2(self, x, y) };
            return Ok(tvec!(out.into_tvalue()));
        }
        planes(self, x, y);
        Ok(tvec!(out.into_tvalue()))
    }
}

/// [`planes`] compiled for AVX2 (8 lanes instead of SSE2's 4).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn planes_avx2(op: &Dw3x3, x: &[f32], y: &mut [f32]) {
    planes(op, x, y)
}

/// Every channel's plane: each output row in one pass, from the three input rows it reads
/// (a zero row outside the image). For stride 2 the plane's rows are first split into their
/// even and odd pixels, so that every tap is a contiguous slice.
#[inline(always)]
fn planes(op: &Dw3x3, x: &[f32], y: &mut [f32]) {
    let (oh, ow) = op.out_hw();
    let (h, w) = (op.h, op.w);
    // stride 2: row iy's even pixels at split[2 * n * iy..][..n], odd ones right after
    let n = ow;
    let zero = vec![0.0f32; w.max(2 * n)];
    let mut split = vec![0.0f32; if op.stride == 2 { 2 * n * h } else { 0 }];
    for c in 0..op.c {
        let k = &op.weights[c * 9..c * 9 + 9];
        let b = op.bias[c];
        let input = &x[c * h * w..(c + 1) * h * w];
        if op.stride == 2 {
            for (r, dst) in input.chunks_exact(w).zip(split.chunks_exact_mut(2 * n)) {
                let (even, odd) = dst.split_at_mut(n);
                for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(r.chunks_exact(2)) {
                    *e = pair[0];
                    *o = pair[1];
                }
                if w % 2 == 1 {
                    even[n - 1] = r[w - 1];
                    odd[n - 1] = 0.0;
                }
            }
        }
        for (oy, row) in y[c * oh * ow..(c + 1) * oh * ow].chunks_exact_mut(ow).enumerate() {
            let iy = |dy: usize| (oy * op.stride + dy).wrapping_sub(1);
            if op.stride == 1 {
                let line = |dy: usize| if iy(dy) < h { &input[iy(dy) * w..][..w] } else { &zero[..w] };
                row_s1(row, [line(0), line(1), line(2)], k, b);
            } else {
                let line = |dy: usize| {
                    let r = if iy(dy) < h { &split[2 * n * iy(dy)..][..2 * n] } else { &zero[..2 * n] };
                    r.split_at(n)
                };
                row_s2(row, [line(0), line(1), line(2)], k, b);
            }
            if let Some(slope) = &op.prelu {
                // as the PRelu expansion computes it: x + (slope - 1) * min(x, 0)
                let s = slope[c];
                for v in row.iter_mut() {
                    *v += s * v.min(0.0);
                }
            }
        }
    }
}

/// Stride 1: `row[x] = b + sum over dy, dx of k[dy][dx] * r[dy][x + dx - 1]`, zero padded.
#[inline(always)]
fn row_s1(row: &mut [f32], r: [&[f32]; 3], k: &[f32], b: f32) {
    let w = row.len();
    let tap = |x: usize, dy: usize, dx: usize| {
        let i = (x + dx).wrapping_sub(1);
        if i < w {
            k[dy * 3 + dx] * r[dy][i]
        } else {
            0.0
        }
    };
    for x in [0, w - 1] {
        row[x] = b + (0..3).map(|dy| (0..3).map(|dx| tap(x, dy, dx)).sum::<f32>()).sum::<f32>();
    }
    let n = w - 2;
    let (a0, a1, a2) = (&r[0][..n + 2], &r[1][..n + 2], &r[2][..n + 2]);
    for (x, o) in row[1..w - 1].iter_mut().enumerate() {
        *o = b
            + k[0] * a0[x]
            + k[1] * a0[x + 1]
            + k[2] * a0[x + 2]
            + k[3] * a1[x]
            + k[4] * a1[x + 1]
            + k[5] * a1[x + 2]
            + k[6] * a2[x]
            + k[7] * a2[x + 1]
            + k[8] * a2[x + 2];
    }
}

/// Stride 2 on split rows (`r[dy]` = row dy's (even, odd) pixels): `row[x] = b + sum over
/// dy of k[dy][0] * odd[x - 1] + k[dy][1] * even[x] + k[dy][2] * odd[x]`.
#[inline(always)]
fn row_s2(row: &mut [f32], r: [(&[f32], &[f32]); 3], k: &[f32], b: f32) {
    let [(e0, o0), (e1, o1), (e2, o2)] = r;
    row[0] = b + k[1] * e0[0] + k[2] * o0[0] + k[4] * e1[0] + k[5] * o1[0] + k[7] * e2[0] + k[8] * o2[0];
    let n = row.len() - 1;
    // output x + 1 reads odd[x], even[x + 1], odd[x + 1]: nine slices of exactly n
    let (a0, b0, c0) = (&o0[..n], &e0[1..=n], &o0[1..=n]);
    let (a1, b1, c1) = (&o1[..n], &e1[1..=n], &o1[1..=n]);
    let (a2, b2, c2) = (&o2[..n], &e2[1..=n], &o2[1..=n]);
    let out = &mut row[1..=n];
    for i in 0..n {
        out[i] = b
            + k[0] * a0[i]
            + k[1] * b0[i]
            + k[2] * c0[i]
            + k[3] * a1[i]
            + k[4] * b1[i]
            + k[5] * c1[i]
            + k[6] * a2[i]
            + k[7] * b2[i]
            + k[8] * c2[i];
    }
}

impl TypedOp for Dw3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (oh, ow) = self.out_hw();
        ensure!(inputs[0].shape.as_concrete() == Some(&self.shape(self.h, self.w)[..]));
        Ok(tvec!(f32::fact(self.shape(oh, ow))))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (oh, ow) = self.out_hw();
        Ok(tvec!((Cost::FMA(f32::datum_type()), (self.c * oh * ow * 9).to_dim())))
    }

    as_op!();
}

/// The depthwise convolution `node` as a [`Dw3x3`], when it is one we handle.
fn as_dw3x3(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Dw3x3>> {
    let Some(conv) = node.op_as::<Conv>() else { return Ok(None) };
    let spec = &conv.pool_spec;
    let c = spec.input_channels;
    let x = model.outlet_fact(node.inputs[0])?;
    let strides = spec.strides.clone().unwrap_or_else(|| tvec![1, 1]);
    let ok = conv.q_params.is_none()
        && node.inputs.len() == 3
        && conv.group == c
        && spec.output_channels == c
        && matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        && conv.kernel_fmt == KernelFormat::OIHW
        && spec.kernel_shape.as_slice() == [3, 3]
        && spec.dilations.as_ref().is_none_or(|d| d.iter().all(|&d| d == 1))
        && (strides.as_slice() == [1, 1] || strides.as_slice() == [2, 2])
        && matches!(&spec.padding, PaddingSpec::Explicit(a, b) if a.as_slice() == [1, 1] && b.as_slice() == [1, 1])
        && x.datum_type == f32::datum_type();
    let (batch, xc, h, w) = match x.shape.as_concrete() {
        Some(&[1, c, h, w]) if ok => (true, c, h, w),
        Some(&[c, h, w]) if ok => (false, c, h, w),
        _ => return Ok(None),
    };
    let (Some(k), Some(b)) =
        (model.outlet_fact(node.inputs[1])?.konst.clone(), model.outlet_fact(node.inputs[2])?.konst.clone())
    else {
        return Ok(None);
    };
    if xc != c || k.len() != c * 9 || !(b.len() == c || b.len() == 1) || h < 2 || w < 2 {
        return Ok(None);
    }
    let weights = k.cast_to::<f32>()?.to_plain_array_view::<f32>()?.iter().copied().collect();
    let b: Vec<f32> = b.cast_to::<f32>()?.to_plain_array_view::<f32>()?.iter().copied().collect();
    let bias = if b.len() == 1 { vec![b[0]; c] } else { b };
    Ok(Some(Dw3x3 {
        batch,
        c,
        h,
        w,
        stride: strides[0],
        weights: Arc::new(weights),
        bias: Arc::new(bias),
        prelu: None,
    }))
}

/// Max pooling over 2x2 cells with stride 2, no padding (YuNet has four): tract 0.23's
/// `OptMaxPool` walks each output through its generic patch geometry, 1.9 ms for one
/// 16x240x320 input, a fifth of YuNet's time; this is two contiguous passes per output row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaxPool2x2 {
    /// The input shape: `[1, c, h, w]` or `[c, h, w]`.
    pub shape: TVec<usize>,
}

impl MaxPool2x2 {
    fn output_shape(&self) -> TVec<usize> {
        let mut out = self.shape.clone();
        let r = out.len();
        out[r - 2] /= 2;
        out[r - 1] /= 2;
        out
    }
}

impl Op for MaxPool2x2 {
    fn name(&self) -> StaticName {
        "FarsightMaxPool2x2".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = inputs[0].to_plain_array_view::<f32>()?;
        let x = x.as_slice().context("max pool input is not contiguous")?;
        let r = self.shape.len();
        let (h, w) = (self.shape[r - 2], self.shape[r - 1]);
        let (oh, ow) = (h / 2, w / 2);
        let mut out = Tensor::zero::<f32>(&self.output_shape())?;
        let mut view = out.to_plain_array_view_mut::<f32>()?;
        let y = view.as_slice_mut().context("max pool output is not contiguous")?;
        let planes = x.len() / (h * w);
        for (plane, out_plane) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)).take(planes) {
            for (oy, row) in out_plane.chunks_exact_mut(ow).enumerate() {
                let a = &plane[2 * oy * w..][..2 * ow];
                let b = &plane[(2 * oy + 1) * w..][..2 * ow];
                for ((o, a), b) in row.iter_mut().zip(a.chunks_exact(2)).zip(b.chunks_exact(2)) {
                    *o = a[0].max(a[1]).max(b[0].max(b[1]));
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for MaxPool2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].shape.as_concrete() == Some(&self.shape[..]));
        Ok(tvec!(f32::fact(self.output_shape())))
    }

    as_op!();
}

/// The max pool `node` as a [`MaxPool2x2`], when it is one (f32, NCHW or CHW, batch 1).
fn as_maxpool2x2(model: &TypedModel, node: &TypedNode) -> TractResult<Option<MaxPool2x2>> {
    let Some(pool) = node.op_as::<MaxPool>() else { return Ok(None) };
    let spec = &pool.pool_spec;
    let x = model.outlet_fact(node.inputs[0])?;
    let ok = pool.with_index_outputs.is_none()
        && x.datum_type == f32::datum_type()
        && matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        && spec.kernel_shape.as_slice() == [2, 2]
        && spec.strides.as_ref().is_some_and(|s| s.as_slice() == [2, 2])
        && spec.dilations.as_ref().is_none_or(|d| d.iter().all(|&d| d == 1))
        && match &spec.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(a, b) | PaddingSpec::ExplicitOnnxPool(a, b, false) => {
                a.iter().chain(b).all(|&p| p == 0)
            }
            _ => false,
        };
    let shape = match x.shape.as_concrete() {
        Some(s @ &[1, _, h, w]) | Some(s @ &[_, h, w]) if ok && h >= 2 && w >= 2 => s,
        _ => return Ok(None),
    };
    Ok(Some(MaxPool2x2 { shape: shape.into() }))
}

/// The per-channel values of `outlet` when it is a constant that broadcasts along the
/// channel axis of a `rank`-dimensional output (channels at `rank - 3`), one per channel.
fn per_channel(model: &TypedModel, outlet: OutletId, rank: usize, c: usize) -> TractResult<Option<Vec<f32>>> {
    let Some(k) = model.outlet_fact(outlet)?.konst.clone() else { return Ok(None) };
    if k.datum_type() != f32::datum_type() || k.rank() > rank {
        return Ok(None);
    }
    let mut shape = vec![1; rank - k.rank()];
    shape.extend_from_slice(k.shape());
    let values: Vec<f32> = k.to_plain_array_view::<f32>()?.iter().copied().collect();
    let channel_axis = rank - 3;
    let others_one = shape.iter().enumerate().all(|(i, &d)| i == channel_axis || d == 1);
    Ok(match (others_one, shape[channel_axis]) {
        (true, d) if d == c => Some(values),
        (true, 1) => Some(vec![values[0]; c]),
        _ => None,
    })
}

/// The binary operator of `node` with `from` as one operand: its mini-op and the other
/// operand.
fn bin_with(node: &TypedNode, from: OutletId) -> Option<(&dyn BinMiniOp, OutletId)> {
    let op = node.op_as::<TypedBinOp>()?;
    match node.inputs.as_slice() {
        [a, b] if *a == from => Some((op.0.as_ref(), *b)),
        [a, b] if *b == from => Some((op.0.as_ref(), *a)),
        _ => None,
    }
}

/// What the node after `id` (a [`Dw3x3`]) lets it absorb: a per-channel multiply or add (a
/// BatchNorm tract left unfolded), or a PRelu as [`super::prelu`] wires it (`x + (slope - 1)
/// * min(x, 0)`); the absorbing op and the node whose output it replaces.
fn absorb(model: &TypedModel, id: usize) -> TractResult<Option<(Dw3x3, usize)>> {
    let node = model.node(id);
    let Some(dw) = node.op_as::<Dw3x3>() else { return Ok(None) };
    if dw.prelu.is_some() {
        return Ok(None);
    }
    let out = OutletId::new(id, 0);
    let rank = if dw.batch { 4 } else { 3 };
    let succ: Vec<&TypedNode> = model.outlet_successors(out).iter().map(|i| model.node(i.node)).collect();
    if model.output_outlets()?.contains(&out) {
        return Ok(None);
    }
    if let [next] = succ.as_slice() {
        let Some((mini, other)) = bin_with(next, out) else { return Ok(None) };
        let Some(v) = per_channel(model, other, rank, dw.c)? else { return Ok(None) };
        let mut dw = dw.clone();
        if mini.is::<Mul>() {
            dw.weights = Arc::new(dw.weights.iter().enumerate().map(|(i, w)| w * v[i / 9]).collect());
            dw.bias = Arc::new(dw.bias.iter().zip(&v).map(|(b, s)| b * s).collect());
        } else if mini.is::<Add>() {
            dw.bias = Arc::new(dw.bias.iter().zip(&v).map(|(b, t)| b + t).collect());
        } else {
            return Ok(None);
        }
        return Ok(Some((dw, next.id)));
    }
    // PRelu: min(x, 0) -> * (slope - 1) -> + x
    let [a, b] = succ.as_slice() else { return Ok(None) };
    let (min, add) = if a.op_as::<TypedBinOp>().is_some_and(|o| o.0.is::<Min>()) { (a, b) } else { (b, a) };
    let Some((mini, zero)) = bin_with(min, out) else { return Ok(None) };
    let zero_ok = per_channel(model, zero, rank, dw.c)?.is_some_and(|z| z.iter().all(|&v| v == 0.0));
    if !mini.is::<Min>() || !zero_ok {
        return Ok(None);
    }
    let min_out = OutletId::new(min.id, 0);
    let [mul] = model.outlet_successors(min_out) else { return Ok(None) };
    let mul = model.node(mul.node);
    let Some((mini, slope)) = bin_with(mul, min_out) else { return Ok(None) };
    let Some(slope) = per_channel(model, slope, rank, dw.c)? else { return Ok(None) };
    let mul_out = OutletId::new(mul.id, 0);
    let [to_add] = model.outlet_successors(mul_out) else { return Ok(None) };
    let is_add = bin_with(add, out).is_some_and(|(m, o)| m.is::<Add>() && o == mul_out);
    if !mini.is::<Mul>() || to_add.node != add.id || !is_add {
        return Ok(None);
    }
    Ok(Some((Dw3x3 { prelu: Some(Arc::new(slope)), ..dw.clone() }, add.id)))
}

/// Replaces every depthwise convolution [`Dw3x3`] handles, and lets each absorb the
/// BatchNorm and PRelu that follow it; and every 2x2 stride-2 max pool with [`MaxPool2x2`].
pub fn replace(model: &mut TypedModel) -> TractResult<()> {
    for id in model.eval_order()? {
        let node = model.node(id);
        if let Some(op) = as_maxpool2x2(model, node)? {
            TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?.apply(model)?;
            continue;
        }
        let Some(op) = as_dw3x3(model, node)? else { continue };
        let input = node.inputs[0];
        let patch = TypedModelPatch::replace_single_op(model, node, &[input], op)?;
        patch.apply(model)?;
        // the patch wired the new op as the last node
        let mut id = model.nodes.len() - 1;
        while let Some((op, replaced)) = absorb(model, id)? {
            TypedModelPatch::replace_single_op(model, model.node(replaced), &[input], op)?.apply(model)?;
            id = model.nodes.len() - 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::PoolSpec;
    use tract_onnx::tract_core::ops::math;

    fn values(n: usize, salt: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.37 + salt).sin()) * 0.8).collect()
    }

    /// A depthwise 3x3 convolution, then a per-channel multiply and add (a BatchNorm) and a
    /// PRelu wired as `super::super::prelu` wires it, then a 2x2 max pool; `shape` is NCHW
    /// (batch 1) or CHW.
    fn graph(shape: &[usize], stride: usize) -> TypedModel {
        let mut m = TypedModel::default();
        let r = shape.len();
        let c = shape[r - 3];
        let x = m.add_source("x", f32::fact(shape)).unwrap();
        let k = m.add_const("k", Tensor::from_shape(&[c, 1, 3, 3], &values(c * 9, 0.1)).unwrap()).unwrap();
        let b = m.add_const("b", Tensor::from_shape(&[c], &values(c, 0.2)).unwrap()).unwrap();
        let pool_spec = PoolSpec {
            data_format: if r == 4 { DataFormat::NCHW } else { DataFormat::CHW },
            kernel_shape: tvec!(3, 3),
            padding: PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)),
            dilations: None,
            strides: Some(tvec!(stride, stride)),
            input_channels: c,
            output_channels: c,
        };
        let conv = Conv { pool_spec: pool_spec.clone(), kernel_fmt: KernelFormat::OIHW, group: c, q_params: None };
        let y = m.wire_node("dw", conv, &[x, k, b]).unwrap()[0];
        let per_channel = |m: &mut TypedModel, name: &str, salt: f32| {
            let mut shape = vec![1; r];
            shape[r - 3] = c;
            m.add_const(name, Tensor::from_shape(&shape, &values(c, salt)).unwrap()).unwrap()
        };
        let scale = per_channel(&mut m, "scale", 0.3);
        let y = m.wire_node("bn.mul", math::mul(), &[y, scale]).unwrap()[0];
        let shift = per_channel(&mut m, "shift", 0.4);
        let y = m.wire_node("bn.add", math::add(), &[y, shift]).unwrap()[0];
        let zero = m.add_const("zero", Tensor::zero::<f32>(&vec![1; r]).unwrap()).unwrap();
        let neg = m.wire_node("prelu.neg", math::min(), &[y, zero]).unwrap()[0];
        let slope = per_channel(&mut m, "slope", 0.5);
        let scaled = m.wire_node("prelu.scaled", math::mul(), &[neg, slope]).unwrap()[0];
        let y = m.wire_node("prelu", math::add(), &[y, scaled]).unwrap()[0];
        let pool = MaxPool {
            pool_spec: PoolSpec {
                kernel_shape: tvec!(2, 2),
                strides: Some(tvec!(2, 2)),
                padding: PaddingSpec::Valid,
                ..pool_spec
            },
            with_index_outputs: None,
        };
        let y = m.wire_node("pool", pool, &[y]).unwrap();
        m.select_output_outlets(&y).unwrap();
        m
    }

    fn run(model: TypedModel, input: &Tensor) -> Vec<f32> {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
    }

    #[test]
    fn depthwise_batchnorm_prelu_and_max_pool_give_what_tract_gives() {
        for (shape, stride) in [
            (vec![1, 3, 7, 9], 1),
            (vec![1, 5, 8, 11], 2),
            (vec![4, 9, 7], 2),
            (vec![2, 6, 6], 1),
            (vec![1, 16, 14, 14], 2),
            (vec![2, 5, 5], 2),
            (vec![3, 2, 2], 1),
        ] {
            let input = Tensor::from_shape(&shape, &values(shape.iter().product(), 0.0)).unwrap();
            let reference = run(graph(&shape, stride), &input);
            let mut ours = graph(&shape, stride);
            replace(&mut ours).unwrap();
            let names: Vec<String> = ours.nodes.iter().map(|n| n.op().name().to_string()).collect();
            assert!(names.contains(&"FarsightDw3x3".to_string()), "{shape:?}: {names:?}");
            assert!(names.contains(&"FarsightMaxPool2x2".to_string()), "{shape:?}: {names:?}");
            let fused = ours.nodes.iter().filter_map(|n| n.op_as::<Dw3x3>()).any(|d| d.prelu.is_some());
            assert!(fused, "{shape:?}: the BatchNorm and PRelu were not absorbed");
            let ours = run(ours, &input);
            assert_eq!(ours.len(), reference.len(), "{shape:?}");
            let worst = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{shape:?} stride {stride}: max |diff| {worst}");
        }
    }
}
