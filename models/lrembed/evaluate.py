"""Step 4: evaluation proxy (onnxruntime) on LFW View 2 folds 6-10, farsight eval's crop mode.

    python models/lrembed/evaluate.py --model work/a112/lrembed.onnx --sizes 7,10,12,14,16,28 \
        --json results/eval-a112.json

Protocol (as `farsight eval --mode crop`): for each pair the probe is the first image's aligned
112x112 face (farsight export-aligned, work/eval-only-folds6-10 made by prepare.py), area-
downsampled to N x N (box when 112 divides evenly, else antialiased triangle: align::downsample),
brought back up by Catmull-Rom; the reference is SFace of the second image's aligned face at full
resolution. Score: cosine. Rows:
  sface+bicubic   SFace on the Catmull-Rom 112 face (farsight's `bicubic` row; the baseline)
  MODEL           the student on the Catmull-Rom face at its input size (112 or 56)
  MODEL+fused     the L2-normalised mean of the two normalised embeddings (score fusion)
Metrics as src/eval/metrics.rs: d' (sample variances), AUC (Mann-Whitney, ties 1/2), accuracy
LFW-style (threshold chosen on the other folds; mean +- sample std over folds 6-10), TAR at
FAR 1e-3 (1,500 impostors: at most 1 false accept).
SFace embeddings of references and of the baseline probes are cached in work/eval-cache/.
The faces of folds 6-10 are read here and nowhere else.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from common import EVAL_FOLDS, HERE, SFACE, WORK, eval_downsample, read_pairs, upscale

EVAL_DIR = WORK / "eval-only-folds6-10"
CACHE = WORK / "eval-cache"


# ------------------------------------------------------------------------- metrics (metrics.rs)
def d_prime(g, i):
    return float(abs(g.mean() - i.mean()) / np.sqrt((g.var(ddof=1) + i.var(ddof=1)) / 2))


def auc(g, i):
    i_sorted = np.sort(i)
    below = np.searchsorted(i_sorted, g, side="left")
    not_above = np.searchsorted(i_sorted, g, side="right")
    return float((2 * below + (not_above - below)).sum() / (2.0 * len(g) * len(i)))


def tar_at_far(g, i, far=1e-3):
    k = int(np.floor(far * len(i) + 1e-9))  # false accepts allowed
    if k >= len(i):
        return 1.0
    cut = np.sort(i)[::-1][k]  # accept only scores strictly above the (k+1)-th highest impostor
    return float((g > cut).mean())


def best_threshold(scores, genuine):
    order = np.argsort(-scores, kind="stable")
    s, gen = scores[order], genuine[order]
    correct = int((~gen).sum())
    best_c, best_t = correct, np.inf
    for k in range(len(s)):
        correct += 1 if gen[k] else -1
        if k + 1 < len(s):
            if s[k + 1] == s[k]:
                continue
            t = s[k + 1] / 2 + s[k] / 2
            if not (s[k + 1] < t <= s[k]):
                t = s[k]
        else:
            t = -np.inf
        if correct > best_c:
            best_c, best_t = correct, t
    return best_t


def lfw_accuracy(scores, genuine, folds):
    accs = []
    for f in sorted(set(folds.tolist())):
        test = folds == f
        t = best_threshold(scores[~test], genuine[~test])
        accs.append(float(((scores[test] >= t) == genuine[test]).mean()))
    return float(np.mean(accs)), float(np.std(accs, ddof=1))


def metrics(scores, genuine, folds) -> dict:
    g, i = scores[genuine], scores[~genuine]
    acc, sd = lfw_accuracy(scores, genuine, folds)
    return {"pairs": int(len(scores)), "d_prime": round(d_prime(g, i), 4), "auc": round(auc(g, i), 4),
            "accuracy": round(acc, 4), "accuracy_std": round(sd, 4), "tar_at_far_1e-3": round(tar_at_far(g, i), 4),
            "mean_genuine": round(float(g.mean()), 4), "mean_impostor": round(float(i.mean()), 4)}


# ------------------------------------------------------------------------- embeddings
def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray, batch: int) -> np.ndarray:
    """Normalised embeddings; SFace's own file is static batch 1."""
    name = sess.get_inputs()[0].name
    static1 = sess.get_inputs()[0].shape[0] == 1
    step = 1 if static1 else batch
    out = np.concatenate([sess.run(None, {name: x[k:k + step]})[0] for k in range(0, len(x), step)])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def to_input(imgs, size: int) -> np.ndarray:
    return np.stack([np.asarray(upscale(im, size), dtype=np.float32).transpose(2, 0, 1) for im in imgs])


