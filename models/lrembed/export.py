"""Step 3: export a student checkpoint (its EMA weights) to ONNX and check it.

    python models/lrembed/export.py --checkpoint work/a112/best.pt --out work/a112/lrembed.onnx
    python models/lrembed/export.py --checkpoint work/a112/last.pt --out work/a112/lrembed-last.onnx --bench

Contract of the exported file (the same as models/sface.onnx, so farsight's SFace embedder code
can run it unchanged): input `data` [N, 3, S, S] float32, RGB, raw 0..255, NCHW, where S is 112
(arch sface112) or 56 (sface56): the small aligned face brought to S x S by Catmull-Rom; output
`fc1` [N, 128] float32, the raw embedding (not L2-normalised: normalise, then cosine).
The graph normalises (x - 127.5) * 0.0078125 itself. Ops: Sub, Mul, Conv, PRelu, Flatten (or
Reshape), Gemm. Exported with the TorchScript exporter (dynamo=False, opset 17).

Checks: onnx.checker (full), onnxruntime vs PyTorch on random input (max |diff| < 1e-3 of an
embedding whose values are ~1), and for an untrained student (`--checkpoint init`) equality with
models/sface.onnx. `--bench`: onnxruntime, one thread, batch 1, median ms per face of this file
and of sface.onnx, interleaved, plus MACs.
"""

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

from common import ARCHS, HERE, SFACE, Student, macs


class Exported(nn.Module):
    """Raw 0..255 RGB in (as sface.onnx), raw embedding out."""

    def __init__(self, student: Student):
        super().__init__()
        self.body, self.head = student.body, student.head

    def forward(self, data):
        h = self.body((data - 127.5) * 0.0078125)
        return self.head(torch.flatten(h, 1))


def load(checkpoint: str, arch: str | None) -> tuple[Student, dict]:
    if checkpoint == "init":
        return Student(arch or "sface112").eval(), {"step": 0}
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    s = Student(ck["arch"]).eval()
    s.load_state_dict(ck["ema"])
    return s, {k: ck[k] for k in ("step", "cpu_s", "val") if k in ck}


def bench(path: Path, size: int, iters: int = 40) -> dict:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = {"student": ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]),
            "sface": ort.InferenceSession(str(SFACE), so, providers=["CPUExecutionProvider"])}
    x = {"student": np.random.default_rng(0).uniform(0, 255, (1, 3, size, size)).astype(np.float32),
         "sface": np.random.default_rng(0).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)}
    times = {k: [] for k in sess}
    for _ in range(3):
        for k in sess:
            sess[k].run(None, {"data": x[k]})
    for _ in range(iters):
        for k in sess:
            t = time.perf_counter()
            sess[k].run(None, {"data": x[k]})
            times[k].append((time.perf_counter() - t) * 1000)
    return {f"{k}_ms": round(float(np.median(v)), 2) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="best.pt / last.pt / ema-NNNNNN.pt of a run, or 'init'")
    ap.add_argument("--arch", choices=sorted(ARCHS), help="only for --checkpoint init")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bench", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    ck = args.checkpoint if args.checkpoint == "init" or Path(args.checkpoint).is_absolute() else str(HERE / args.checkpoint)
    out = args.out if args.out.is_absolute() else HERE / args.out
    s, info = load(ck, args.arch)
    model = Exported(s).eval()
    size = s.size
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 255, (2, 3, size, size)).astype(np.float32))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (x,), str(out), input_names=["data"], output_names=["fc1"], opset_version=17,
                      dynamo=False, do_constant_folding=True, dynamic_axes={"data": {0: "N"}, "fc1": {0: "N"}})
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({n.op_type for n in m.graph.node})
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = model(x).numpy()
    got = sess.run(None, {"data": x.numpy()})[0]
    err = float(np.abs(got - want).max())
    report = {"checkpoint": str(args.checkpoint), **info, "arch": s.arch, "input": [1, 3, size, size], "ops": ops,
              "max_abs_diff_ort_torch": err, "macs": macs(s, size),
              "parameters": sum(p.numel() for p in s.parameters()), "bytes": out.stat().st_size,
              "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
    if err > 1e-3:
        raise SystemExit(f"the exported model does not match PyTorch (max |diff| {err})")
    if args.checkpoint == "init" and size == 112:
        ref = ort.InferenceSession(str(SFACE), providers=["CPUExecutionProvider"])
        r = np.concatenate([ref.run(None, {"data": x[k:k + 1].numpy()})[0] for k in range(len(x))])
        report["max_abs_diff_vs_sface"] = float(np.abs(r - got).max())
    if args.bench:
        report.update(bench(out, size))
    print(json.dumps(report, indent=2))
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
