#!/usr/bin/env bash
# farsight's scene-driven pipeline on the bench videos: events, detections and counters of one
# run per video, scored against the ground truth (score.py). Usage:
#
#   scripts/bench/scene.sh OUT_DIR [extra farsight.toml lines...]
#
# Needs target/release/farsight, the bench videos in /tmp/farsight-bench (scripts/bench/README.md
# makes them) and ../shared/datasets/lfw. Enrolls each video's people into a fresh gallery (their
# last LFW photo) so events can be checked for the right name. Extra arguments are appended to the
# run's config, e.g. '[scene]' 'scan_motion_every = 1' for an ablation. VIDEOS='main-1920x1080' picks
# the videos (default: all three).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: scene.sh OUT_DIR [config lines...]}
shift
mkdir -p "$out"
bench=/tmp/farsight-bench
bin=target/release/farsight
printf 'version = 1\n%s\n' "$(printf '%s\n' "$@")" > "$out/farsight.toml"
for video in ${VIDEOS:-faces-640x480 main-1920x1080 static-640x480}; do
  [ -f "$bench/$video.mp4" ] || { echo "missing $bench/$video.mp4 (see scripts/bench/README.md)" >&2; exit 1; }
  g="$out/$video.db"
  rm -f "$g" "$g-wal" "$g-shm"
  for name in $(python3 -c "import json,sys; print(' '.join(p['name'] for p in json.load(open(sys.argv[1]))['people']))" "$bench/$video.json"); do
    photo=$(ls "../shared/datasets/lfw/$name/" | tail -1)
    "$bin" -q enroll --largest --gallery "$g" --name "$name" "../shared/datasets/lfw/$name/$photo"
  done
  "$bin" -q --config "$out/farsight.toml" run --gallery "$g" --source "$bench/$video.mp4" \
    --summary "$out/$video.summary.json" --detections "$out/$video.detections.jsonl" > "$out/$video.events.jsonl"
  python3 scripts/bench/score.py --truth "$bench/$video.json" --events "$out/$video.events.jsonl" \
    --detections "$out/$video.detections.jsonl" --json "$out/$video.score.json" > /dev/null
  python3 - "$out/$video.summary.json" "$out/$video.score.json" <<'PY'
import json, sys
s, c = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"{sys.argv[1].split('/')[-1][:-13]:16} fps {s['fps']:6.2f}  cpu ms/frame {s['cpu_ms_per_frame']:7.2f}  "
      f"peak RSS {s['peak_rss_kib'] // 1024} MiB  detector px/frame {c['detector_pixels_per_frame']}  "
      f"recall>=16px {c['recall_16px_and_up']}  correct {c['correct_final_events']}/{c['appearances']}  "
      f"finals/app {c['final_events_per_appearance']}  decisions/app {c['decisions_per_appearance']}  "
      f"decision p50/p99 {c['time_to_decision_s']['p50']}/{c['time_to_decision_s']['p99']} s")
PY
done
