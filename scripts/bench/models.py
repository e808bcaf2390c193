#!/usr/bin/env python3
"""Per-model inference time: tract (through `farsight bench --models`) against onnxruntime 1.23.2
single-threaded, on the same input tensors, back to back, in rounds.

    .venv-bench/bin/python scripts/bench/models.py                 # every model, 3 rounds
    .venv-bench/bin/python scripts/bench/models.py --only sface,centerface-640x480 --rounds 5

Each round times every case in onnxruntime (in this process) and then in tract (one run of the
farsight binary, which loads each model once and times it the same way); a case's figure is the
median over rounds of each round's median. Two clocks are reported for both runtimes: wall time
and the calling thread's CPU time. On a quiet machine they agree; on a busy one the wall time
grows with the load while the CPU time stays close to the quiet figure, so the CPU-time ratio is
the one to trust on a shared machine (it does not see the second core that a multithreaded build
would use: compare wall times for that). Both runtimes are single-threaded: onnxruntime with
intra_op = inter_op = 1 and no spinning, tract without a thread pool.

The onnxruntime side always runs the file as it ships upstream (the reference); the tract side
runs whatever farsight loads for that role, so a pre-optimised file is measured against the
original. tract's outputs are checked against onnxruntime's on the same input (max |diff| is
printed); a case whose outputs disagree by more than its tolerance is marked FAIL.

Inputs are real pixels: the SFace golden crop (tests/golden), an LFW photo resized to the
detector's input, the FTLGAN golden bicubic input. Needs scripts/bench/requirements.txt
(onnxruntime, onnx, numpy, pillow) and a release build of farsight.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
LFW = ROOT.parent / "shared/datasets/lfw"
GOLDEN = ROOT / "tests/golden"


def nchw(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32).transpose(2, 0, 1)[None])


def frame(w, h):
    img = Image.open(LFW / "Aaron_Eckhart/Aaron_Eckhart_0001.jpg").convert("RGB")
    return np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32)


def rgb(w, h):
    return nchw(frame(w, h))


def bgr(w, h):
    return nchw(frame(w, h)[..., ::-1])


def bgr_mean(w, h):
    return nchw(frame(w, h)[..., ::-1] - np.array([104, 117, 123], np.float32))


def sface_input():
    return nchw(Image.open(GOLDEN / "sface_aaron_eckhart_0001_crop69.png").convert("RGB"))


def ftlgan_input():
    return nchw(Image.open(GOLDEN / "ftlgan_abdullah_gul_0001_14px_bicubic.png").convert("RGB")) / 255.0


# name, file farsight loads, reference file for onnxruntime, input maker, abs tolerance on outputs.
# Tolerances: float reassociation only (detector maps are 0..1 probabilities and small
# regressions), except SFace: farsight keeps its 128x50176 last layer as int8 rows
# (src/model/gemv.rs), which moves raw outputs of norm ~10 by up to ~1e-2 (cosine >= 0.99998).
def cases(models):
    c = [
        ("sface", "sface.onnx", "sface.onnx", sface_input, 3e-2),
        ("centerface-640x480", "centerface.onnx", "centerface.onnx", lambda: rgb(640, 480), 1e-3),
        ("retinaface-640x480", "retinaface-mnet025.onnx", "retinaface-mnet025.onnx", lambda: bgr_mean(640, 480), 1e-3),
        ("yunet-640x480", "yunet.onnx", "yunet.onnx", lambda: bgr(640, 480), 1e-3),
        ("centerface-160x160", "centerface.onnx", "centerface.onnx", lambda: rgb(160, 160), 1e-3),
        ("retinaface-160x160", "retinaface-mnet025.onnx", "retinaface-mnet025.onnx", lambda: bgr_mean(160, 160), 1e-3),
        ("yunet-160x160", "yunet.onnx", "yunet.onnx", lambda: bgr(160, 160), 1e-3),
        ("ftlgan-fp32", "ftlgan-fp32.onnx", "ftlgan-fp32.onnx", ftlgan_input, 1e-4),
        ("ftlgan", "ftlgan.onnx", "ftlgan.onnx", ftlgan_input, 1e-4),
    ]
    return [x for x in c if (models / x[1]).exists()]


def ort_session(path, shape):
    """A single-threaded session with the input fixed to `shape` (CenterFace's file says
    10x3x32x32, YuNet's 640x640: both work at any multiple of 32)."""
    m = onnx.load(str(path))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, shape):
        d.ClearField("dim_param")
        d.dim_value = v
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s, m.graph.input[0].name


