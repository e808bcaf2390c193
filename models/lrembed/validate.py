"""Held-out validation (training-split identities only, never folds 6-10) of a checkpoint's raw
or EMA weights, the same figures train.py logs. For comparing runs at equal CPU time when their
EMAs lag differently.

    python models/lrembed/validate.py work/a112/last.pt --weights model
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import FTLGAN_WORK, HERE, Student, assert_training_identities, split
from train import Validator


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--weights", choices=["model", "ema"], default="ema")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = args.checkpoint if args.checkpoint.is_absolute() else HERE / args.checkpoint
    ck = torch.load(path, map_location="cpu", weights_only=False)
    s = Student(ck["arch"]).eval()
    s.load_state_dict(ck[args.weights])
    bank = np.load(FTLGAN_WORK / "bank.npz")
    ids = bank["identities"]
    assert_training_identities(ids)
    _, val_idx = split(ids, 1)
    faces = np.stack([np.asarray(Image.open(FTLGAN_WORK / "aligned" / str(bank["files"][i])).convert("RGB")) for i in val_idx])
    v = Validator(faces, bank["emb"][val_idx], ids[val_idx], s.size, path.parent / "val-bicubic.npz")(s)
    print(json.dumps({"checkpoint": str(args.checkpoint), "weights": args.weights, "step": ck.get("step"),
                      "cpu_s": ck.get("cpu_s"), **{k: round(x, 4) for k, x in v.items()}}))


if __name__ == "__main__":
    main()
