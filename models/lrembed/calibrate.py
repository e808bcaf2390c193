"""Match thresholds per path, from training-split identities only (never folds 6-10).

    python models/lrembed/calibrate.py --model work/a112/lrembed.onnx --json results/calibration.json

Pairs: every probe x reference pair of the 319 held-out faces (177 identities that the student
never trained on; folds 1-5 / no-fold, checked against the pairs file): the probe is the face
degraded as farsight eval's crop mode at N px, the reference SFace of another photo at full
resolution; genuine = same identity. For each path (SFace on the Catmull-Rom face, the student,
SFace at full resolution for reference) and size it reports the cosine threshold at FAR 1e-3
and 1e-2 and the accuracy-optimal threshold on balanced classes, with the TAR there. Use the
threshold of the path that embedded the probe (small faces: the student's).
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from common import FTLGAN_WORK, HERE, SFACE, assert_training_identities, eval_downsample, split
from evaluate import run, session, to_input


def thresholds(sim, gen, imp) -> dict:
    g, i = sim[gen], sim[imp]
    out = {"genuine_pairs": int(len(g)), "impostor_pairs": int(len(i))}
    for far in (1e-3, 1e-2):
        t = float(np.quantile(i, 1 - far))
        out[f"threshold_far_{far:g}"] = round(t, 4)
        out[f"tar_at_far_{far:g}"] = round(float((g > t).mean()), 4)
    # accuracy-optimal on balanced classes: maximise (TAR + TNR) / 2
    cand = np.quantile(np.concatenate([g, i]), np.linspace(0.001, 0.999, 999))
    acc = [((g >= c).mean() + (i < c).mean()) / 2 for c in cand]
    k = int(np.argmax(acc))
    out["threshold_balanced_acc"], out["balanced_acc"] = round(float(cand[k]), 4), round(float(acc[k]), 4)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--sizes", default="10,12,14,16,20")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    bank = np.load(FTLGAN_WORK / "bank.npz")
    ids = bank["identities"]
    assert_training_identities(ids)
    _, val_idx = split(ids, 1)
    vid = ids[val_idx]
    assert_training_identities(vid)
    faces = [Image.open(FTLGAN_WORK / "aligned" / str(bank["files"][i])).convert("RGB") for i in val_idx]
    ref = bank["emb"][val_idx]
    same = vid[:, None] == vid[None, :]
    gen, imp = same & ~np.eye(len(vid), dtype=bool), ~same
    mp = Path(args.model) if Path(args.model).is_absolute() else HERE / args.model
    student, sface = session(mp, args.threads), session(SFACE, args.threads)
    in_size = student.get_inputs()[0].shape[2]
    rows = [{"path": "sface full resolution", "size": 112, **thresholds(ref @ ref.T, gen, imp)}]
    for size in [int(s) for s in args.sizes.split(",")]:
        lows = [eval_downsample(f, size) for f in faces]
        for name, sess, s in (("sface+bicubic", sface, 112), ("student", student, in_size)):
            e = run(sess, to_input(lows, s), 32)
            rows.append({"path": name, "size": size, **thresholds(e @ ref.T, gen, imp)})
    for r in rows:
        print(json.dumps(r))
    if args.json:
        out = args.json if args.json.is_absolute() else HERE / args.json
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model": args.model, "data": "held-out training-split identities (319 faces, 177 "
                                   "identities; no folds 6-10)", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