def cached(name: str, keys: list[str], compute) -> np.ndarray:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.npz"
    if path.exists():
        z = np.load(path)
        if list(z["keys"]) == keys:
            return z["emb"]
    emb = compute()
    np.savez(path, keys=np.array(keys), emb=emb)
    return emb


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="student ONNX (repeat for several)")
    ap.add_argument("--label", action="append", default=[], help="row label per --model (default: file stem)")
    ap.add_argument("--sizes", default="7,10,12,14,16,28")
    ap.add_argument("--no-fusion", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-pairs-per-fold", type=int, default=0, help="first N genuine + N impostor of each fold")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    t0 = time.time()
    pairs = [p for p in read_pairs() if p["fold"] in EVAL_FOLDS]
    if args.max_pairs_per_fold:
        n = args.max_pairs_per_fold
        pairs = [p for f in EVAL_FOLDS for gen in (True, False)
                 for p in [q for q in pairs if q["fold"] == f and q["genuine"] == gen][:n]]
    path = lambda ref: EVAL_DIR / ref[0] / f"{ref[0]}_{ref[1]:04d}.png"  # noqa: E731
    missing = [p for p in pairs if not path(p["a"]).exists() or not path(p["b"]).exists()]
    if len(missing) == len(pairs):
        raise SystemExit(f"no evaluation faces under {EVAL_DIR}: run prepare.py first")
    pairs = [p for p in pairs if p not in missing]
    probes = sorted({p["a"] for p in pairs})
    refs = sorted({p["b"] for p in pairs})
    pk = [f"{n}/{k}" for n, k in probes]
    rk = [f"{n}/{k}" for n, k in refs]
    p_index = {r: k for k, r in enumerate(probes)}
    r_index = {r: k for k, r in enumerate(refs)}
    genuine = np.array([p["genuine"] for p in pairs])
    folds = np.array([p["fold"] for p in pairs])
    pa = np.array([p_index[p["a"]] for p in pairs])
    pb = np.array([r_index[p["b"]] for p in pairs])
    probe_imgs = [Image.open(path(r)).convert("RGB") for r in probes]
    sface = session(SFACE, args.threads)
    ref_emb = cached("sface-ref-112", rk, lambda: run(sface, to_input([Image.open(path(r)).convert("RGB") for r in refs], 112), 1))
    students = []
    for k, m in enumerate(args.model):
        mp = Path(m) if Path(m).is_absolute() else HERE / m
        label = args.label[k] if k < len(args.label) else mp.stem
        sess = session(mp, args.threads)
        students.append((label, sess, sess.get_inputs()[0].shape[2]))
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        lows = [eval_downsample(im, size) for im in probe_imgs]
        base = cached(f"sface-bicubic-{size}", pk, lambda: run(sface, to_input(lows, 112), 1))
        score = lambda e: (e[pa] * ref_emb[pb]).sum(1)  # noqa: E731
        rows.append({"size": size, "model": "sface+bicubic", **metrics(score(base), genuine, folds)})
        print(json.dumps(rows[-1]), flush=True)
        for label, sess, in_size in students:
            e = run(sess, to_input(lows, in_size), args.batch)
            rows.append({"size": size, "model": label, **metrics(score(e), genuine, folds)})
            print(json.dumps(rows[-1]), flush=True)
            if not args.no_fusion:
                fused = e + base
                fused /= np.linalg.norm(fused, axis=1, keepdims=True)
                rows.append({"size": size, "model": f"{label}+fused", **metrics(score(fused), genuine, folds)})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{len(pairs)} pairs of folds 6-10 ({len(missing)} skipped: a face missing), {time.time() - t0:.0f} s")
    print(f"{'px':>3} {'model':<28} {'d_prime':>8} {'AUC':>6} {'accuracy':>15} {'TAR@1e-3':>9}")
    for r in rows:
        print(f"{r['size']:>3} {r['model']:<28} {r['d_prime']:>8.3f} {r['auc']:>6.3f} "
              f"{r['accuracy']:.4f}±{r['accuracy_std']:.4f} {r['tar_at_far_1e-3']:>9.3f}")
    if args.json:
        out = args.json if args.json.is_absolute() else HERE / args.json
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"protocol": "LFW View 2 folds 6-10, crop mode (farsight eval), onnxruntime",
                                   "models": args.model, "pairs": len(pairs), "skipped": len(missing), "rows": rows},
                                  indent=2) + "\n")


if __name__ == "__main__":
    main()
