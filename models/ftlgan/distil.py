"""Step 2b: distil the trained generator (the teacher) into a smaller one (the student) that fits
the edge box's per-face budget.

    python models/ftlgan/distil.py --steps 4000        # -> work/distil/{generator.pt,log.csv,losses.png}
    python models/ftlgan/distil.py --smoke              # two steps on 8 faces (the smoke test)

The student is the same architecture with fewer channels and blocks (`--ch`, `--blocks`). It
learns to reproduce the teacher's output, L1(student(x), teacher(x)), on the same degraded
training faces the teacher saw (same sizes, blur, noise, JPEG). The recogniser is not in the
loop, so a step is ~10x cheaper than a training step and the student sees many more faces; it is
only used to validate: the held-out cosine F(restored)·F(original) of the student, logged next
to the teacher's and bicubic's, picks the checkpoint. The checkpoint records its architecture,
which export.py reads.
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ftlgan import Generator, load_recogniser
from train import WORK, Faces, batches, csv_log, plot, split, validate


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default work/run2/generator.pt)")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default work/distil)")
    ap.add_argument("--ch", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--head-k", type=int, default=1, help="kernel of the first conv (1: 4x4 cells mixed only later)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sizes", default="14,14,28,56", help="as train.py (the teacher's sizes)")
    ap.add_argument("--random-size-frac", type=float, default=0.1)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--val-faces", type=int, default=128)
    ap.add_argument("--smoke", action="store_true", help="two steps on 8 faces, checks, no files kept")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.batch, args.val_every, args.val_faces = 2, 4, 2, 4
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    bank = np.load(args.work / "bank.npz")
    files, identities = bank["files"], bank["identities"]
    train_idx, val_idx = split(identities, args.seed)  # the teacher's split: same held-out identities
    if args.smoke:
        train_idx, val_idx = train_idx[:8], val_idx[:4]
    val_idx = val_idx[: args.val_faces]
    root = args.work / "aligned"
    out = args.out or (args.work / ("smoke-distil" if args.smoke else "distil"))
    out.mkdir(parents=True, exist_ok=True)

    teacher_path = args.teacher or (args.work / "run2" / "generator.pt")
    if not teacher_path.exists():
        raise SystemExit(f"{teacher_path} is missing: train the teacher first (train.py --out work/run2 ...) "
                         "or name one with --teacher")
    tckpt = torch.load(teacher_path, map_location="cpu", weights_only=False)  # ours; last.pt holds RNG states
    T = Generator(**tckpt.get("arch", {})).eval()
    T.load_state_dict(tckpt["generator"])
    for p in T.parameters():
        p.requires_grad_(False)
    arch = {"ch": args.ch, "blocks": args.blocks, "head_k": args.head_k}
    S = Generator(**arch, tail_std=1e-3)
    Fr = load_recogniser()
    opt = torch.optim.Adam(S.parameters(), lr=args.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    data = Faces(root, files[train_idx].tolist(), args.seed, sizes, args.random_size_frac)
    loader_rng = torch.Generator().manual_seed(args.seed)
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    params.update(teacher=str(teacher_path), teacher_step=tckpt.get("step"), train_faces=len(train_idx),
                  val_faces=len(val_idx), student_parameters=sum(p.numel() for p in S.parameters()),
                  teacher_parameters=sum(p.numel() for p in T.parameters()), torch=torch.__version__)
    (out / "params.json").write_text(json.dumps(params, indent=2))
    print(json.dumps(params))

    val_emb = bank["emb"][val_idx]
    teacher_val = validate(T, Fr, root, files[val_idx], val_emb)
    print(json.dumps({"teacher": teacher_val}), flush=True)
    log_path = out / "log.csv"
    fields = ["step", "seconds", "pixel", "lr"] + [f"val_cos_{s}{b}" for s in (14, 28, 56, "14j") for b in ("", "_bicubic", "_teacher")]
    log_file, log = csv_log(log_path, fields)
    avg, best, step, t0 = None, -1.0, 0, time.time()
    before = [p.detach().clone() for p in S.parameters()]
    for lr, _hr, _i, _flip, _size in batches(data, args.batch, 0 if args.smoke else 1, loader_rng):
        if step >= args.steps:
            break
        with torch.no_grad():
            want = T(lr)
        loss = F.l1_loss(S(lr), want)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        v = loss.item()
        if not np.isfinite(v):
            raise SystemExit(f"step {step}: distillation loss is {v}")
        avg = v if avg is None else 0.95 * avg + 0.05 * v
        row = None
        if step % 10 == 0 or step == args.steps:
            row = {"step": step, "seconds": round(time.time() - t0, 1), "pixel": round(avg, 6),
                   "lr": sched.get_last_lr()[0]}
        if step % args.val_every == 0 or step == args.steps:
            S.eval()
            val = validate(S, Fr, root, files[val_idx], val_emb)
            S.train()
            val.update({f"val_cos_{s}_teacher": teacher_val[f"val_cos_{s}"] for s in (14, 28, 56, "14j")})
            row = {**(row or {"step": step, "seconds": round(time.time() - t0, 1)}),
                   **{k: round(x, 4) for k, x in val.items()}}
            score = val["val_cos_14"] + val["val_cos_28"] + val["val_cos_56"]
            if score > best and not args.smoke:
                best = score
                torch.save({"generator": S.state_dict(), "arch": arch, "step": step, "val": val,
                            "teacher": str(teacher_path)}, out / "generator.pt")
            torch.save({"generator": S.state_dict(), "arch": arch, "step": step}, out / "last.pt")
        if row:
            log.writerow(row)
            log_file.flush()
            print(json.dumps(row), flush=True)
            if "val_cos_14" in row:
                plot(log_path, out / "losses.png")
    if args.smoke and all(torch.equal(a, b.detach()) for a, b in zip(before, S.parameters())):
        raise SystemExit("smoke: the student did not change")
    if args.smoke:
        print("smoke: ok")


if __name__ == "__main__":
    main()
