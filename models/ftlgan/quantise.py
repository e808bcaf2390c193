"""Step 4: int8 post-training static quantisation of the fp32 generator (QDQ format).

    python models/ftlgan/quantise.py [--fp32 models/ftlgan-fp32.onnx] [--out models/ftlgan.onnx]

Weights int8 per output channel (symmetric), activations uint8 per tensor, calibrated (MinMax) on
degraded training faces (the same degradation as training, fixed seed). No evaluation identity is
ever used. The QDQ graph keeps every Conv as DequantizeLinear -> Conv in float; see MODELS.md for
how tract runs it.
"""

import argparse
import random
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from PIL import Image

from ftlgan import REPO, degrade

WORK = REPO / "models" / "ftlgan" / "work"


class Faces(CalibrationDataReader):
    def __init__(self, files, seed):
        self.rng = random.Random(seed)
        self.it = iter(files)

    def get_next(self):
        f = next(self.it, None)
        if f is None:
            return None
        lr, _ = degrade(Image.open(f).convert("RGB"), self.rng)
        return {"face": (np.asarray(lr, np.float32) / 255.0).transpose(2, 0, 1)[None].copy()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", type=Path, default=REPO / "models" / "ftlgan-fp32.onnx")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "ftlgan.onnx")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--faces", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    bank = np.load(args.work / "bank.npz")
    files = [args.work / "aligned" / f for f in bank["files"]]
    random.Random(args.seed).shuffle(files)
    quantize_static(str(args.fp32), str(args.out), Faces(files[: args.faces], args.seed),
                    quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8, extra_options={"WeightSymmetric": True})
    model = onnx.load(str(args.out))
    onnx.checker.check_model(model, full_check=True)
    ops = sorted({n.op_type for n in model.graph.node})
    print(f"{args.out}: {args.out.stat().st_size} bytes, ops {ops}")


if __name__ == "__main__":
    main()
