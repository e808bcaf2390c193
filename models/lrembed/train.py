"""Step 2: train the small-face embedder (student) into SFace's embedding space.

    python models/lrembed/train.py --out work/a112 --arch sface112 --steps 10000      # a new run
    python models/lrembed/train.py --out work/a112 --resume                           # continue it exactly
    python models/lrembed/train.py --plot work/a112                                   # redraw the PNG

Loss on a batch of training faces x (aligned 112, folds 1-5 / no-fold identities only), each
degraded to a camera-like small face LR(x) (common.degrade) and upscaled to the student's input:
  cos   1 - cos(student(LR(x)), SFace(x))           SFace(x) precomputed (bank.npz, mirror too)
  con   cross-entropy of student(LR(x)) against the whole bank of teacher embeddings of the
        training split (softmax over cos / tau; other photos of the same identity masked):
        keeps impostor scores low, not only genuine ones high
No identity labels are needed beyond the mask. The student starts as SFace (see common.Student).

Exact resume: everything a step consumes is a function of (seed, step): the face order is a
seeded permutation per epoch and each sample's degradation has its own seeded generator; the
checkpoint (work/<run>/last.pt, written atomically every --ckpt-minutes and on SIGTERM/SIGINT)
holds the model, its EMA, AdamW, the schedule position, the RNG states of python/numpy/torch,
cumulative wall/CPU time and the step. `--resume` reads the run's params.json, so the schedule
cannot change under it. The CSV log (log.csv) is cut back to the checkpoint's step on resume, so
it spans all runs without duplicates. models/lrembed/resume_check.py tests this.
SIGSTOP/SIGCONT (benchmarks) are harmless: time is measured, nothing waits on a clock.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common import (ARCHS, FTLGAN_WORK, HERE, Student, assert_training_identities, degrade, eval_downsample,
                    jitter, load_sface_teacher, split, to_tensor, upscale)
from runs import atomic_save, lr_at, rng_state, run_clock, run_done, set_rng_state, stop_on_signals  # noqa: E402  (models/ftlgan, on the path via common)

VAL_SIZES = (10, 14, 20)  # clean crop-mode probes; "14j": 14 px with fixed alignment jitter
FIELDS = ["step", "wall_s", "cpu_s", "faces", "lr", "loss", "cos", "con", "train_cos_14"] + [
    f"val_{m}_{s}" for s in ("10", "14", "20", "14j") for m in ("cos", "dprime", "dprime_fused")] + ["val_dprime_14_bicubic"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=False, help="run folder (relative paths: under models/lrembed/)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    ap.add_argument("--plot", type=Path, help="only redraw RUN/losses.png from RUN/log.csv")
    ap.add_argument("--bank", type=Path, default=FTLGAN_WORK / "bank.npz")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="sface112")
    ap.add_argument("--steps", type=int, default=10000, help="length of the LR schedule")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--decay-frac", type=float, default=0.2, help="cosine decay over the last part of --steps")
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--ema-warmup", type=int, default=1, help="1: EMA decay min(ema, (1+t)/(10+t)), so early "
                    "snapshots are not mostly the initial weights; 0: constant decay (runs made before this flag)")
    ap.add_argument("--w-con", type=float, default=0.2)
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--clean-frac", type=float, default=0.25, help="share of exact crop-mode degradations")
    ap.add_argument("--jitter-p", type=float, default=0.7)
    ap.add_argument("--shift-px", type=float, default=0.5, help="alignment jitter, sd in low-res pixels")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the student's forward")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-every", type=int, default=150)
    ap.add_argument("--snapshot-every", type=int, default=300, help="keep the EMA weights every N steps")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--limit-faces", type=int, default=0, help="train on the first N training faces (tests)")
    # How long this invocation runs; not part of the run's identity (not stored in params.json).
    ap.add_argument("--stop-at-step", type=int, default=0, help="checkpoint and exit at this step")
    ap.add_argument("--max-minutes", type=float, default=0, help="checkpoint and exit after this wall time")
    ap.add_argument("--pidfile", type=Path)
    return ap.parse_args(argv)


RUNTIME_ONLY = {"resume", "plot", "stop_at_step", "max_minutes", "pidfile", "out"}



class Batches:
    """Batch `step` as a pure function of (seed, step): no state to save but the step."""

    def __init__(self, faces: np.ndarray, emb: np.ndarray, emb_flip: np.ndarray, p: dict, size: int):
        self.faces, self.emb, self.emb_flip, self.p, self.size = faces, emb, emb_flip, p, size
        self.n = len(faces)
        self._perm: dict[int, np.ndarray] = {}

    def perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.p["seed"], epoch, 1]).permutation(self.n)}
        return self._perm[epoch]

    def __call__(self, step: int):
        xs, ts, idx, flips, sizes = [], [], [], [], []
        for j in range(self.p["batch"]):
            g = step * self.p["batch"] + j
            epoch, pos = divmod(g, self.n)
            i = int(self.perm(epoch)[pos])
            rng = np.random.default_rng([self.p["seed"], epoch, pos, 2])
            img = Image.fromarray(self.faces[i])
            flip = bool(rng.random() < 0.5)
            if flip:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            lr, size = degrade(img, rng, self.size, clean_frac=self.p["clean_frac"], jitter_p=self.p["jitter_p"],
                               shift_px=self.p["shift_px"])
            xs.append(to_tensor(lr))
            ts.append(self.emb_flip[i] if flip else self.emb[i])
            idx.append(i)
            flips.append(flip)
            sizes.append(size)
        return (torch.stack(xs), torch.from_numpy(np.stack(ts)), torch.tensor(idx), torch.tensor(flips),
                torch.tensor(sizes))


def d_prime(gen: np.ndarray, imp: np.ndarray) -> float:
    return float(abs(gen.mean() - imp.mean()) / np.sqrt((gen.var(ddof=1) + imp.var(ddof=1)) / 2))


class Validator:
    """Held-out *training-split* identities (never folds 6-10): probes degraded as farsight eval's
    crop mode at 10/14/20 px (and 14 px with a fixed alignment jitter), against the teacher's
    full-resolution embeddings. Reports mean cos(probe_i, ref_i), and d' over every probe x
    reference pair (genuine: same identity, other photo). 'fused' averages the student's
    embedding with SFace's on the bicubic face. The SFace baseline is computed once and cached."""

    def __init__(self, faces, emb, ids, size: int, cache: Path):
        self.size, self.emb, self.ids = size, torch.from_numpy(emb), ids
        same = ids[:, None] == ids[None, :]
        self.gen = same & ~np.eye(len(ids), dtype=bool)
        self.imp = ~same
        self.inputs, bic_in = {}, {}
        for s in ("10", "14", "20", "14j"):
            n = int(s.rstrip("j"))
            lows = []
            for k, f in enumerate(faces):
                img = Image.fromarray(f)
                if s.endswith("j"):
                    img = jitter(img, np.random.default_rng([99, k]), n, 0.5, 3.0, 0.04)
                lows.append(eval_downsample(img, n))
            self.inputs[s] = torch.stack([to_tensor(upscale(lo, size)) for lo in lows])
            bic_in[s] = torch.stack([to_tensor(upscale(lo, 112)) for lo in lows])
        if cache.exists():
            z = np.load(cache)
            self.bicubic = {s: torch.from_numpy(z[s]) for s in bic_in}
        else:
            sface = load_sface_teacher()
            with torch.no_grad():
                self.bicubic = {s: torch.cat([sface(x[k:k + 64]) for k in range(0, len(x), 64)]) for s, x in bic_in.items()}
            np.savez(cache, **{s: v.numpy() for s, v in self.bicubic.items()})

    def scores(self, e: torch.Tensor) -> dict:
        cos = float((e * self.emb).sum(1).mean())
        sim = (e @ self.emb.T).numpy()
        return cos, d_prime(sim[self.gen], sim[self.imp])

    @torch.no_grad()
    def __call__(self, model) -> dict:
        out = {}
        for s, x in self.inputs.items():
            e = F.normalize(torch.cat([model(x[k:k + 64]) for k in range(0, len(x), 64)]).float(), dim=1)
            out[f"val_cos_{s}"], out[f"val_dprime_{s}"] = self.scores(e)
            _, out[f"val_dprime_fused_{s}"] = self.scores(F.normalize(e + self.bicubic[s], dim=1))
        _, out["val_dprime_14_bicubic"] = self.scores(self.bicubic["14"])
        return out





