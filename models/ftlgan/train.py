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
"""

import argparse
import csv
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ftlgan import REPO, Discriminator, Generator, degrade, downsample, load_recogniser, to_tensor, upscale

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


_BICUBIC: dict[int, float] = {}


@torch.no_grad()
def validate(G, Fr, root, files, emb, sizes=(14, 28, 56)):
    """Mean cosine between F(restored) and F(full resolution) on held-out identities, for G and
    for plain bicubic (computed once), at fixed sizes (no noise: the evaluation's crop degradation)."""
    out = {}
    for s in sizes:
        lr = torch.stack([to_tensor(upscale(downsample(Image.open(root / f).convert("RGB"), s))) for f in files])
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
    axes[0].legend()
    axes[0].set_title("training losses (moving average)")
    val = [r for r in rows if r.get("val_cos_14")]
    for s in (14, 28, 56):
        (line,) = axes[1].plot([int(r["step"]) for r in val], [float(r[f"val_cos_{s}"]) for r in val], label=f"G {s}px")
        axes[1].plot([int(r["step"]) for r in val], [float(r[f"val_cos_{s}_bicubic"]) for r in val], "--",
                     color=line.get_color(), label=f"bicubic {s}px")
    axes[1].set_xlabel("step")
    axes[1].set_title("held-out identities: cos(F(restored), F(original))")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--out", type=Path, default=None, help="run folder (default work/run)")
    ap.add_argument("--steps", type=int, default=3000)
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
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--val-faces", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="two steps on 8 faces, checks, no files kept")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.batch, args.val_every, args.val_faces, args.adv_warmup = 2, 4, 2, 4, 0
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)

    bank = np.load(args.work / "bank.npz")
    files, identities = bank["files"], bank["identities"]
    emb = np.stack([bank["emb"], bank["emb_flip"]], 1)  # [N, 2, 128]: original, mirrored
    train_idx, val_idx = split(identities, args.seed)
    if args.smoke:
        train_idx, val_idx = train_idx[:8], val_idx[:4]
    val_idx = val_idx[: args.val_faces]
    root = args.work / "aligned"
    out = args.out or (args.work / ("smoke" if args.smoke else "run"))
    out.mkdir(parents=True, exist_ok=True)

    # Same-identity photos (positives) and the negative bank: training identities only.
    by_id: dict[str, list[int]] = {}
    for i in train_idx:
        by_id.setdefault(identities[i], []).append(int(i))
    bank_emb = torch.from_numpy(emb[train_idx].reshape(-1, emb.shape[-1])).to(dev)  # both mirrors
    bank_ids = np.repeat(identities[train_idx], 2)
    id_code = {n: k for k, n in enumerate(sorted(set(identities.tolist())))}
    bank_code = torch.tensor([id_code[n] for n in bank_ids], device=dev)
    emb_t = torch.from_numpy(emb).to(dev)

    G, D = Generator(**ARCH, tail_std=args.tail_std).to(dev), Discriminator().to(dev)
    # channels_last: ~15% faster SFace forward+backward on CPU (oneDNN), same arithmetic
    Fr = load_recogniser().to(dev, memory_format=torch.channels_last)
    feats = capture_features(Fr)
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.5, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt_g, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    data = Faces(root, files[train_idx].tolist(), args.seed, sizes, args.random_size_frac)
    loader_rng = torch.Generator().manual_seed(args.seed)
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    params.update(train_faces=len(train_idx), train_identities=len(by_id), val_faces=len(val_idx),
                  generator_parameters=sum(p.numel() for p in G.parameters()), torch=torch.__version__)
    (out / "params.json").write_text(json.dumps(params, indent=2))
    print(json.dumps(params))

    log_path = out / "log.csv"
    fields = ["step", "seconds", "pixel", "ident", "triplet", "adv", "d_loss", "feat", "lr"] + [
        f"val_cos_{s}{b}" for s in (14, 28, 56) for b in ("", "_bicubic")]
    log_file, log = csv_log(log_path, fields)
    avg, best, step, t0 = {}, -1.0, 0, time.time()
    val_emb = emb[val_idx, 0]
    before = [p.detach().clone() for p in G.parameters()]
    for lr, hr, i, flip, _size in batches(data, args.batch, 0 if args.smoke else 1, loader_rng):
        if step >= args.steps:
            break
        lr, hr = lr.to(dev), hr.to(dev)
        gidx = torch.from_numpy(train_idx[i.numpy()]).to(dev)
        if args.w_feat:
            with torch.no_grad():
                Fr(hr)
                target = dict(feats)
        sr = G(lr)
        e = Fr(sr)
        e_hr = emb_t[gidx, flip.to(dev)]
        # positives: another photo of the same person when there is one
        pos = []
        for k, g in enumerate(gidx.tolist()):
            others = [j for j in by_id[identities[g]] if j != g]
            j = random.choice(others) if others else g
            pos.append(emb_t[j, random.randrange(2)] if others else e_hr[k])
        e_pos = torch.stack(pos)
        # hardest negative of another identity among all real training photos
        sims = e.detach() @ bank_emb.T
        own = torch.tensor([id_code[identities[g]] for g in gidx.tolist()], device=dev)
        sims[bank_code[None, :] == own[:, None]] = -2.0
        e_neg = bank_emb[sims.argmax(1)]
        d = lambda a, b: 1.0 - (a * b).sum(1)  # noqa: E731
        l_pix = F.l1_loss(sr, hr)
        l_feat = torch.zeros((), device=dev)
        if args.w_feat:
            l_feat = sum(((feats[k] - t) ** 2).mean() / (t**2).mean() for k, t in target.items()) / len(target)
        l_id = d(e, e_hr).mean()
        l_tri = F.relu(d(e, e_pos) - d(e, e_neg) + args.margin).mean()
        use_adv = step >= args.adv_warmup
        l_adv = F.softplus(-D(sr)).mean() if use_adv else torch.zeros((), device=dev)
        loss = args.w_pixel * l_pix + args.w_ident * l_id + args.w_triplet * l_tri + args.w_adv * l_adv + args.w_feat * l_feat
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        sched.step()
        l_d = torch.zeros(())
        if use_adv or step >= args.adv_warmup - 100:  # D starts a little before G is judged
            l_d = F.softplus(-D(hr)).mean() + F.softplus(D(sr.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            opt_d.step()
        step += 1
        for k, v in (("pixel", l_pix), ("ident", l_id), ("triplet", l_tri), ("adv", l_adv), ("d_loss", l_d), ("feat", l_feat)):
            v = float(v)
            if not np.isfinite(v):
                raise SystemExit(f"step {step}: {k} loss is {v}")
            avg[k] = v if k not in avg else 0.95 * avg[k] + 0.05 * v
        row = None
        if step % 10 == 0 or step == args.steps:
            row = {"step": step, "seconds": round(time.time() - t0, 1), "lr": sched.get_last_lr()[0],
                   **{k: round(v, 5) for k, v in avg.items()}}
        if step % args.val_every == 0 or step == args.steps:
            G.eval()
            v = validate(G, Fr, root, files[val_idx], val_emb)
            G.train()
            row = {**(row or {"step": step, "seconds": round(time.time() - t0, 1)}), **{k: round(x, 4) for k, x in v.items()}}
            score = v["val_cos_14"] + v["val_cos_28"] + v["val_cos_56"]
            if score > best and not args.smoke:
                best = score
                torch.save({"generator": G.state_dict(), "arch": ARCH, "step": step, "val": v}, out / "generator.pt")
            torch.save({"generator": G.state_dict(), "arch": ARCH, "discriminator": D.state_dict(), "step": step},
                       out / "last.pt")
        if row:
            log.writerow(row)
            log_file.flush()  # the plot reads it, and a stopped run keeps its log
            print(json.dumps(row), flush=True)
            if "val_cos_14" in row:
                plot(log_path, out / "losses.png")
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
