#!/usr/bin/env python3
"""Time from `farsight run` starting to its systemd READY=1, on the bundled samples folder.

    python3 scripts/bench/ready_time.py [--runs 5] [--farsight target/release/farsight]

Binds a Unix datagram socket, starts `farsight run --source samples/` with NOTIFY_SOCKET pointing
at it (exactly what systemd does for Type=notify), and reports the wall time from the fork to the
READY=1 datagram (models loaded, gallery open, first frame of every camera in), then stops the
daemon with SIGTERM. Prints each run and the median.
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def one(farsight: Path, work: Path) -> float:
    path = work / "notify.sock"
    if path.exists():
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(120)
    env = {**os.environ, "NOTIFY_SOCKET": str(path)}
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(farsight), "-q", "run", "--gallery", str(work / "g.db"), "--source", str(REPO / "samples")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        while True:
            msg = sock.recv(4096).decode(errors="replace")
            if "READY=1" in msg.split("\n"):
                return time.monotonic() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        sock.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--farsight", type=Path, default=REPO / "target" / "release" / "farsight")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="farsight-ready-") as d:
        times = [one(args.farsight, Path(d)) for _ in range(args.runs)]
    for t in times:
        print(f"start to READY=1: {t:.2f} s")
    print(f"median of {len(times)}: {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
