"""Shared pieces of the small-face embedder (lrembed): paths, the LFW fold guard, the students,
and the camera-like degradation of an aligned face.

The student maps a *small* face (an aligned 112x112 face brought down to ~7-40 px, then
upscaled by Catmull-Rom to the student's input size) into SFace's 128-d embedding space, so
gallery templates made by SFace from good photos stay valid. Targets are SFace embeddings of the
full-resolution training faces, computed once by models/ftlgan/prepare.py (bank.npz).

Students (`--arch`), both initialised from SFace's own weights (models/sface.onnx, BatchNorm
folded into the convolutions, Dropout removed):
  sface112  SFace itself fine-tuned on Catmull-Rom-upscaled 112x112 inputs (574 M MACs).
  sface56   the same layers on a 56x56 input with the stride of the last downsampling
            (conv_13) set to 1, so the final map is still 7x7 over the same face regions and the
            FC layer keeps its meaning (~206 M MACs).
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageFilter

# FTLGAN's training module (same venv) folds SFace's BatchNorms for training too: one copy of that.
sys.path.append(str(Path(__file__).resolve().parents[1] / "ftlgan"))
from ftlgan import fold_batchnorm  # noqa: E402

ALIGNED = 112
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SFACE = REPO / "models" / "sface.onnx"
FTLGAN_WORK = REPO / "models" / "ftlgan" / "work"
WORK = HERE / "work"
DATASETS = REPO.parent / "shared" / "datasets"
PAIRS = DATASETS / "lfw-pairs.txt"
EVAL_FOLDS = range(6, 11)
ARCHS = {"sface112": 112, "sface56": 56}


# ---------------------------------------------------------------------------------------------
# LFW folds: the guard that keeps evaluation identities out of training.

def read_pairs(path: Path = PAIRS) -> list[dict]:
    """LFW View 2 pairs: [{'fold': 1..10, 'genuine': bool, 'a': (name, n), 'b': (name, n)}]."""
    lines = path.read_text().split("\n")
    folds, per = (int(x) for x in lines[0].split())
    out, k = [], 1
    for f in range(1, folds + 1):
        for j in range(2 * per):
            parts = lines[k].split()
            k += 1
            if j < per:
                assert len(parts) == 3, parts
                out.append({"fold": f, "genuine": True, "a": (parts[0], int(parts[1])), "b": (parts[0], int(parts[2]))})
            else:
                assert len(parts) == 4, parts
                out.append({"fold": f, "genuine": False, "a": (parts[0], int(parts[1])), "b": (parts[2], int(parts[3]))})
    return out


def eval_identities(path: Path = PAIRS) -> set[str]:
    """Every identity named by a pair of folds 6-10: never trained on, never calibrated on."""
    return {p[s][0] for p in read_pairs(path) if p["fold"] in EVAL_FOLDS for s in ("a", "b")}


def assert_training_identities(identities, path: Path = PAIRS) -> None:
    """Refuses (AssertionError) any identity of LFW folds 6-10 in a training/calibration set."""
    bad = sorted(set(map(str, identities)) & eval_identities(path))
    assert not bad, f"{len(bad)} identities of LFW folds 6-10 in the training data, e.g. {bad[:5]}: refusing"


def split(identities: np.ndarray, seed: int = 1, val_fraction: float = 0.05):
    """models/ftlgan/train.py's split (same seed -> the same 5% held-out identities)."""
    import random

    names = sorted(set(identities.tolist()))
    random.Random(seed).shuffle(names)
    val = set(names[: max(1, int(len(names) * val_fraction))])
    is_val = np.array([n in val for n in identities])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# ---------------------------------------------------------------------------------------------
# Students.

