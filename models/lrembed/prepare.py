"""Step 1: the faces.

    python models/lrembed/prepare.py --farsight /tmp/farsight-helper-bin

Training side: models/ftlgan/prepare.py (farsight export-aligned of LFW identities of folds 1-5 and
of no fold, plus SFace embeddings of each face and its mirror -> models/ftlgan/work/bank.npz), then
a check of every identity in the bank against the pairs file (folds 6-10 refused).

Evaluation side (used only by evaluate.py, never by train.py): `farsight export-aligned
--exclude-folds 1-5` into work/eval-only-folds6-10/, pruned to the identities of folds 6-10 pairs
(the export also writes no-fold identities; they are deleted here so the folder holds nothing
but evaluation identities). train.py reads only bank.npz and its aligned/ folder, which the
fold guard in common.assert_training_identities checks at every start.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import DATASETS, FTLGAN_WORK, PAIRS, REPO, WORK, assert_training_identities, eval_identities

EVAL_DIR = WORK / "eval-only-folds6-10"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--farsight", type=Path, default=REPO / "target" / "release" / "farsight")
    ap.add_argument("--skip-train", action="store_true", help="only the evaluation faces")
    args = ap.parse_args()
    if not args.skip_train:
        if not (FTLGAN_WORK / "bank.npz").exists():
            subprocess.run([sys.executable, str(REPO / "models" / "ftlgan" / "prepare.py"), "--farsight", str(args.farsight)],
                           check=True, cwd=REPO / "models" / "ftlgan")
        bank = np.load(FTLGAN_WORK / "bank.npz")
        assert_training_identities(bank["identities"])
        assert_training_identities(Path(str(f)).parent.name for f in bank["files"])
        dirs = [d.name for d in (FTLGAN_WORK / "aligned").iterdir() if d.is_dir()]
        assert_training_identities(dirs)
        print(f"training bank: {len(bank['files'])} faces of {len(set(bank['identities'].tolist()))} identities, "
              f"none of folds 6-10 ({len(dirs)} identity folders checked)")
    if not (EVAL_DIR / "manifest.csv").exists():
        EVAL_DIR.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(args.farsight), "export-aligned", "--dataset", str(DATASETS / "lfw"), "--pairs", str(PAIRS),
                        "--exclude-folds", "1-5", "--out", str(EVAL_DIR)], check=True)
    keep = eval_identities()
    pruned = 0
    for d in EVAL_DIR.iterdir():
        if d.is_dir() and d.name not in keep:
            shutil.rmtree(d)
            pruned += 1
    have = sum(1 for d in EVAL_DIR.iterdir() if d.is_dir())
    print(f"evaluation faces: {EVAL_DIR} ({have} identities of folds 6-10; {pruned} no-fold identities removed)")


if __name__ == "__main__":
    main()