def plot(run: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(run / "log.csv")))
    if not rows:
        return
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    hours = lambda rs: [float(r["cpu_s"]) / 3600 for r in rs]  # noqa: E731
    tr = [r for r in rows if r.get("loss")]
    ax[0].plot([int(r["step"]) for r in tr], [float(r["loss"]) for r in tr], label="loss")
    ax[0].plot([int(r["step"]) for r in tr], [1 - float(r["cos"]) for r in tr], label="1 - cos (train, degraded)")
    ax[0].set_xlabel("step")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[0].set_title("training (moving average)")
    val = [r for r in rows if r.get("val_dprime_14")]
    for s in ("10", "14", "20", "14j"):
        (line,) = ax[1].plot(hours(val), [float(r[f"val_dprime_{s}"]) for r in val], label=f"student {s}")
        ax[1].plot(hours(val), [float(r[f"val_dprime_fused_{s}"]) for r in val], ":", color=line.get_color(),
                   label=f"fused {s}")
    if val:
        ax[1].axhline(float(val[0]["val_dprime_14_bicubic"]), color="k", ls="--", label="SFace+bicubic 14")
    ax[1].set_xlabel("CPU hours (process time, cumulative)")
    ax[1].set_title("held-out training identities: d'")
    ax[1].legend(fontsize=7)
    for s in ("10", "14", "20", "14j"):
        ax[2].plot([int(r["step"]) for r in val], [float(r[f"val_cos_{s}"]) for r in val], label=s)
    ax[2].set_xlabel("step")
    ax[2].set_title("held-out: mean cos(student(LR), SFace(HR))")
    ax[2].legend()
    fig.suptitle(run.name)
    fig.tight_layout()
    fig.savefig(run / "losses.png", dpi=90)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.plot:
        plot(args.plot)
        return
    if args.out is None:
        raise SystemExit("--out RUN is required")
    run = args.out if args.out.is_absolute() else HERE / args.out
    run.mkdir(parents=True, exist_ok=True)
    ckpt_path = run / "last.pt"
    if args.resume:
        if not ckpt_path.exists():
            raise SystemExit(f"{ckpt_path} is missing: nothing to resume")
        p = json.loads((run / "params.json").read_text())
    else:
        if ckpt_path.exists():
            raise SystemExit(f"{ckpt_path} exists: use --resume, or another --out")
        p = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in RUNTIME_ONLY}
    if args.pidfile:
        args.pidfile.write_text(f"{os.getpid()}\n")
    torch.set_num_threads(p["threads"])
    torch.set_num_interop_threads(1)
    random.seed(p["seed"])
    np.random.seed(p["seed"])
    torch.manual_seed(p["seed"])

    # ---- data: training identities only, checked against the pairs file
    bank = np.load(p["bank"])
    files, identities = bank["files"], bank["identities"]
    assert_training_identities(identities)
    assert_training_identities(Path(str(f)).parent.name for f in files)
    root = Path(p["bank"]).parent / "aligned"
    train_idx, val_idx = split(identities, p["seed"])
    assert not set(identities[train_idx]) & set(identities[val_idx])
    if p["limit_faces"]:
        train_idx, val_idx = train_idx[: p["limit_faces"]], val_idx[: max(8, p["limit_faces"] // 4)]
    load = lambda idx: np.stack([np.asarray(Image.open(root / str(files[i])).convert("RGB")) for i in idx])  # noqa: E731
    t_load = time.time()
    faces = load(train_idx)
    size = ARCHS[p["arch"]]
    batches = Batches(faces, bank["emb"][train_idx], bank["emb_flip"][train_idx], p, size)
    val = Validator(load(val_idx), bank["emb"][val_idx], identities[val_idx], size, run / "val-bicubic.npz")
    # contrastive bank: teacher embeddings of the training split, both mirror images
    bank_t = torch.from_numpy(np.concatenate([bank["emb"][train_idx], bank["emb_flip"][train_idx]]))
    codes = {n: k for k, n in enumerate(sorted(set(identities.tolist())))}
    id_code = torch.tensor([codes[n] for n in identities[train_idx]])
    bank_code = torch.cat([id_code, id_code])
    n_train = len(train_idx)
    print(f"data: {n_train} training faces of {len(set(identities[train_idx]))} identities, {len(val_idx)} held-out "
          f"faces of {len(set(identities[val_idx]))} identities ({time.time() - t_load:.0f} s)", flush=True)

    # ---- model, EMA, optimiser
    model = Student(p["arch"]).to(memory_format=torch.channels_last)
    ema = Student(p["arch"]).to(memory_format=torch.channels_last).eval()
    ema.load_state_dict(model.state_dict())
    for q in ema.parameters():
        q.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=p["wd"], betas=(0.9, 0.999))
    step, wall0, cpu0, faces_seen = 0, 0.0, 0.0, 0
    avg: dict[str, float] = {}  # moving averages of the logged losses (checkpointed too)
    if args.resume:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        set_rng_state(ck["rng"])
        step, wall0, cpu0, faces_seen = ck["step"], ck["wall_s"], ck["cpu_s"], ck["faces"]
        avg.update(ck.get("avg", {}))
        print(f"resumed {run.name} at step {step} ({wall0 / 3600:.2f} h wall, {cpu0 / 3600:.2f} h CPU)", flush=True)
    else:
        params = dict(p, train_faces=n_train, val_faces=len(val_idx), parameters=sum(q.numel() for q in model.parameters()),
                      torch=torch.__version__, started=time.strftime("%Y-%m-%d %H:%M:%S"))
        (run / "params.json").write_text(json.dumps(params, indent=2))
        print(json.dumps(params), flush=True)

    # ---- log: cut back to the checkpoint's step, then append
    log_path = run / "log.csv"
    rows = list(csv.DictReader(open(log_path))) if log_path.exists() and args.resume else []
    rows = [r for r in rows if int(r["step"]) <= step]
    with open(log_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    log_file = open(log_path, "a", newline="")
    log = csv.DictWriter(log_file, fieldnames=FIELDS)

    stop = stop_on_signals()

    clock = run_clock(wall0, cpu0)
    t_start = time.time()  # --max-minutes counts this process's time

    def checkpoint():
        wall, cpu = clock()
        atomic_save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                     "rng": rng_state(), "step": step, "wall_s": wall, "cpu_s": cpu, "faces": faces_seen,
                     "avg": avg, "arch": p["arch"], "params": p}, ckpt_path)

    def validate():
        v = val(ema)
        wall, cpu = clock()
        row = {"step": step, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "faces": faces_seen,
               **{k: round(x, 4) for k, x in v.items()}}
        log.writerow(row)
        log_file.flush()
        print(json.dumps(row), flush=True)
        best_path = run / "best.pt"
        best = torch.load(best_path, map_location="cpu", weights_only=False)["val"] if best_path.exists() else None
        if best is None or v["val_dprime_14"] > best["val_dprime_14"]:
            atomic_save({"ema": ema.state_dict(), "arch": p["arch"], "step": step, "val": v, "cpu_s": cpu}, best_path)
        plot(run)

    if step == 0:
        validate()
    last_ckpt = time.time()
    while step < p["steps"]:
        x, t, idx, flip, sizes = batches(step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, p)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=p["bf16"]):
            raw = model(x)
        e = F.normalize(raw.float(), dim=1)
        cos = (e * t).sum(1)
        l_cos = (1 - cos).mean()
        l_con = torch.zeros(())
        if p["w_con"]:
            logits = e @ bank_t.T / p["tau"]
            own = idx + flip.long() * n_train
            mask = bank_code[None, :] == id_code[idx][:, None]
            mask[torch.arange(len(idx)), own] = False
            logits = logits.masked_fill(mask, float("-inf"))
            l_con = F.cross_entropy(logits, own)
        loss = l_cos + p["w_con"] * l_con
        if not torch.isfinite(loss):
            raise SystemExit(f"step {step}: loss is {float(loss)}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_decay = min(p["ema"], (1 + step) / (10 + step)) if p.get("ema_warmup", 0) else p["ema"]
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(ema_decay).add_(pm.detach(), alpha=1 - ema_decay)
        step += 1
        faces_seen += len(idx)
        c14 = cos.detach()[(sizes >= 13) & (sizes <= 15)]
        for k, v in (("loss", float(loss.detach())), ("cos", float(cos.detach().mean())), ("con", float(l_con.detach())),
                     ("train_cos_14", float(c14.mean()) if len(c14) else None)):
            if v is not None:
                avg[k] = v if k not in avg else 0.98 * avg[k] + 0.02 * v
        if step % 10 == 0:
            wall, cpu = clock()
            row = {"step": step, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "faces": faces_seen,
                   "lr": f"{lr_at(step - 1, p):.3g}", **{k: round(v, 5) for k, v in avg.items()}}
            log.writerow(row)
            log_file.flush()
            if step % 50 == 0:
                print(json.dumps(row), flush=True)
        if step % p["val_every"] == 0 or step == p["steps"]:
            validate()
        if p["snapshot_every"] and step % p["snapshot_every"] == 0:
            atomic_save({"ema": ema.state_dict(), "arch": p["arch"], "step": step, "cpu_s": clock()[1]},
                        run / f"ema-{step:06d}.pt")
        done = run_done(step, p["steps"], stop, args.stop_at_step, args.max_minutes, t_start)
        if done or time.time() - last_ckpt > p["ckpt_minutes"] * 60:
            checkpoint()
            last_ckpt = time.time()
        if done:
            break
    log_file.close()
    wall, cpu = clock()
    print(f"stopped at step {step}/{p['steps']} ({faces_seen} faces, {wall / 3600:.2f} h wall, {cpu / 3600:.2f} h CPU); "
          f"resume: train.py --out {args.out} --resume", flush=True)


if __name__ == "__main__":
    sys.exit(main())