def _sface_layers() -> tuple[list[tuple[nn.Conv2d, torch.Tensor]], nn.Linear]:
    """SFace's weights from models/sface.onnx (onnx2torch): every conv with its BatchNorm folded
    in, paired with its PReLU slope, and the head (BatchNorm2d -> Flatten -> Gemm ->
    BatchNorm1d) folded into one Linear. Same outputs as onnxruntime to ~1e-5 (checked by
    export.py --check-sface)."""
    from onnx2torch import convert

    gm = fold_batchnorm(convert(str(SFACE)).eval())
    convs, pending = [], None
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        if isinstance(mod, nn.Conv2d):
            pending = mod
        elif type(mod).__name__ == "OnnxPReLU":
            slope = gm.get_buffer(node.args[1].target)
            convs.append((pending, slope.detach().reshape(-1).clone()))
            pending = None
    bn1, fc, bn2 = gm.bn1, gm.pre_fc1, gm.fc1
    with torch.no_grad():
        a1 = bn1.weight / torch.sqrt(bn1.running_var + bn1.eps)
        b1 = bn1.bias - bn1.running_mean * a1
        hw = fc.in_features // a1.numel()
        w = fc.weight * a1.repeat_interleave(hw)[None, :]
        b = fc.bias + fc.weight @ b1.repeat_interleave(hw)
        a2 = bn2.weight / torch.sqrt(bn2.running_var + bn2.eps)
        w = w * a2[:, None]
        b = (b - bn2.running_mean) * a2 + bn2.bias
        head = nn.Linear(fc.in_features, fc.out_features)
        head.weight.copy_(w)
        head.bias.copy_(b)
    return convs, head


