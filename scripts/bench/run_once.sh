#!/usr/bin/env bash
# One `farsight run` on a bench video with a fresh copy of that video's gallery, output discarded:
# the command farm-bench times for the memory and CPU tables of scripts/bench/README.md.
#
#   scripts/bench/run_once.sh BIN VIDEO            # e.g. target/release/farsight faces-640x480
#
# VIDEOS_DIR (default /tmp/farsight-bench) holds VIDEO.mp4; GALLERIES (default /tmp/sc-mag160)
# holds VIDEO.db, the gallery `scene.sh GALLERIES` enrolled; CONF is the config (default: the
# one scene.sh wrote there). A/B: farm-bench -n 5 --vs 'run_once.sh A VIDEO' -- run_once.sh B VIDEO
set -euo pipefail
bin=$1 video=$2
galleries=${GALLERIES:-/tmp/sc-mag160}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cp "$galleries/$video.db" "$d/g.db"
cd "$(dirname "$0")/../.."
"$bin" -q --config "${CONF:-$galleries/farsight.toml}" run --gallery "$d/g.db" \
  --source "${VIDEOS_DIR:-/tmp/farsight-bench}/$video.mp4" > /dev/null 2>&1
