"""Checks that `train.py --resume` continues a run exactly: one run of N steps and a run stopped
at step K then resumed to N (separate processes, as in real use) must end with the same model,
EMA, optimiser state and training log, bit for bit.

    python models/lrembed/resume_check.py                 # tiny config: 64 faces, batch 4, 12 steps
    python models/lrembed/resume_check.py --arch sface112 --bf16
    python models/lrembed/resume_check.py --sigterm       # interrupt the 2nd run with SIGTERM instead

Exit 0 and "resume: exact" on success; exit 1 with the largest differences otherwise. Tolerance:
none (torch.equal) for every tensor; the log's loss columns must be equal as written (5
decimals); only the wall/CPU time columns may differ.
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


def train(out: Path, extra: list[str], common: list[str]):
    cmd = [sys.executable, str(HERE / "train.py"), "--out", str(out), *common, *extra]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def train_sigterm(out: Path, common: list[str], after_step: int):
    """Starts a run and sends it SIGTERM once its log has a row past `after_step` (as a person or
    systemd stopping it would); the run must checkpoint at the end of its current step."""
    cmd = [sys.executable, str(HERE / "train.py"), "--out", str(out), *common]
    print("$", " ".join(cmd[1:]), f"(SIGTERM after step {after_step})", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    log = out / "log.csv"
    while proc.poll() is None:
        rows = list(csv.DictReader(open(log))) if log.exists() else []
        if rows and int(rows[-1]["step"]) >= after_step:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.2)
    proc.wait()
    step = torch.load(out / "last.pt", map_location="cpu", weights_only=False)["step"]
    print(f"  stopped by SIGTERM at step {step}")
    return step


def flat(sd, prefix=""):
    """Every tensor of a (nested) state dict, keyed by its path."""
    out = {}
    if isinstance(sd, torch.Tensor):
        out[prefix] = sd
    elif isinstance(sd, dict):
        for k, v in sd.items():
            out.update(flat(v, f"{prefix}/{k}"))
    elif isinstance(sd, (list, tuple)):
        for k, v in enumerate(sd):
            out.update(flat(v, f"{prefix}/{k}"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="sface56")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--stop", type=int, default=5)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--sigterm", action="store_true", help="stop the 2nd run with SIGTERM (after --stop) instead")
    ap.add_argument("--keep", action="store_true", help="keep the two run folders")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lrembed-resume-"))
    common = ["--arch", args.arch, "--steps", str(args.steps), "--batch", "4", "--limit-faces", "64", "--warmup", "3",
              "--decay-frac", "0.5", "--val-every", "6", "--snapshot-every", "0", "--ckpt-minutes", "1000"]
    if args.bf16:
        common.append("--bf16")
    one, two = tmp / "one", tmp / "two"
    try:
        train(one, [], common)
        if args.sigterm:
            args.stop = train_sigterm(two, common, args.stop)
            if args.stop >= args.steps:
                print("the run finished before SIGTERM arrived; use more --steps")
                return 1
        else:
            train(two, ["--stop-at-step", str(args.stop)], common)
        train(two, ["--resume"], [])
        a = torch.load(one / "last.pt", map_location="cpu", weights_only=False)
        b = torch.load(two / "last.pt", map_location="cpu", weights_only=False)
        bad = []
        for part in ("model", "ema", "opt"):
            fa, fb = flat(a[part]), flat(b[part])
            assert fa.keys() == fb.keys(), part
            for k in fa:
                if not torch.equal(fa[k], fb[k]):
                    bad.append((float((fa[k].double() - fb[k].double()).abs().max()), part + k))
        if a["step"] != b["step"] or a["faces"] != b["faces"]:
            bad.append((float("nan"), f"step/faces {a['step']}/{a['faces']} vs {b['step']}/{b['faces']}"))
        skip = {"wall_s", "cpu_s"}
        ra, rb = (list(csv.DictReader(open(r / "log.csv"))) for r in (one, two))
        if len(ra) != len(rb):
            bad.append((float("nan"), f"log rows {len(ra)} vs {len(rb)}"))
        for x, y in zip(ra, rb):
            for k in x:
                if k not in skip and x[k] != y[k]:
                    bad.append((float("nan"), f"log step {x['step']} {k}: {x[k]} vs {y[k]}"))
        n_tensors = sum(len(flat(a[p])) for p in ("model", "ema", "opt"))
        if bad:
            for d, k in sorted(bad, key=lambda t: -t[0] if t[0] == t[0] else 0)[:20]:
                print(f"differs: {k} (max |diff| {d:.3g})")
            print(f"resume: NOT exact ({len(bad)} differences)")
            return 1
        print(f"resume: exact ({args.steps} steps in one run == {args.stop} + {args.steps - args.stop} resumed; "
              f"{n_tensors} tensors of model/EMA/optimiser bit-identical, {len(ra)} log rows equal)")
        return 0
    finally:
        if args.keep:
            print("runs kept in", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
