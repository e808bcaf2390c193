#!/usr/bin/env python3
"""Soak test: `farsight run --live` on a looping video for a long time, with an MQTT broker
that is stopped and started, sampling the daemon's RSS and its queues every minute.

    python3 scripts/soak/soak.py --video /tmp/farsight-bench/faces-640x480.mp4 --minutes 30 \
        --min-frames 100000 --out /tmp/farsight-soak

Needs target/release/farsight (cargo build --release), mosquitto (scripts/install-deps.sh) and a
video (scripts/bench/README.md makes the bench videos). Writes to --out: `samples.csv` (one row a
minute: elapsed, RSS, frames captured/recognised/dropped, the minute's capture-to-recognised and
capture-to-event latency p50/p99, each stage's backlog, events, broker state), `rss.png` (when matplotlib is importable, e.g. with models/ftlgan/.venv/bin/python) or
`rss.svg` (RSS only) otherwise, `summary.json`, and the daemon's log. Exit status 1 when RSS grew by more
than --max-growth-mib between the first and last quarter of the run or a queue's backlog exceeded
its bound. Not part of CI (it runs for as long as it is told).

What "no queue creep" means here: for every stage of the status file, backlog = in - out -
dropped - errors (frames or events inside a stage or waiting in front of it; the tracker, embed
and visitors stages count different things in and out, so they are left out); it must stay below
the stage's queue bound (frame_queue per camera, 2 per worker for recognition, sinks.queue per
sink) however long the run.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Broker:
    def __init__(self, port, workdir):
        self.port, self.workdir, self.proc = port, workdir, None
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nlog_dest stderr\n")

    def start(self):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "mosquitto.log", "a"))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def up(self):
        return self.proc is not None and self.proc.poll() is None


def window_quantiles(before, after, qs=(0.5, 0.99)):
    """Latency quantiles (ms) of the samples recorded between two snapshots of one stage, from
    the difference of their histograms (bucket i holds latencies up to 2^(i/4) ms)."""
    a = after.get("latency_counts") or []
    b = (before or {}).get("latency_counts") or [0] * len(a)
    diff = [x - y for x, y in zip(a, b)]
    total = sum(diff)
    if total <= 0:
        return [None for _ in qs]
    out = []
    for q in qs:
        rank, seen = max(1, -(-int(total * q * 1000) // 1000)), 0
        for i, c in enumerate(diff):
            seen += c
            if seen >= rank:
                out.append(round(2 ** (i / 4), 1))
                break
    return out


def quarter(rows, key):
    """Median of a column over some rows (None where a minute had no samples)."""
    vals = sorted(r[key] for r in rows if r.get(key) is not None)
    return vals[len(vals) // 2] if vals else None


def plot(rows, out):
    minutes = [r["elapsed_s"] / 60 for r in rows]
    rss = [r["rss_mib"] for r in rows]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (ax, lat) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
        for key, label in (("recognize_p50_ms", "capture to recognised p50"), ("recognize_p99_ms", "p99"),
                           ("events_p99_ms", "capture to event p99")):
            pts = [(m, r[key]) for m, r in zip(minutes, rows) if r.get(key) is not None]
            if pts:
                lat.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label)
        lat.set_ylabel("latency in the minute (ms)")
        lat.set_xlabel("minutes")
        lat.grid(True, alpha=0.3)
        lat.legend()
        ax.plot(minutes, rss, marker="o")
        ax.set_ylabel("RSS (MiB)")
        ax.set_ylim(0, max(rss) * 1.2)
        ax.grid(True, alpha=0.3)
        frames = rows[-1]["captured"]
        ax.set_title(f"farsight run --live soak: RSS each minute ({frames} frames captured)")
        fig.tight_layout()
        fig.savefig(out / "rss.png", dpi=100)
        return out / "rss.png"
    except ImportError:
        w, h, pad = 900, 450, 50
        top = max(rss) * 1.2 or 1
        span = max(minutes[-1], 1e-9)
        pts = " ".join(f"{pad + (w - 2 * pad) * m / span:.1f},{h - pad - (h - 2 * pad) * r / top:.1f}"
                       for m, r in zip(minutes, rss))
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">'
               f'<rect width="100%" height="100%" fill="white"/>'
               f'<polyline fill="none" stroke="blue" stroke-width="2" points="{pts}"/>'
               f'<text x="{pad}" y="30">RSS MiB each minute (max {max(rss):.0f}, y axis 0-{top:.0f})</text></svg>')
        (out / "rss.svg").write_text(svg)
        return out / "rss.svg"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--min-frames", type=int, default=100_000, help="keep going until this many frames were captured")
    ap.add_argument("--broker-every", type=float, default=3.0, help="minutes between broker stops/starts")
    ap.add_argument("--sample-every", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--max-growth-mib", type=float, default=20.0)
    ap.add_argument("--farsight", type=Path, default=REPO / "target" / "release" / "farsight")
    ap.add_argument("--out", type=Path, default=Path("/tmp/farsight-soak"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="farsight-soak-"))
    port = free_port()
    broker = Broker(port, work)
    broker.start()
    status = work / "status.json"
    cfg = work / "farsight.toml"
    cfg.write_text(
        f'version = 1\ngallery = "{work / "g.db"}"\n[pipeline]\nstatus_interval_s = 5.0\nstatus_file = "{status}"\n'
        f'[sinks]\nstdout = false\n[sinks.mqtt]\nport = {port}\noffline_queue = 100\n'
        f'[[camera]]\nname = "soak"\nurl = "{args.video}"\nlive = true\n')
    log = open(args.out / "farsight.log", "w")
    daemon = subprocess.Popen([str(args.farsight), "--config", str(cfg), "run"], stdout=subprocess.DEVNULL,
                              stderr=log, env={**os.environ, "RUST_LOG": "info"})
    started = time.monotonic()
    next_sample, next_broker = started + 5, started + args.broker_every * 60
    rows, broker_flips, previous = [], 0, {}
    bounds = {"recognize": 64, "events": 64}
    try:
        while True:
            time.sleep(1)
            if daemon.poll() is not None:
                raise SystemExit(f"farsight exited early ({daemon.returncode}); see {args.out / 'farsight.log'}")
            now = time.monotonic()
            if now >= next_broker:
                (broker.stop if broker.up else broker.start)()
                broker_flips += 1
                next_broker = now + args.broker_every * 60
            if now < next_sample:
                continue
            next_sample = now + args.sample_every
            try:
                st = json.loads(status.read_text())
            except (OSError, ValueError):
                continue
            stages = {s["name"]: s for s in st["stages"]}
            cam = stages.get("camera-soak", {})
            # Only stages whose in and out count the same things are queues: the tracker
            # ("events") takes frames in and sends events out, "embed" counts faces found in and
            # faces embedded out, "visitors" records only unknown events: their in - out is no
            # backlog (the tracker's input queue is the recognition stage's output).
            backlog = {
                n: s["in"] - s["out"] - s["dropped"] - s["errors"]
                for n, s in stages.items()
                if n not in ("events", "embed", "visitors")
            }
            rec = window_quantiles(previous.get("recognize"), stages.get("recognize", {}))
            ev = window_quantiles(previous.get("events"), stages.get("events", {}))
            previous = stages
            row = {
                "elapsed_s": round(now - started, 1),
                "rss_mib": round((rss_kib(daemon.pid) or 0) / 1024, 1),
                "captured": cam.get("in", 0),
                "recognized": stages.get("recognize", {}).get("out", 0),
                "dropped": cam.get("dropped", 0),
                "events": stages.get("events", {}).get("out", 0),
                "broker_up": broker.up,
                "recognize_p50_ms": rec[0],
                "recognize_p99_ms": rec[1],
                "events_p50_ms": ev[0],
                "events_p99_ms": ev[1],
                "max_backlog": max(backlog.values(), default=0),
                "backlog": backlog,
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "backlog"}), flush=True)
            if now - started >= args.minutes * 60 and row["captured"] >= args.min_frames:
                break
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        broker.stop()
    with open(args.out / "samples.csv", "w") as f:
        keys = [k for k in rows[0] if k != "backlog"]
        f.write(",".join(keys) + ",backlog\n")
        for r in rows:
            f.write(",".join(str(r[k]) for k in keys) + "," + json.dumps(r["backlog"]).replace(",", ";") + "\n")
    q = max(1, len(rows) // 4)
    first = sum(r["rss_mib"] for r in rows[:q]) / q
    last = sum(r["rss_mib"] for r in rows[-q:]) / q
    worst_backlog = max(r["max_backlog"] for r in rows)
    summary = {
        "minutes": round(rows[-1]["elapsed_s"] / 60, 1),
        "frames_captured": rows[-1]["captured"],
        "frames_recognized": rows[-1]["recognized"],
        "frames_dropped": rows[-1]["dropped"],
        "events": rows[-1]["events"],
        "broker_stops_and_starts": broker_flips,
        "rss_mib_first_quarter": round(first, 1),
        "rss_mib_last_quarter": round(last, 1),
        "rss_mib_max": max(r["rss_mib"] for r in rows),
        "worst_backlog": worst_backlog,
        "recognize_p99_ms_first_quarter": quarter(rows[:q], "recognize_p99_ms"),
        "recognize_p99_ms_last_quarter": quarter(rows[-q:], "recognize_p99_ms"),
        "events_p99_ms_first_quarter": quarter(rows[:q], "events_p99_ms"),
        "events_p99_ms_last_quarter": quarter(rows[-q:], "events_p99_ms"),
        "daemon_exit": daemon.returncode,
        "plot": str(plot(rows, args.out)),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    ok = last - first <= args.max_growth_mib and worst_backlog <= max(bounds.values()) and daemon.returncode == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
