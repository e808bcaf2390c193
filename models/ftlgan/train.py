"""Step 2: train the FTLGAN generator (see models/MODELS.md, "ftlgan", for the design).

    python models/ftlgan/train.py --steps 3000            # -> work/run/{generator.pt,log.csv,losses.png}
    python models/ftlgan/train.py --smoke                 # two steps on 8 faces (the smoke test)

Losses on G's output sr = G(up(LR(x))) with the frozen recogniser F (embeddings L2-normalised,
d = 1 - cosine):
  pixel   L1(sr, x)
  ident   d(F(sr), F(x))                     (the same face at full resolution)
  triplet max(0, d(F(sr), F(p)) - d(F(sr), F(n)) + margin)
          p: another real photo of the same identity (x itself when there is none),
          n: the hardest real photo of another identity (most similar to F(sr)) in the whole bank
  adv     non-saturating GAN loss against a PatchGAN discriminator (after a warm-up)
F(p) and F(n) come from real images only, embedded once by prepare.py.

`--camera` trains on faces as the detector path hands them over (frame mode, `farsight run`):
alignment jitter of the size's landmark error, random resize kernels, blur, noise and JPEG
(lrembed's degradation). Pixel and feature targets are then the jittered full-resolution face;
identity targets stay the aligned photo's embeddings (what the gallery holds). The shipped
student was fine-tuned this way (models/MODELS.md, "Fine-tuned for the camera").
"""

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ftlgan import REPO, Discriminator, Generator, degrade, downsample, load_recogniser, to_tensor, upscale
from runs import atomic_save, lr_at, rng_state, run_clock, run_done, set_rng_state, stop_on_signals

sys.path.append(str(Path(__file__).resolve().parents[1] / "lrembed"))
from common import degrade as camera_degrade  # noqa: E402
from common import jitter  # noqa: E402

WORK = REPO / "models" / "ftlgan" / "work"
# The generator trained here (the teacher); distil.py makes smaller ones. Checkpoints record it.
ARCH = {"ch": 48, "blocks": 4}
# SFace activations matched by the feature term: 28x28, 14x14 and 7x7 stages of the recogniser.
FEATURE_LAYERS = ("conv_6_relu", "conv_12_relu", "conv_14_relu")


def capture_features(Fr) -> dict:
    """Forward hooks that keep the FEATURE_LAYERS outputs of the recogniser's last call."""
    feats: dict = {}
    for name, module in Fr.net.named_modules():
        if name in FEATURE_LAYERS:
            module.register_forward_hook(lambda _m, _i, out, name=name: feats.__setitem__(name, out))
    return feats


class Faces(torch.utils.data.Dataset):
    def __init__(self, root: Path, files, seed: int, sizes, random_frac: float):
        self.root, self.files, self.seed = root, files, seed
        self.sizes, self.random_frac = sizes, random_frac
        self.epoch = 0

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        rng = random.Random(hash((self.seed, self.epoch, i)) & 0xFFFFFFFF)
        hr = Image.open(self.root / self.files[i]).convert("RGB")
        flip = rng.random() < 0.5
        if flip:
            hr = ImageOps.mirror(hr)
        lr, size = degrade(hr, rng, self.sizes, self.random_frac)
        return to_tensor(lr), to_tensor(hr), i, int(flip), size


def batches(data: "Faces", batch: int, workers: int, generator: torch.Generator):
    """Shuffled batches without end, a fresh degradation draw each epoch (the caller stops)."""
    while True:
        data.epoch += 1
        yield from torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=len(data) > batch,
                                               num_workers=workers, generator=generator)


def csv_log(path: Path, fields: list[str]):
    """A CSV log with its header written: (file, writer); flush the file after each row."""
    f = open(path, "w", newline="")
    log = csv.DictWriter(f, fieldnames=fields)
    log.writeheader()
    return f, log


