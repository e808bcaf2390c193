"""Step 5: evaluate on LFW folds 6-10 with `farsight eval` (the Rust pipeline, tract, the committed
models), then print the table for models/MODELS.md with the FTLGAN paper's figures side by side.

    python models/ftlgan/evaluate.py                 # both modes, ~30 min on 2 cores
    python models/ftlgan/evaluate.py --mode crop     # one mode
    python models/ftlgan/evaluate.py --table-only    # re-print the table from the saved JSON
    python models/ftlgan/evaluate.py --restore ftlgan-fp32,ftlgan --baseline docs/eval/lfw-folds6-10.json
                                       # only the learned restorers; none/bicubic rows from the baseline

Results: models/ftlgan/results/eval-{crop,frame}.json (+ ROC PNG), committed with the model.
"""

import argparse
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "models" / "ftlgan" / "results"
# Pulgar & Mery, FTLGAN, Table (d', AUC) at 14/28/56 px.
PAPER = {14: (1.099, 0.78), 28: (2.112, 0.92), 56: (3.049, 0.98)}
RESTORERS = ["none", "bicubic", "ftlgan-fp32", "ftlgan"]


def run(mode: str, farsight: Path, datasets: Path, threads: int | None, restorers: list[str]):
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = [str(farsight), "eval", "--dataset", str(datasets / "lfw"), "--pairs", str(datasets / "lfw-pairs.txt"),
           "--folds", "6-10", "--sizes", "7,14,28,56,112", "--restore", ",".join(restorers), "--mode", mode,
           "--json", str(RESULTS / f"eval-{mode}.json"), "--roc", str(RESULTS / f"roc-{mode}.png")]
    if threads:
        cmd += ["--threads", str(threads)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def table(mode: str, baseline: Path | None) -> str:
    path = RESULTS / f"eval-{mode}.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run evaluate.py without --table-only first")
    report = json.loads(path.read_text())
    rows = {(r["size"], r["restore"]): r for r in report["rows"]}
    if baseline:  # rows of restorers this run did not evaluate (same command, same data)
        for r in json.loads(baseline.read_text())["rows"]:
            if r["mode"] == mode:
                rows.setdefault((r["size"], r["restore"]), r)
    f = lambda v, n=3: "-" if v is None else f"{v:.{n}f}"  # noqa: E731
    lines = [f"**{mode} mode** (LFW folds 6-10, {max(r['pairs'] for r in report['rows'])} pairs)", "",
             "| px | restorer | d' | AUC | accuracy | TAR@FAR=1e-3 | d' vs bicubic | int8/fp32 d' | paper d' / AUC |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for (size, restore), r in sorted(rows.items(), key=lambda kv: (kv[0][0], RESTORERS.index(kv[0][1]))):
        bic = rows.get((size, "bicubic"), {}).get("d_prime")
        fp32 = rows.get((size, "ftlgan-fp32"), {}).get("d_prime")
        vs = f"{r['d_prime'] / bic:.2f}x" if bic and r["d_prime"] and restore.startswith("ftlgan") else ""
        q = f"{r['d_prime'] / fp32:.3f}" if fp32 and r["d_prime"] and restore == "ftlgan" else ""
        paper = f"{PAPER[size][0]} / {PAPER[size][1]}" if size in PAPER and restore == "ftlgan" else ""
        lines.append(f"| {size} | {restore} | {f(r['d_prime'], 2)} | {f(r['auc'])} | {f(r['accuracy'])} | "
                     f"{f(r['tar_at_far_1e-3'])} | {vs} | {q} | {paper} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["crop", "frame", "both"], default="both")
    ap.add_argument("--farsight", type=Path, default=REPO / "target" / "release" / "farsight")
    ap.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--restore", default=",".join(RESTORERS), help="restorers to run (default: all four)")
    ap.add_argument("--baseline", type=Path, help="an earlier eval JSON whose rows fill in restorers not run")
    args = ap.parse_args()
    modes = ["crop", "frame"] if args.mode == "both" else [args.mode]
    for m in modes:
        if not args.table_only:
            run(m, args.farsight, args.datasets, args.threads, args.restore.split(","))
        print(table(m, args.baseline) + "\n")


if __name__ == "__main__":
    main()
