"""The training smoke test: every step of the real pipeline on a handful of faces, in a temporary
folder: prepare (farsight export-aligned + embeddings) on 4 training identities, two training
steps, the exact-resume check
(8 steps in one run == 3 + 5 resumed), two distillation steps into the small student, export of the student to ONNX (checked
against PyTorch), int8 quantisation. About a minute on 2 cores.

    models/ftlgan/.venv/bin/python models/ftlgan/smoke.py
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ftlgan import REPO

HERE = Path(__file__).resolve().parent
# Training identities (LFW folds 1-5), each with at least two photos.
IDENTITIES = ["Abdullah_Gul", "Adrien_Brody", "Al_Gore", "Alvaro_Uribe"]


def step(*args):
    print("$", " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, *map(str, args)], check=True, cwd=HERE)


def main():
    shared = REPO.parent / "shared" / "datasets"
    if not (shared / "lfw").is_dir():
        raise SystemExit(f"{shared}/lfw is missing: the smoke test needs the LFW dataset")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "datasets"
        (data / "lfw").mkdir(parents=True)
        for name in IDENTITIES:
            (data / "lfw" / name).symlink_to(shared / "lfw" / name)
        (data / "lfw-pairs.txt").symlink_to(shared / "lfw-pairs.txt")
        work = tmp / "work"
        farsight = os.environ.get("FARSIGHT_BIN", str(REPO / "target" / "release" / "farsight"))
        step("prepare.py", "--datasets", data, "--work", work, "--farsight", farsight)
        step("train.py", "--smoke", "--work", work)
        step("resume_check.py", "--work", work, "--steps", "8", "--stop", "3")
        step("resume_check.py", "--work", work, "--steps", "6", "--stop", "2", "--camera")
        step("distil.py", "--smoke", "--work", work, "--teacher", work / "smoke" / "last.pt")
        step("export.py", "--checkpoint", work / "smoke-distil" / "last.pt", "--out", tmp / "g.onnx")
        step("quantise.py", "--fp32", tmp / "g.onnx", "--out", tmp / "g-int8.onnx", "--work", work, "--faces", "4")
    print("training smoke test: ok")


if __name__ == "__main__":
    main()