def split(identities: np.ndarray, seed: int, val_fraction=0.05):
    """Holds out a fixed 5% of the training identities for validation (nobody tunes on folds 6-10)."""
    names = sorted(set(identities.tolist()))
    random.Random(seed).shuffle(names)
    val = set(names[: max(1, int(len(names) * val_fraction))])
    is_val = np.array([n in val for n in identities])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


_BICUBIC: dict[int | str, float] = {}


@torch.no_grad()
def validate(G, Fr, root, files, emb, sizes=(14, 28, 56, "14j")):
    """Mean cosine between F(restored) and F(full resolution) on held-out identities, for G and
    for plain bicubic (computed once), at fixed sizes (no noise: the evaluation's crop degradation).
    "14j": 14 px after a fixed alignment jitter per face (0.5 px, 3 degrees, 4% scale: the
    detector's landmark error at that size), what frame mode sees."""
    out = {}
    for s in sizes:
        n = 14 if s == "14j" else s
        imgs = [Image.open(root / f).convert("RGB") for f in files]
        if s == "14j":
            imgs = [jitter(img, np.random.default_rng([99, k]), n, 0.5, 3.0, 0.04) for k, img in enumerate(imgs)]
        lr = torch.stack([to_tensor(upscale(downsample(img, n))) for img in imgs])
        ref = torch.from_numpy(emb)
        out[f"val_cos_{s}"] = float((Fr(G(lr)) * ref).sum(1).mean())
        if s not in _BICUBIC:
            _BICUBIC[s] = float((Fr(lr) * ref).sum(1).mean())
        out[f"val_cos_{s}_bicubic"] = _BICUBIC[s]
    return out


def plot(log_path: Path, png: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log_path)))
    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    steps = [int(r["step"]) for r in rows]
    for k in ("pixel", "ident", "triplet", "feat", "adv", "d_loss"):
        if rows[0].get(k):  # logs of older runs have no feat column
            axes[0].plot(steps, [float(r[k]) for r in rows], label=k)
    axes[0].set_xlabel("step")
    axes[0].set_yscale("log")
    if axes[0].lines:
        axes[0].legend()
    axes[0].set_title("training losses (moving average)")
    val = [r for r in rows if r.get("val_cos_14")]
    for s in (14, 28, 56, "14j"):
        if not val[0].get(f"val_cos_{s}"):  # logs of older runs have no jittered column
            continue
        (line,) = axes[1].plot([int(r["step"]) for r in val], [float(r[f"val_cos_{s}"]) for r in val], label=f"G {s}px")
        axes[1].plot([int(r["step"]) for r in val], [float(r[f"val_cos_{s}_bicubic"]) for r in val], "--",
                     color=line.get_color(), label=f"bicubic {s}px")
    axes[1].set_xlabel("step")
    axes[1].set_title("held-out identities: cos(F(restored), F(original))")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


RUNTIME_ONLY = {"resume", "stop_at_step", "max_minutes", "out", "threads", "smoke"}



