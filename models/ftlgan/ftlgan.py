"""FTLGAN building blocks shared by every step: the generator, the discriminator, the frozen
recogniser F (farsight's own sface.onnx converted to PyTorch), and low-resolution synthesis.

Contract of the exported generator (what src/restore.rs feeds it):
  input  `face`:     [1, 3, 112, 112] float32, RGB, 0..1, NCHW: the low-resolution aligned face
                     brought to 112x112 by Catmull-Rom (bicubic, a=-0.5) interpolation;
  output `restored`: [1, 3, 112, 112] float32, RGB, 0..1 (clipped in the graph).
One model serves every input size: the size only changes how blurry the input is.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageFilter

ALIGNED = 112
REPO = Path(__file__).resolve().parents[2]
SFACE = REPO / "models" / "sface.onnx"


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x)))


class Generator(nn.Module):
    """Residual restorer working on a 28x28 grid of 4x4 pixel cells (space-to-depth), so the
    convolutions are cheap and their receptive field (10 layers of 3x3 cells = 84 px) spans the
    whole face. Only Conv, Relu, Add, Reshape/Transpose (depth-to-space) and Clip: all run in tract.
    """

    def __init__(self, ch: int = 48, blocks: int = 4, head_k: int = 3, tail_std: float = 0.0):
        super().__init__()
        self.head = nn.Conv2d(3 * 16, ch, head_k, padding=head_k // 2)
        self.body = nn.Sequential(*[ResBlock(ch) for _ in range(blocks)])
        self.tail = nn.Conv2d(ch, 3 * 16, 3, padding=1)
        # Starts (nearly) as the identity: bicubic in, bicubic out. An exactly zero tail passes no
        # gradient to the body until the tail itself has grown, so training may start it small.
        nn.init.normal_(self.tail.weight, std=tail_std)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x):
        y = F.pixel_unshuffle(x, 4)
        h = F.relu(self.head(y))
        h = self.body(h)
        return torch.clamp(x + F.pixel_shuffle(self.tail(h), 4), 0.0, 1.0)


class Discriminator(nn.Module):
    """A small PatchGAN on 112x112 faces (7x7 patch logits)."""

    def __init__(self, ch: int = 32):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (ch, ch * 2, ch * 4, ch * 8):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x * 2.0 - 1.0)


def fold_batchnorm(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Folds each BatchNorm2d into the Conv2d feeding it (inference arithmetic, same outputs to
    ~1e-6): 15% faster forward+backward on CPU, which is what training spends its time on."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(mods[node.target], nn.BatchNorm2d):
            continue
        src = node.args[0]
        if src.op == "call_module" and isinstance(mods[src.target], nn.Conv2d) and len(src.users) == 1:
            parent, _, name = src.target.rpartition(".")
            setattr(gm.get_submodule(parent), name, fuse_conv_bn_eval(mods[src.target], mods[node.target]))
            node.replace_all_uses_with(src)
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


def load_recogniser() -> nn.Module:
    """SFace as PyTorch, frozen. Takes RGB 0..1 (scaled to the 0..255 the ONNX graph expects)."""
    from onnx2torch import convert

    net = fold_batchnorm(convert(str(SFACE)).eval())
    for p in net.parameters():
        p.requires_grad_(False)

    class Recogniser(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return F.normalize(self.net((x * 255.0).contiguous(memory_format=torch.channels_last)), dim=1)

    return Recogniser().eval()


def downsample(face: Image.Image, size: int) -> Image.Image:
    """farsight's align::downsample: box average when 112 divides evenly, else antialiased
    triangle (PIL's BILINEAR widens its kernel on reduction, as the image crate's Triangle does)."""
    if size >= ALIGNED:
        return face
    if ALIGNED % size == 0:
        return face.resize((size, size), Image.Resampling.BOX)
    return face.resize((size, size), Image.Resampling.BILINEAR)


def upscale(face: Image.Image) -> Image.Image:
    """What src/restore.rs does before the model: Catmull-Rom (PIL BICUBIC is a=-0.5) to 112."""
    if face.size == (ALIGNED, ALIGNED):
        return face
    return face.resize((ALIGNED, ALIGNED), Image.Resampling.BICUBIC)


def degrade(face: Image.Image, rng: random.Random, sizes=(14, 28, 56), random_frac=0.5,
            random_range=(7, 80)) -> tuple[Image.Image, int]:
    """A camera-like low-resolution version of an aligned 112 face, upscaled back to 112.
    Size one of `sizes` (repeat a size to weight it), or with chance `random_frac` uniform in
    `random_range`; then with some chance optical blur before sampling, sensor noise and JPEG at
    the low resolution."""
    size = rng.randint(*random_range) if rng.random() < random_frac else rng.choice(sizes)
    img = face
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5) * ALIGNED / size / 2))
    low = downsample(img, size)
    if rng.random() < 0.3:
        a = np.asarray(low, dtype=np.float32)
        a = a + np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(1, 6), a.shape)
        low = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))
    if rng.random() < 0.3:
        buf = io.BytesIO()
        low.save(buf, "JPEG", quality=rng.randint(40, 90))
        low = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return upscale(low), size


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
