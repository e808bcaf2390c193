"""Checks that `train.py --resume` continues a run exactly: one run of N steps and a run stopped
at step K then resumed to N (separate processes, as in real use) must end with the same
generator, discriminator, both optimisers and training log, bit for bit.

    python models/ftlgan/resume_check.py           # batch 4, 12 steps, stop at 5 (about a minute)
    python models/ftlgan/resume_check.py --sigterm # interrupt the 2nd run with SIGTERM instead

Exit 0 and "resume: exact" on success; exit 1 with the largest differences otherwise. Tolerance:
none (torch.equal) for every tensor; the log's loss and validation columns must be equal as
written; only the wall/CPU time columns may differ. Uses prepare.py's bank (--work); smoke.py runs
it on its handful of faces.
"""

import argparse
import csv
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lrembed"))
from resume_check import flat  # noqa: E402  (lrembed's: every tensor of a nested state dict)


def train(out: Path, extra: list[str]):
    cmd = [sys.executable, str(HERE / "train.py"), "--out", str(out), *extra]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--stop", type=int, default=5)
    ap.add_argument("--sigterm", action="store_true", help="stop the 2nd run with SIGTERM (after --stop) instead")
    ap.add_argument("--work", type=Path, default=None, help="prepare.py's folder (default: train.py's work/)")
    ap.add_argument("--camera", action="store_true", help="train on the detector path's faces (train.py --camera)")
    args = ap.parse_args()
    # The adversarial term and the discriminator start inside the run, the schedule warms up and
    # decays inside it, and validation runs before and after the cut.
    common = ["--steps", str(args.steps), "--batch", "4", "--warmup", "3", "--decay-frac", "0.5", "--val-every", "4",
              "--val-faces", "4", "--adv-warmup", "6", "--w-feat", "1", "--sizes", "14,28", "--ckpt-minutes", "1000",
              "--init", str(HERE.parent / "ftlgan-fp32.onnx"), "--ch", "40", "--blocks", "3"]
    if args.work:
        common += ["--work", str(args.work)]
    if args.camera:
        common += ["--camera"]
    tmp = Path(tempfile.mkdtemp(prefix="ftlgan-resume-"))
    one, two = tmp / "one", tmp / "two"
    try:
        train(one, common)
        if args.sigterm:
            cmd = [sys.executable, str(HERE / "train.py"), "--out", str(two), *common]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
            while proc.poll() is None:
                log = two / "log.csv"
                rows = list(csv.DictReader(open(log))) if log.exists() else []
                if rows and int(rows[-1]["step"]) >= args.stop:
                    proc.send_signal(signal.SIGTERM)
                    break
                time.sleep(0.1)
            proc.wait()
            args.stop = torch.load(two / "last.pt", map_location="cpu", weights_only=False)["step"]
            print(f"  stopped by SIGTERM at step {args.stop}")
            if args.stop >= args.steps:
                print("the run finished before SIGTERM arrived; use more --steps")
                return 1
        else:
            train(two, [*common, "--stop-at-step", str(args.stop)])
        train(two, ["--resume"])
        a = torch.load(one / "last.pt", map_location="cpu", weights_only=False)
        b = torch.load(two / "last.pt", map_location="cpu", weights_only=False)
        bad = []
        parts = ("generator", "discriminator", "opt_g", "opt_d")
        for part in parts:
            fa, fb = flat(a[part]), flat(b[part])
            assert fa.keys() == fb.keys(), part
            bad += [(float((fa[k].double() - fb[k].double()).abs().max()), part + k) for k in fa if not torch.equal(fa[k], fb[k])]
        if a["step"] != b["step"] or a["best"] != b["best"]:
            bad.append((float("nan"), f"step/best {a['step']}/{a['best']} vs {b['step']}/{b['best']}"))
        ra, rb = (list(csv.DictReader(open(r / "log.csv"))) for r in (one, two))
        if len(ra) != len(rb):
            bad.append((float("nan"), f"log rows {len(ra)} vs {len(rb)}"))
        for x, y in zip(ra, rb):
            bad += [(float("nan"), f"log step {x['step']} {k}: {x[k]} vs {y[k]}") for k in x
                    if k not in ("seconds", "cpu_s") and x[k] != y[k]]
        if bad:
            for diff, k in sorted(bad, key=lambda t: -t[0] if t[0] == t[0] else 0)[:20]:
                print(f"differs: {k} (max |diff| {diff:.3g})")
            print(f"resume: NOT exact ({len(bad)} differences)")
            return 1
        n = sum(len(flat(a[q])) for q in parts)
        print(f"resume: exact ({args.steps} steps in one run == {args.stop} + {args.steps - args.stop} resumed; "
              f"{n} tensors of generator/discriminator/optimisers bit-identical, {len(ra)} log rows equal)")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