class Student(nn.Module):
    """SFace's layers as a student: 27 x (conv -> PReLU), flatten of the 7x7x1024 map, one linear
    layer to 128. Input: RGB 0..1, [N, 3, S, S], S = ARCHS[arch] (the small face upscaled by
    Catmull-Rom to S). Output: the raw 128-d embedding (export.py L2-normalises in the graph)."""

    def __init__(self, arch: str = "sface112"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch}; one of {sorted(ARCHS)}")
        self.arch, self.size = arch, ARCHS[arch]
        convs, head = _sface_layers()
        layers = []
        for k, (conv, slope) in enumerate(convs):
            if arch == "sface56" and k == 23:  # conv_13_dw: the last downsampling (14 -> 7)
                assert conv.stride == (2, 2) and conv.groups == 512, conv
                conv.stride = (1, 1)
            act = nn.PReLU(slope.numel())
            with torch.no_grad():
                act.weight.copy_(slope)
            layers += [conv, act]
        self.body = nn.Sequential(*layers)
        self.head = head
        for p in self.parameters():
            p.requires_grad_(True)

    def forward(self, x):
        # SFace's graph starts with (x - 127.5) / 128 on 0..255 input
        h = self.body(((x * 255.0 - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last))
        return self.head(torch.flatten(h, 1))


def load_sface_teacher() -> nn.Module:
    """Frozen SFace (RGB 0..1 in, L2-normalised embedding out), for validation baselines."""
    s = Student("sface112").eval()
    for p in s.parameters():
        p.requires_grad_(False)

    class Teacher(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = s

        def forward(self, x):
            return F.normalize(self.s(x), dim=1)

    return Teacher().eval()


def macs(model: nn.Module, size: int) -> int:
    """Multiply-accumulates of one forward pass at [1,3,size,size] (Conv2d and Linear)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    model.train(was)
    for h in hs:
        h.remove()
    return total


# ---------------------------------------------------------------------------------------------
# Degradation: a camera-like small face from an aligned 112 face.

KERNELS = ("area", "bilinear", "bicubic", "lanczos", "hamming", "nearest", "bilinear-noaa")
KERNEL_WEIGHTS = (0.30, 0.22, 0.14, 0.10, 0.06, 0.08, 0.10)
PIL_KERNELS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "lanczos": Image.Resampling.LANCZOS, "hamming": Image.Resampling.HAMMING,
               "nearest": Image.Resampling.NEAREST}


def eval_downsample(face: Image.Image, size: int) -> Image.Image:
    """farsight eval's crop mode (align::downsample): box average when 112 divides evenly, else
    antialiased triangle (PIL BILINEAR widens its kernel on reduction, like image's Triangle)."""
    if size >= ALIGNED:
        return face
    if ALIGNED % size == 0:
        return face.resize((size, size), Image.Resampling.BOX)
    return face.resize((size, size), Image.Resampling.BILINEAR)


def upscale(low: Image.Image, size: int) -> Image.Image:
    """Catmull-Rom (PIL BICUBIC, a=-0.5; the image crate's CatmullRom) to the student's input."""
    if low.size == (size, size):
        return low
    return low.resize((size, size), Image.Resampling.BICUBIC)


def _resize(img: Image.Image, size: int, kernel: str) -> Image.Image:
    if kernel == "area":  # PIL's BOX on reduction is the exact area average
        return img.resize((size, size), Image.Resampling.BOX)
    if kernel == "bilinear-noaa":  # point-sampled bilinear (OpenCV INTER_LINEAR style): aliased
        t = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        return Image.fromarray(t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())
    return img.resize((size, size), PIL_KERNELS[kernel])


def jitter(img: Image.Image, rng: np.random.Generator, size: int, shift_px: float, rot_deg: float,
           scale_sd: float) -> Image.Image:
    """A similarity-transformed copy of the aligned face, as if the detector's landmarks at `size`
    px were off: translation N(0, shift_px) *low-resolution* pixels per axis, rotation N(0,
    rot_deg), log-scale N(0, scale_sd). Edges are reflected, not black."""
    pad = 40
    a = np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    big = Image.fromarray(a)
    k = ALIGNED / size
    tx, ty = rng.normal(0, shift_px, 2) * k
    th = math.radians(rng.normal(0, rot_deg))
    s = math.exp(rng.normal(0, scale_sd))
    c = ALIGNED / 2 + pad
    # output pixel (u, v) (0..111) samples input (x, y) = c + R*s*(u - 56, v - 56) + t
    cos, sin = math.cos(th) * s, math.sin(th) * s
    m = (cos, -sin, c - cos * ALIGNED / 2 + sin * ALIGNED / 2 + tx,
         sin, cos, c - sin * ALIGNED / 2 - cos * ALIGNED / 2 + ty)
    return big.transform((ALIGNED, ALIGNED), Image.Transform.AFFINE, m, resample=Image.Resampling.BICUBIC)


def draw_size(rng: np.random.Generator) -> int:
    """Training sizes: 7-40 px, emphasis on 12-16 (the headline 14 px and the detector's floor)."""
    u = rng.random()
    if u < 0.55:
        return int(rng.integers(12, 17))
    if u < 0.70:
        return int(rng.integers(8, 12))
    if u < 0.90:
        return int(rng.integers(17, 25))
    return int(rng.integers(25, 41))


def degrade(face: Image.Image, rng: np.random.Generator, out_size: int, clean_frac: float = 0.25,
            jitter_p: float = 0.7, shift_px: float = 0.5, rot_deg: float = 3.0, scale_sd: float = 0.04,
            size: int | None = None) -> tuple[Image.Image, int]:
    """A camera-like small version of an aligned 112 face, upscaled to `out_size` for the student.
    With chance `clean_frac` exactly farsight eval's crop degradation (no jitter, blur, noise or
    JPEG); otherwise alignment jitter, optical blur, a random resize kernel, sensor noise, JPEG."""
    size = size or draw_size(rng)
    if rng.random() < clean_frac:
        return upscale(eval_downsample(face, size), out_size), size
    img = face
    if rng.random() < jitter_p:
        img = jitter(img, rng, size, shift_px, rot_deg, scale_sd)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * ALIGNED / size / 2))
    kernel = KERNELS[rng.choice(len(KERNELS), p=np.array(KERNEL_WEIGHTS) / sum(KERNEL_WEIGHTS))]
    low = _resize(img, size, kernel)
    if rng.random() < 0.3:
        a = np.asarray(low, dtype=np.float32)
        a = a + rng.normal(0, rng.uniform(1, 6), a.shape)
        low = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))
    if rng.random() < 0.3:
        buf = io.BytesIO()
        low.save(buf, "JPEG", quality=int(rng.integers(40, 91)))
        low = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return upscale(low, out_size), size


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