def time_ort(sess, name, x, iterations):
    for _ in range(2):
        sess.run(None, {name: x})
    wall, cpu = [], []
    for _ in range(iterations):
        t, c = time.perf_counter(), time.thread_time()
        sess.run(None, {name: x})
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return float(np.median(wall) * 1e3), float(np.median(cpu) * 1e3)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--farsight", default=str(ROOT / "target/release/farsight"))
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20, help="timed runs per case per round")
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--json", help="write the table as JSON")
    args = ap.parse_args()
    models = Path(args.models_dir)
    todo = cases(models)
    if args.only:
        keep = set(args.only.split(","))
        todo = [c for c in todo if c[0] in keep]
    if not todo:
        sys.exit("no case to run (models missing or --only matched nothing)")

    tmp = Path(tempfile.mkdtemp(prefix="farsight-models-"))
    manifest, sessions = [], {}
    for name, file, ref, make, tol in todo:
        x = make().astype("<f4")
        sess, iname = ort_session(models / ref, x.shape)
        outs = sess.run(None, {iname: x})
        x.tofile(tmp / f"{name}.in.f32")
        np.concatenate([o.astype("<f4").ravel() for o in outs]).tofile(tmp / f"{name}.expect.f32")
        sessions[name] = (sess, iname, x)
        manifest.append(
            {
                "name": name,
                "model": str(models / file),
                "shape": list(x.shape),
                "input": str(tmp / f"{name}.in.f32"),
                "expect": str(tmp / f"{name}.expect.f32"),
            }
        )
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))

    ort_rounds = {c[0]: [] for c in todo}
    tract_rounds = {c[0]: [] for c in todo}
    info = {}
    for r in range(args.rounds):
        for name, *_ in todo:
            sess, iname, x = sessions[name]
            ort_rounds[name].append(time_ort(sess, iname, x, args.iterations))
        out = tmp / f"tract-{r}.json"
        cmd = [args.farsight, "-q", "bench", "--models", str(tmp / "manifest.json"),
               "--iterations", str(args.iterations), "--json", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        for row in json.loads(out.read_text()):
            tract_rounds[row["name"]].append((row["median_ms"], row["cpu_median_ms"]))
            info[row["name"]] = row
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    def med(rows, i):
        return float(np.median([x[i] for x in rows]))

    table = []
    hdr = f"{'case':<20} {'tract ms':>9} {'ort ms':>8} {'ratio':>6}   {'tract cpu':>9} {'ort cpu':>8} {'ratio':>6}   {'max|diff|':>9}  {'load ms':>7}"
    print(hdr)
    print("-" * len(hdr))
    for name, file, ref, make, tol in todo:
        tw, tc = med(tract_rounds[name], 0), med(tract_rounds[name], 1)
        ow, oc = med(ort_rounds[name], 0), med(ort_rounds[name], 1)
        diff = info[name]["max_abs_diff"]
        ok = diff <= tol
        table.append({"case": name, "file": file, "reference_file": ref, "shape": info[name]["shape"],
                      "tract_ms": tw, "ort_ms": ow, "ratio": tw / ow, "tract_cpu_ms": tc, "ort_cpu_ms": oc,
                      "cpu_ratio": tc / oc, "max_abs_diff": diff, "tolerance": tol, "ok": ok,
                      "tract_load_ms": info[name]["load_ms"]})
        print(f"{name:<20} {tw:>9.2f} {ow:>8.2f} {tw / ow:>6.2f}   {tc:>9.2f} {oc:>8.2f} {tc / oc:>6.2f}   "
              f"{diff:>9.1e}  {info[name]['load_ms']:>7.0f}{'' if ok else '  FAIL (outputs differ)'}")
    print(f"\nmedian of {args.rounds} rounds x {args.iterations} runs; ratio = tract / onnxruntime "
          f"{ort.__version__} (1 thread); load = file to first plan, in farsight.\n"
          f"cpu = the calling thread's CPU time (trust it on a busy machine); inputs and outputs in {tmp}")
    if args.json:
        Path(args.json).write_text(json.dumps({"onnxruntime": ort.__version__, "rounds": args.rounds,
                                               "iterations": args.iterations, "cases": table}, indent=1))
    sys.exit(0 if all(t["ok"] for t in table) else 1)


if __name__ == "__main__":
    main()
