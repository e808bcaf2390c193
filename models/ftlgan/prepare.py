"""Step 1: the training faces. Runs `farsight export-aligned` (farsight's own detector and
aligner, so training sees exactly the pipeline's crops; identities of LFW folds 6-10 are never
written), then embeds every face and its mirror with the frozen recogniser (onnxruntime, the same
sface.onnx) for the triplet loss's positives and negatives.

    python models/ftlgan/prepare.py            # -> models/ftlgan/work/{aligned/,bank.npz}
"""

import argparse
import csv
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

from ftlgan import REPO, SFACE


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    ap.add_argument("--work", type=Path, default=REPO / "models" / "ftlgan" / "work")
    ap.add_argument("--farsight", type=Path, default=REPO / "target" / "release" / "farsight")
    args = ap.parse_args()
    aligned = args.work / "aligned"
    manifest = aligned / "manifest.csv"
    if not manifest.exists():
        if not args.farsight.exists():
            raise SystemExit(f"{args.farsight} is missing: run `cargo build --release` first")
        subprocess.run(
            [str(args.farsight), "export-aligned", "--dataset", str(args.datasets / "lfw"),
             "--pairs", str(args.datasets / "lfw-pairs.txt"), "--exclude-folds", "6-10", "--out", str(aligned)],
            check=True,
        )
    files = sorted(p for p in aligned.glob("*/*.png"))
    if not files:
        raise SystemExit(f"no faces under {aligned}")
    sess = ort.InferenceSession(str(SFACE), providers=["CPUExecutionProvider"])

    def embed(imgs):
        x = np.stack([np.asarray(i, dtype=np.float32).transpose(2, 0, 1) for i in imgs])
        out = np.concatenate([sess.run(None, {"data": x[k:k + 1]})[0] for k in range(len(x))])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    emb, emb_flip = [], []
    for k, f in enumerate(files):
        img = Image.open(f).convert("RGB")
        e = embed([img, ImageOps.mirror(img)])
        emb.append(e[0])
        emb_flip.append(e[1])
        if k % 1000 == 0:
            print(f"embedded {k}/{len(files)}", flush=True)
    ids = [f.parent.name for f in files]
    rel = [str(f.relative_to(aligned)) for f in files]
    np.savez(args.work / "bank.npz", files=np.array(rel), identities=np.array(ids),
             emb=np.array(emb, np.float32), emb_flip=np.array(emb_flip, np.float32))
    with open(manifest) as fh:
        rows = sum(1 for _ in csv.reader(fh)) - 1
    print(f"{len(files)} faces of {len(set(ids))} identities ({rows} manifest rows) -> {args.work / 'bank.npz'}")


if __name__ == "__main__":
    main()
