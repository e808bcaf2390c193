"""Step 3: export the trained generator to ONNX (fp32) and check it against PyTorch.

    python models/ftlgan/export.py [--checkpoint work/run/generator.pt] [--out models/ftlgan-fp32.onnx]

Exported with the TorchScript exporter (dynamo=False, opset 17), static shape [1,3,112,112]; the
graph holds only Conv, Relu, Add, Reshape, Transpose (pixel (un)shuffle) and Clip. A checkpoint of
"init" exports the untrained generator, which is the identity (its last conv is zero).
"""

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ftlgan import ALIGNED, REPO, Generator


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(REPO / "models" / "ftlgan" / "work" / "run" / "generator.pt"))
    ap.add_argument("--out", type=Path, default=REPO / "models" / "ftlgan-fp32.onnx")
    args = ap.parse_args()
    torch.manual_seed(0)
    ckpt = None if args.checkpoint == "init" else torch.load(args.checkpoint, map_location="cpu")
    arch = (ckpt or {}).get("arch", {})  # checkpoints before distil.py hold the default generator
    G = Generator(**arch).eval()
    if ckpt:
        G.load_state_dict(ckpt["generator"])
        print(f"checkpoint step {ckpt['step']}, generator {arch or 'default'}: {ckpt.get('val')}")
    x = torch.rand(1, 3, ALIGNED, ALIGNED)
    torch.onnx.export(G, (x,), str(args.out), input_names=["face"], output_names=["restored"],
                      opset_version=17, dynamo=False, do_constant_folding=True)
    model = onnx.load(str(args.out))
    onnx.checker.check_model(model, full_check=True)
    ops = sorted({n.op_type for n in model.graph.node})
    sess = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = G(x).numpy()
    got = sess.run(None, {"face": x.numpy()})[0]
    err = float(np.abs(got - want).max())
    print(f"{args.out}: ops {ops}, max |onnxruntime - torch| = {err:.2e}")
    if err > 1e-4:
        raise SystemExit("the exported model does not match PyTorch")


if __name__ == "__main__":
    main()