class StepBatches:
    """Batch `step` as a pure function of (seed, step): the face order is a seeded permutation per
    epoch and each sample's flip, degradation and positive photo come from a generator seeded by
    (seed, epoch, position). Nothing to checkpoint but the step."""

    def __init__(self, root: Path, files, train_idx, by_id, identities, p: dict):
        self.root, self.files, self.train_idx, self.p = root, files, train_idx, p
        self.by_id, self.identities = by_id, identities
        self.sizes = tuple(int(s) for s in p["sizes"].split(","))
        self._perm: dict[int, np.ndarray] = {}

    def perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.p["seed"], epoch, 1]).permutation(len(self.train_idx))}
        return self._perm[epoch]

    def __call__(self, step: int):
        lrs, hrs, gidx, flips, pos = [], [], [], [], []
        for j in range(self.p["batch"]):
            epoch, at = divmod(step * self.p["batch"] + j, len(self.train_idx))
            g = int(self.train_idx[self.perm(epoch)[at]])
            rng = random.Random(f"{self.p['seed']}/{epoch}/{at}")  # str seeds are hashed with SHA-512: stable
            hr = Image.open(self.root / str(self.files[g])).convert("RGB")
            flip = rng.random() < 0.5
            if flip:
                hr = ImageOps.mirror(hr)
            if self.p.get("camera"):
                hr, lr = self.camera(hr, rng, epoch, at)
            else:
                lr, _size = degrade(hr, rng, self.sizes, self.p["random_size_frac"])
            others = [k for k in self.by_id[self.identities[g]] if k != g]
            pos.append((rng.choice(others), rng.randrange(2)) if others else None)
            lrs.append(to_tensor(lr))
            hrs.append(to_tensor(hr))
            gidx.append(g)
            flips.append(int(flip))
        return torch.stack(lrs), torch.stack(hrs), torch.tensor(gidx), torch.tensor(flips), pos

    def camera(self, hr: Image.Image, rng: random.Random, epoch: int, at: int):
        """`--camera`: the face as the detector path hands it over (lrembed's degradation: alignment
        jitter as the landmarks are off at that size, a random resize kernel, blur, noise, JPEG;
        a quarter of the faces exactly the evaluation's crop degradation). Returns (the jittered
        full-resolution face, the pixel and feature target; the low-resolution input). The
        identity targets stay the aligned photo's embeddings: what the gallery holds."""
        size = rng.randint(7, 40) if rng.random() < self.p["random_size_frac"] else rng.choice(self.sizes)
        nrng = np.random.default_rng([self.p["seed"], epoch, at, 7])
        if nrng.random() < 0.75 * self.p["jitter_p"]:  # the clean quarter below never sees jitter
            hr = jitter(hr, nrng, size, self.p["shift_px"], self.p["rot_deg"], self.p["scale_sd"])
        lr, _size = camera_degrade(hr, nrng, hr.size[0], clean_frac=0.25, jitter_p=0.0, size=size)
        return hr, lr





def load_generator_weights(path: Path) -> dict:
    """Generator weights from a checkpoint (.pt: its 'generator') or an exported ONNX file (its
    initializers carry the PyTorch names)."""
    if path.suffix == ".onnx":
        import onnx
        from onnx import numpy_helper

        return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(str(path)).graph.initializer}
    return torch.load(path, map_location="cpu", weights_only=False)["generator"]


