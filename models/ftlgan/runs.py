"""What every training run here shares for an exact resume (ftlgan/train.py, lrembed/train.py):
a learning-rate schedule that is a pure function of the step, the RNG states to checkpoint, and
atomic checkpoint writes."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def lr_at(step: int, p: dict) -> float:
    """Warm-up, flat, then cosine to zero over the last `decay_frac` of `steps`: a resumed run
    follows the same schedule, and a checkpoint taken on the flat part can still be decayed by a
    short branch run."""
    if step < p["warmup"]:
        return p["lr"] * (step + 1) / p["warmup"]
    start = int(p["steps"] * (1 - p["decay_frac"]))
    if step < start:
        return p["lr"]
    t = min(1.0, (step - start) / max(1, p["steps"] - start))
    return p["lr"] * 0.5 * (1 + float(np.cos(np.pi * t)))


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def atomic_save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename: a run killed mid-write keeps the last
    good checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def stop_on_signals() -> dict:
    """SIGTERM/SIGINT set `stop["now"]` instead of killing the run: the training loop checkpoints
    at the end of the step and exits (as systemd or a person stopping it would want)."""
    import signal

    stop = {"now": False}

    def on_signal(signum, _frame):
        stop["now"] = True
        print(f"signal {signum}: checkpointing at the end of this step", flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def run_clock(wall0: float, cpu0: float):
    """Cumulative (wall, CPU) seconds of a run across its resumptions."""
    import time

    t_start, c_start = time.time(), time.process_time()
    return lambda: (wall0 + time.time() - t_start, cpu0 + time.process_time() - c_start)


def run_done(step: int, steps: int, stop: dict, stop_at_step, max_minutes, t_start: float) -> bool:
    """Whether the training loop ends after `step`: the schedule's last step, a signal
    (`stop_on_signals`), `--stop-at-step`, or `--max-minutes` of wall time since `t_start`."""
    import time

    return step == steps or stop["now"] or step == stop_at_step or bool(
        max_minutes and time.time() - t_start > max_minutes * 60)
