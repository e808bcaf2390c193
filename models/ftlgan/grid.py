"""A picture of what the restorer does: for 16 held-out faces (LFW folds 6-10, one photo each of
the first 16 identities of the matched pairs there), rows of the low-resolution face (shown with
nearest-neighbour blocks), bicubic, FTLGAN (the shipped ftlgan.onnx, through onnxruntime) and the
original aligned face. Faces are aligned by farsight itself (`farsight export-aligned` on a
temporary folder holding only those identities), degraded exactly as `farsight eval --mode crop`
does. Nothing of LFW is written into the repository but the picture.

    .venv/bin/python grid.py                      # -> results/grid-14px.png
    .venv/bin/python grid.py --size 20 --out results/grid-20px.png
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw

from ftlgan import ALIGNED, downsample, upscale

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def held_out_photos(pairs: Path, count: int) -> list[tuple[str, int]]:
    """(identity, photo number) of the first photo of the first `count` identities of the
    matched pairs of folds 6-10."""
    lines = pairs.read_text().split("\n")
    folds, per = (int(x) for x in lines[0].split())
    chosen: list[tuple[str, int]] = []
    seen = set()
    i = 1
    for fold in range(folds):
        matched = lines[i : i + per]
        i += 2 * per
        if fold < 5:
            continue
        for line in matched:
            name, a, _ = line.split()
            if name not in seen:
                seen.add(name)
                chosen.append((name, int(a)))
            if len(chosen) == count:
                return chosen
    sys.exit(f"only {len(chosen)} identities in folds 6-10 of {pairs}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    ap.add_argument("--farsight", type=Path, default=REPO / "target" / "release" / "farsight")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "ftlgan.onnx")
    ap.add_argument("--size", type=int, default=14, help="probe size in aligned pixels (default 14)")
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "grid-14px.png")
    args = ap.parse_args()
    lfw, pairs = args.datasets / "lfw", args.datasets / "lfw-pairs.txt"
    if not lfw.is_dir() or not pairs.is_file():
        sys.exit(f"LFW is missing: expected {lfw} and {pairs}")
    photos = held_out_photos(pairs, args.count)
    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "lfw"
        subset.mkdir()
        for name, _ in photos:
            (subset / name).symlink_to((lfw / name).resolve())
        aligned = Path(tmp) / "aligned"
        subprocess.run(
            [str(args.farsight), "-q", "export-aligned", "--dataset", str(subset), "--pairs", str(pairs),
             "--exclude-folds", "1-5", "--out", str(aligned)],
            check=True,
        )
        rows: list[list[Image.Image]] = [[], [], [], []]
        for name, n in photos:
            face = Image.open(aligned / name / f"{name}_{n:04d}.png").convert("RGB")
            small = downsample(face, args.size)
            bicubic = upscale(small)
            x = np.asarray(bicubic, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
            (y,) = session.run(None, {"face": x})
            restored = Image.fromarray((y[0].transpose(1, 2, 0).clip(0, 1) * 255.0).round().astype(np.uint8))
            for row, img in zip(rows, [small.resize((ALIGNED, ALIGNED), Image.Resampling.NEAREST), bicubic, restored, face]):
                row.append(img)
    label_w = 120
    grid = Image.new("RGB", (label_w + ALIGNED * len(photos), ALIGNED * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (row, label) in enumerate(zip(rows, [f"{args.size} px", "bicubic", "FTLGAN", "original"])):
        draw.text((8, r * ALIGNED + ALIGNED // 2 - 6), label, fill="black")
        for c, img in enumerate(row):
            grid.paste(img, (label_w + c * ALIGNED, r * ALIGNED))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, optimize=True)
    print(f"{args.out}: {len(photos)} faces of folds 6-10 at {args.size} px")


if __name__ == "__main__":
    main()
