"""d' on LFW folds 6-10 against training time: exports every EMA snapshot of a run
(work/<run>/ema-NNNNNN.pt) not yet measured, evaluates it with evaluate.py at the given sizes
(default 14 px, crop mode, all 3,000 pairs) and appends to <run>/curve.csv; then plots
<run>/curve.png. Snapshots are only read; the training run is not touched.

    python models/lrembed/curve.py --run work/a112 [--sizes 14] [--every 2] [--keep-onnx]
"""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def plot(run: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(run / "curve.csv")))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in sorted({r["model"] for r in rows}):
        for size in sorted({int(r["size"]) for r in rows}):
            rs = sorted((r for r in rows if r["model"] == model and int(r["size"]) == size), key=lambda r: float(r["cpu_h"]))
            if rs:
                ax.plot([float(r["cpu_h"]) for r in rs], [float(r["d_prime"]) for r in rs], "o-", label=f"{model} {size}px")
    base = [r for r in rows if r["model"] == "sface+bicubic"]
    ax.set_xlabel("training CPU hours (process time)")
    ax.set_ylabel("d' (LFW folds 6-10, crop mode, 3,000 pairs)")
    ax.set_title(f"{run.name}: EMA snapshots" + (f" (SFace+bicubic {base[0]['d_prime']} at {base[0]['size']} px)" if base else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run / "curve.png", dpi=90)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--sizes", default="14")
    ap.add_argument("--every", type=int, default=1, help="only every Nth snapshot")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep-onnx", action="store_true")
    args = ap.parse_args()
    run = args.run if args.run.is_absolute() else HERE / args.run
    curve = run / "curve.csv"
    fields = ["step", "cpu_h", "size", "model", "d_prime", "auc", "accuracy", "accuracy_std", "tar_at_far_1e-3"]
    done = {(int(r["step"])) for r in csv.DictReader(open(curve))} if curve.exists() else set()
    snaps = sorted(run.glob("ema-*.pt"))[args.every - 1 :: args.every]
    for snap in snaps:
        step = int(snap.stem.split("-")[1])
        if step in done:
            continue
        cpu_h = torch.load(snap, map_location="cpu", weights_only=False)["cpu_s"] / 3600
        onnx = run / "onnx" / f"{snap.stem}.onnx"
        py = sys.executable
        subprocess.run([py, str(HERE / "export.py"), "--checkpoint", str(snap), "--out", str(onnx)], check=True,
                       stdout=subprocess.DEVNULL)
        js = run / "onnx" / f"{snap.stem}-eval.json"
        subprocess.run([py, str(HERE / "evaluate.py"), "--model", str(onnx), "--label", "student", "--sizes", args.sizes,
                        "--threads", str(args.threads), "--json", str(js)], check=True, stdout=subprocess.DEVNULL)
        rows = json.loads(js.read_text())["rows"]
        new = not curve.exists()
        with open(curve, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            for r in rows:
                if r["model"] == "sface+bicubic" and not new:
                    continue
                w.writerow({**r, "step": step if r["model"] != "sface+bicubic" else 0, "cpu_h": round(cpu_h, 3)
                            if r["model"] != "sface+bicubic" else 0})
        for r in rows:
            print(f"step {step} ({cpu_h:.2f} CPU h) {r['size']} px {r['model']}: d' {r['d_prime']:.3f} "
                  f"acc {r['accuracy']:.4f} TAR@1e-3 {r['tar_at_far_1e-3']:.3f}", flush=True)
        if not args.keep_onnx:
            onnx.unlink()
    if curve.exists():
        plot(run)


if __name__ == "__main__":
    main()