@torch.no_grad()
def grow_from(G: Generator, old: dict, small_std: float = 1e-4) -> None:
    """Starts G from a smaller generator of the same design (fewer channels, blocks, a 1x1 head)
    so that G computes what the smaller one did, to within `small_std` noise, and training only
    adds to it: each old tensor is copied into the leading slice of the new one (a 1x1 kernel
    into the centre tap of a 3x3); weights reading new input channels, and the second conv of a
    new residual block, start at N(0, small_std), so new channels and blocks do not disturb the
    old function; weights writing new channels keep their default initialisation."""
    sd = G.state_dict()
    for name, new in sd.items():
        w = old.get(name)
        if w is None:
            if name.startswith("body.") and name.endswith(".c2.weight"):  # a new block: the identity
                new.normal_(0.0, small_std)
            elif name.startswith("body.") and name.endswith(".c2.bias"):
                new.zero_()
            continue
        if new.dim() == 4:
            new[:, w.shape[1]:].normal_(0.0, small_std)
            o = (new.shape[2] - w.shape[2]) // 2
            if o:
                new[: w.shape[0], : w.shape[1]].normal_(0.0, small_std)
            new[: w.shape[0], : w.shape[1], o:o + w.shape[2], o:o + w.shape[3]] = w
        else:
            new[: w.shape[0]] = w
    G.load_state_dict(sd)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--out", type=Path, default=None, help="run folder (default work/run)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out exactly, from its last.pt")
    ap.add_argument("--stop-at-step", type=int, default=0, help="checkpoint and stop after this step")
    ap.add_argument("--max-minutes", type=float, default=0, help="checkpoint and stop after this long")
    ap.add_argument("--ckpt-minutes", type=float, default=10, help="checkpoint (last.pt) this often")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from a smaller generator (.pt checkpoint or exported .onnx), grown into --ch/--blocks")
    ap.add_argument("--ch", type=int, default=ARCH["ch"])
    ap.add_argument("--blocks", type=int, default=ARCH["blocks"])
    ap.add_argument("--head-k", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3000, help="length of the LR schedule")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--decay-frac", type=float, default=0.3, help="cosine decay over this last share of --steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--w-pixel", type=float, default=1.0)
    ap.add_argument("--w-ident", type=float, default=1.0)
    ap.add_argument("--w-triplet", type=float, default=1.0)
    ap.add_argument("--w-adv", type=float, default=0.003)
    ap.add_argument("--w-feat", type=float, default=0.0,
                    help="weight of the recogniser feature-matching term (relative MSE at FEATURE_LAYERS)")
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--adv-warmup", type=int, default=500, help="steps before the adversarial term starts")
    ap.add_argument("--sizes", default="14,28,56",
                    help="low-resolution sizes to train on, comma-separated (repeat one to weight it)")
    ap.add_argument("--random-size-frac", type=float, default=0.5,
                    help="share of samples at a random size in 7..80 instead of --sizes")
    ap.add_argument("--tail-std", type=float, default=0.0, help="init std of the generator's last conv")
    ap.add_argument("--select", choices=("sum", "14", "14+14j"), default="sum",
                    help="generator.pt keeps the best held-out cosine: summed over 14/28/56 px, at 14 px, "
                         "or at 14 px clean plus jittered")
    ap.add_argument("--camera", action="store_true",
                    help="train on the detector path's faces: alignment jitter, random resize kernels (lrembed's "
                         "degradation); sizes from --sizes, or with --random-size-frac uniform in 7..40")
    ap.add_argument("--jitter-p", type=float, default=0.7, help="--camera: share of faces with alignment jitter")
    ap.add_argument("--shift-px", type=float, default=0.5, help="--camera: jitter sd in low-resolution pixels")
    ap.add_argument("--rot-deg", type=float, default=3.0, help="--camera: jitter rotation sd")
    ap.add_argument("--scale-sd", type=float, default=0.04, help="--camera: jitter log-scale sd")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--val-faces", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="two steps on 8 faces, checks, no files kept")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.batch, args.val_every, args.val_faces, args.adv_warmup = 2, 4, 2, 4, 0
    out = args.out or (args.work / ("smoke" if args.smoke else "run"))
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "last.pt"
    if args.resume:
        if not ckpt_path.exists():
            raise SystemExit(f"{ckpt_path} is missing: nothing to resume")
        p = json.loads((out / "params.json").read_text())
    else:
        if ckpt_path.exists() and not args.smoke:
            raise SystemExit(f"{ckpt_path} exists: use --resume, or another --out")
        p = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in RUNTIME_ONLY}
        # kept relative to the repository, so a committed run resumes from another clone
        p["work"] = str(args.work.resolve().relative_to(REPO)) if args.work.resolve().is_relative_to(REPO) else p["work"]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    random.seed(p["seed"])
    np.random.seed(p["seed"])
    torch.manual_seed(p["seed"])
    dev = torch.device(p["device"])

    work = REPO / p["work"]  # a resumed run reads the data it started with (REPO / an absolute path is that path)
    bank = np.load(work / "bank.npz")
    files, identities = bank["files"], bank["identities"]
    emb = np.stack([bank["emb"], bank["emb_flip"]], 1)  # [N, 2, 128]: original, mirrored
    train_idx, val_idx = split(identities, p["seed"])
    if args.smoke:
        train_idx, val_idx = train_idx[:8], val_idx[:4]
    val_idx = val_idx[: p["val_faces"]]
    root = work / "aligned"

    # Same-identity photos (positives) and the negative bank: training identities only.
    by_id: dict[str, list[int]] = {}
    for i in train_idx:
        by_id.setdefault(identities[i], []).append(int(i))
    bank_emb = torch.from_numpy(emb[train_idx].reshape(-1, emb.shape[-1])).to(dev)  # both mirrors
    bank_ids = np.repeat(identities[train_idx], 2)
    id_code = {n: k for k, n in enumerate(sorted(set(identities.tolist())))}
    bank_code = torch.tensor([id_code[n] for n in bank_ids], device=dev)
    emb_t = torch.from_numpy(emb).to(dev)

    arch = {"ch": p["ch"], "blocks": p["blocks"], "head_k": p["head_k"]}
    G, D = Generator(**arch, tail_std=p["tail_std"]).to(dev), Discriminator().to(dev)
    if p.get("init") and not args.resume:
        if not Path(p["init"]).is_file():
            raise SystemExit(f"--init {p['init']}: no such file (a generator .pt checkpoint or an exported .onnx)")
        grow_from(G, load_generator_weights(Path(p["init"])))
    # channels_last: ~15% faster SFace forward+backward on CPU (oneDNN), same arithmetic
    Fr = load_recogniser().to(dev, memory_format=torch.channels_last)
    feats = capture_features(Fr)
    opt_g = torch.optim.Adam(G.parameters(), lr=p["lr"], betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=p["lr"], betas=(0.5, 0.99))
    batches = StepBatches(root, files, train_idx, by_id, identities, p)

    step, wall0, cpu0, best = 0, 0.0, 0.0, -1.0
    avg: dict[str, float] = {}  # moving averages of the logged losses (checkpointed too)
    if args.resume:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        G.load_state_dict(ck["generator"])
        D.load_state_dict(ck["discriminator"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        set_rng_state(ck["rng"])
        step, wall0, cpu0, best = ck["step"], ck["wall_s"], ck["cpu_s"], ck["best"]
        avg.update(ck["avg"])
        print(f"resumed {out} at step {step} ({wall0 / 3600:.2f} h wall, {cpu0 / 3600:.2f} h CPU)", flush=True)
    else:
        params = dict(p, train_faces=len(train_idx), train_identities=len(by_id), val_faces=len(val_idx),
                      generator_parameters=sum(q.numel() for q in G.parameters()), torch=torch.__version__,
                      started=time.strftime("%Y-%m-%d %H:%M:%S"))
        (out / "params.json").write_text(json.dumps(params, indent=2))
        print(json.dumps(params), flush=True)

    # The log spans every run of this folder: cut back to the checkpoint's step, then append.
    log_path = out / "log.csv"
    fields = ["step", "seconds", "cpu_s", "pixel", "ident", "triplet", "adv", "d_loss", "feat", "lr"] + [
        f"val_cos_{s}{b}" for s in (14, 28, 56, "14j") for b in ("", "_bicubic")]
    rows = list(csv.DictReader(open(log_path))) if log_path.exists() and args.resume else []
    rows = [r for r in rows if int(r["step"]) <= step]
    log_file, log = csv_log(log_path, fields)
    log.writerows(rows)
    log_file.flush()

    stop = stop_on_signals()
    clock = run_clock(wall0, cpu0)
    t_start = time.time()  # --max-minutes counts this process's time

    def checkpoint():
        wall, cpu = clock()
        atomic_save({"generator": G.state_dict(), "discriminator": D.state_dict(), "opt_g": opt_g.state_dict(),
                     "opt_d": opt_d.state_dict(), "rng": rng_state(), "step": step, "wall_s": wall, "cpu_s": cpu,
                     "best": best, "avg": avg, "arch": arch}, ckpt_path)

    val_emb = emb[val_idx, 0]
    before = [q.detach().clone() for q in G.parameters()]
    last_ckpt = time.time()
    d = lambda a, b: 1.0 - (a * b).sum(1)  # noqa: E731
    while step < p["steps"]:
        lr, hr, gidx, flip, pos = batches(step)
        for g in opt_g.param_groups:
            g["lr"] = lr_at(step, p)
        lr, hr, gidx = lr.to(dev), hr.to(dev), gidx.to(dev)
        if p["w_feat"]:
            with torch.no_grad():
                Fr(hr)
                target = dict(feats)
        sr = G(lr)
        e = Fr(sr)
        e_hr = emb_t[gidx, flip.to(dev)]
        # positives: another photo of the same person when there is one (drawn by the batch)
        e_pos = torch.stack([emb_t[q[0], q[1]] if q else e_hr[k] for k, q in enumerate(pos)])
        # hardest negative of another identity among all real training photos
        sims = e.detach() @ bank_emb.T
        own = torch.tensor([id_code[identities[g]] for g in gidx.tolist()], device=dev)
        sims[bank_code[None, :] == own[:, None]] = -2.0
        e_neg = bank_emb[sims.argmax(1)]
        l_pix = F.l1_loss(sr, hr)
        l_feat = torch.zeros((), device=dev)
        if p["w_feat"]:
            l_feat = sum(((feats[k] - t) ** 2).mean() / (t**2).mean() for k, t in target.items()) / len(target)
        l_id = d(e, e_hr).mean()
        l_tri = F.relu(d(e, e_pos) - d(e, e_neg) + p["margin"]).mean()
        use_adv = step >= p["adv_warmup"]
        l_adv = F.softplus(-D(sr)).mean() if use_adv else torch.zeros((), device=dev)
        loss = (p["w_pixel"] * l_pix + p["w_ident"] * l_id + p["w_triplet"] * l_tri + p["w_adv"] * l_adv
                + p["w_feat"] * l_feat)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        l_d = torch.zeros(())
        if use_adv or step >= p["adv_warmup"] - 100:  # D starts a little before G is judged
            l_d = F.softplus(-D(hr)).mean() + F.softplus(D(sr.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            opt_d.step()
        step += 1
        for k, v in (("pixel", l_pix), ("ident", l_id), ("triplet", l_tri), ("adv", l_adv), ("d_loss", l_d), ("feat", l_feat)):
            v = float(v.detach())
            if not np.isfinite(v):
                raise SystemExit(f"step {step}: {k} loss is {v}")
            avg[k] = v if k not in avg else 0.95 * avg[k] + 0.05 * v
        row = None
        if step % 10 == 0 or step == p["steps"]:
            wall, cpu = clock()
            row = {"step": step, "seconds": round(wall, 1), "cpu_s": round(cpu, 1), "lr": f"{lr_at(step - 1, p):.4g}",
                   **{k: round(v, 5) for k, v in avg.items()}}
        if step % p["val_every"] == 0 or step == p["steps"]:
            G.eval()
            v = validate(G, Fr, root, files[val_idx], val_emb)
            G.train()
            wall, cpu = clock()
            row = {**(row or {"step": step, "seconds": round(wall, 1), "cpu_s": round(cpu, 1)}),
                   **{k: round(x, 4) for k, x in v.items()}}
            score = {"14": v["val_cos_14"], "14+14j": v["val_cos_14"] + v["val_cos_14j"],
                     "sum": v["val_cos_14"] + v["val_cos_28"] + v["val_cos_56"]}[p["select"]]
            if score > best and not args.smoke:
                best = score
                atomic_save({"generator": G.state_dict(), "arch": arch, "step": step, "val": v}, out / "generator.pt")
        if row:
            log.writerow(row)
            log_file.flush()  # the plot reads it, and a stopped run keeps its log
            print(json.dumps(row), flush=True)
            if "val_cos_14" in row:
                plot(log_path, out / "losses.png")
        done = run_done(step, p["steps"], stop, args.stop_at_step, args.max_minutes, t_start)
        if done or time.time() - last_ckpt > args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
        if done:
            break
    log_file.close()
    wall, cpu = clock()
    print(f"stopped at step {step}/{p['steps']} ({wall / 3600:.2f} h wall, {cpu / 3600:.2f} h CPU); "
          f"continue with: train.py --out {out} --resume", flush=True)
    if args.smoke:
        changed = any(not torch.equal(a, b.detach()) for a, b in zip(before, G.parameters()))
        if not changed:
            raise SystemExit("smoke: the generator did not change")
        print("smoke: ok")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "--plot":  # train.py --plot LOG.csv OUT.png
        plot(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
