#!/usr/bin/env python3
"""Scores a `farsight run` on a make_video.py video against its ground-truth sidecar.

    python3 scripts/bench/score.py --truth /tmp/farsight-bench/main-1920x1080.json \
        --events events.jsonl --detections detections.jsonl [--json score.json]

Inputs: the sidecar (make_video.py), farsight's events (stdout JSON lines of `farsight run`) and
its per-frame detections (`farsight run --detections FILE`). Standard library only.

Reports:
- detection recall by face size over every fully visible ground-truth face of every frame (a hit:
  a detection whose box centre lies inside the face's square, one-to-one, as reference_pipeline.py
  counts), and how many frames were searched at all;
- events per appearance: each event is assigned to the appearance whose face square holds its
  best shot's box centre in its best-shot frame, when the box is 0.5-2x the face's size (other
  faces in the pasted photos are not the subject's); reported as the distribution of final events (visits)
  and of decisions per appearance, and the appearances turned into a correct event (the final
  event names the person) among those whose face reaches --min-px;
- time from an appearance's first frame to its decision event (stream seconds: the decision's
  `last_seen_s`, the frame that made the track confident), p50/p99.
"""

import argparse
import collections
import json
import math


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--detections", required=True)
    ap.add_argument("--min-px", type=float, default=16.0, help="appearances whose face reaches this size must give an event")
    ap.add_argument("--json")
    args = ap.parse_args()
    truth = json.load(open(args.truth))
    fps = truth["fps"]
    people = {p["id"]: p["name"] for p in truth["people"]}
    apps = truth["appearances"]
    by_frame = {t["frame"]: t["faces"] for t in truth["truth"]}
    dets = {}
    for line in open(args.detections):
        d = json.loads(line)
        dets[d["seq"]] = d
    events = [json.loads(line) for line in open(args.events) if line.strip()]

    # Detection recall by size.
    buckets = [(0, 12), (12, 14), (14, 16), (16, 20), (20, 24), (24, 32), (32, 48), (48, 64), (64, 1e9)]
    hit = collections.Counter()
    tot = collections.Counter()
    false_pos = 0
    for fi, faces in by_frame.items():
        found = [f["box"] for f in dets.get(fi, {}).get("faces", [])]
        used = set()
        for face in faces:
            if face["visible"] < 0.999:
                continue
            b = next(k for k in buckets if k[0] <= face["size"] < k[1])
            tot[b] += 1
            x, y, w, h = face["box"]
            for i, d in enumerate(found):
                cx, cy = d[0] + d[2] / 2, d[1] + d[3] / 2
                if i not in used and x <= cx <= x + w and y <= cy <= y + h:
                    used.add(i)
                    hit[b] += 1
                    break
        false_pos += len(found) - len(used)
    recall = {f"{lo}-{hi if hi < 1e9 else ''}": {"recall": round(hit[k] / tot[k], 3), "hits": hit[k], "faces": tot[k]}
              for k in buckets if tot[k] for lo, hi in [k]}
    ge16 = [k for k in buckets if k[0] >= 16]
    recall_ge16 = sum(hit[k] for k in ge16) / max(1, sum(tot[k] for k in ge16))

    # Events to appearances.
    def appearance_of(e):
        bs = e["best_shot"]
        frame = bs["frame"]
        bx = bs["box"]
        cx, cy = bx["x"] + bx["w"] / 2, bx["y"] + bx["h"] / 2
        for face in by_frame.get(frame, []):
            x, y, w, h = face["box"]
            # Its centre in the face's square, and about its size: with --crop 250 the pasted LFW
            # photo can hold other (smaller, background) faces right beside the subject's.
            if x <= cx <= x + w and y <= cy <= y + h and 0.5 <= bx["w"] / max(1, face["size"]) <= 2.0:
                return face["appearance"]
        return None

    finals = collections.defaultdict(list)
    decisions = collections.defaultdict(list)
    stray = 0
    for e in events:
        a = appearance_of(e)
        if a is None:
            stray += 1
            continue
        (finals if e["phase"] == "final" else decisions if e["phase"] == "decision" else collections.defaultdict(list))[a].append(e)
    final_dist = collections.Counter(len(finals.get(i, [])) for i in range(len(apps)))
    decision_dist = collections.Counter(len(decisions.get(i, [])) for i in range(len(apps)))
    max_size = [max(a["size_from"], a["size_to"]) for a in apps]
    must = [i for i in range(len(apps)) if max_size[i] >= args.min_px]
    correct = [i for i in range(len(apps)) if any(e["identity"] == apps[i]["name"] for e in finals.get(i, []))]
    latency = []
    for i, ds in decisions.items():
        start = apps[i]["start_frame"] / fps
        latency.append(min(d["last_seen_s"] for d in ds) - start)
    searched = sum(1 for d in dets.values() if d["windows"] > 0)
    pixels = sum(d["pixels"] for d in dets.values()) / max(1, len(dets))
    out = {
        "frames": len(dets),
        "frames_searched": searched,
        "detector_pixels_per_frame": round(pixels),
        "recall_by_size": recall,
        "recall_16px_and_up": round(recall_ge16, 3),
        "false_positives": false_pos,
        "appearances": len(apps),
        "appearances_reaching_min_px": len(must),
        "correct_final_events": len(correct),
        "correct_among_min_px": len([i for i in must if i in correct]),
        "final_events_per_appearance": dict(sorted(final_dist.items())),
        "decisions_per_appearance": dict(sorted(decision_dist.items())),
        "events_not_on_an_appearance": stray,
        "time_to_decision_s": {"p50": pct(latency, 50), "p99": pct(latency, 99), "n": len(latency)},
    }
    print(json.dumps(out, indent=1))
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
