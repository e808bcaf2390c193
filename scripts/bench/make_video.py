#!/usr/bin/env python3
"""Writes a synthetic multi-face test video (H.264 MP4) plus a JSON ground-truth sidecar.

The video is the common input of farsight's streaming daemon and of the reference Python pipeline
(`reference_pipeline.py`), so both are timed on exactly the same frames.

Scene: N people from LFW (`../shared/datasets/lfw/<Name>/<Name>_NNNN.jpg`). Each face is the
central 120x120 region of an LFW photo (where LFW's face sits: roughly brow to chin, cheek to
cheek), downscaled with an antialiasing filter to a side between --face-min and --face-max px and
pasted on a static background. --crop C > 120 pastes the central C x C instead (more head, hair
and shoulders around the same face, scaled by the same factor, so the face keeps its size); the
ground-truth box is always the face's 120-equivalent square (plain grey or smooth noise). Every person has a horizontal lane of
the frame (so faces never occlude each other) and a series of appearances: the face enters (slides
in from a side edge or pops up inside the frame), drifts slowly (--speed px/s) while its size
changes linearly within the range, and leaves; a gap follows before the next appearance. Each
appearance uses the person's next photo, so re-appearances are not pixel-identical.

Identities are drawn, seeded, from the project's *training* split only (LFW View 2 folds 1-5 plus
identities in no fold, see shared/datasets/README.md), so no evaluation identity (folds 6-10) ever
ends up in a bench artefact. Same arguments + same seed = same frames and sidecar.

Encoding: PNG frames in a temp dir, then
  gst-launch-1.0 multifilesrc location=DIR/f%05d.png index=0 caps="image/png,framerate=FPS/1"
    ! pngdec ! videoconvert ! video/x-raw,format=I420 ! x264enc ! h264parse ! mp4mux
    ! filesink location=OUT
(4:2:0 as cameras send it: given RGB, x264enc picked 4:4:4, High 4:4:4 profile, which OpenH264
cannot decode; x264enc with its defaults except threads=1, because multi-threaded x264 here gave different
pixels on every run, and key-int-max = 2 s, so a decoder can seek). Same arguments + same seed
then give the same decoded frames (the MP4 header's timestamps still differ).

Sidecar (OUT with .json): the arguments, the people, the appearances, and per frame the faces that
are visible: person, appearance, the pasted square's box [x, y, w, h] clipped to the frame, its
side in px ("size") and the visible fraction of it.

Uses only Pillow, numpy and the standard library (plus gst-launch-1.0 for the encoding).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_LFW = os.path.join(REPO, "..", "shared", "datasets", "lfw")
DEFAULT_PAIRS = os.path.join(REPO, "..", "shared", "datasets", "lfw-pairs.txt")
FACE = 120  # central region of a 250x250 LFW image that holds the face


def eval_identities(pairs_path, first_eval_fold=6):
    """Names that occur in LFW View 2 folds >= first_eval_fold (1-based): never used here."""
    with open(pairs_path) as f:
        folds, per = map(int, f.readline().split())
        lines = [ln.split() for ln in f if ln.strip()]
    if len(lines) != folds * 2 * per:
        sys.exit(f"{pairs_path}: expected {folds * 2 * per} pair lines, found {len(lines)}")
    names = set()
    for fold in range(first_eval_fold - 1, folds):
        for parts in lines[fold * 2 * per:(fold + 1) * 2 * per]:
            names.add(parts[0])
            if len(parts) == 4:
                names.add(parts[2])
    return names


def pick_people(lfw, pairs, n, rng):
    banned = eval_identities(pairs)
    candidates = []
    for name in sorted(os.listdir(lfw)):
        if name in banned or not os.path.isdir(os.path.join(lfw, name)):
            continue
        imgs = sorted(f for f in os.listdir(os.path.join(lfw, name)) if f.endswith(".jpg"))
        if imgs:
            candidates.append((name, imgs))
    # Prefer people with several photos (re-appearances then use different photos).
    multi = [c for c in candidates if len(c[1]) >= 3]
    pool = multi if len(multi) >= n else candidates
    if len(pool) < n:
        sys.exit(f"only {len(pool)} usable identities in {lfw}, asked for {n}")
    return rng.sample(pool, n)


def face_crop(path, crop):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    x0, y0 = (w - crop) // 2, (h - crop) // 2
    return img.crop((x0, y0, x0 + crop, y0 + crop))


def background(kind, w, h, rng_np):
    if kind == "plain":
        return Image.new("RGB", (w, h), (118, 122, 126))
    # Smooth colour noise: a coarse random grid upsampled bicubically, plus a little fine grain.
    coarse = rng_np.integers(40, 216, size=(max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
    grain = rng_np.integers(-6, 7, size=(h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def plan_appearances(args, people, rng):
    """Per person: appearances inside its lane, entering and leaving, until the video ends."""
    frames = round(args.duration * args.fps)
    if not people:
        return [], frames
    lane_h = args.height / len(people)
    apps = []
    for pid, (name, imgs) in enumerate(people):
        t = rng.uniform(0.0, args.max_start)  # first entrance, seconds
        k = 0
        while t < args.duration - 1.0:
            length = rng.uniform(args.min_appearance, args.max_appearance)
            s0 = rng.uniform(args.face_min, args.face_max)
            s1 = min(args.face_max, max(args.face_min, s0 + rng.uniform(-0.5, 0.5) * (args.face_max - args.face_min)))
            smax = max(s0, s1) * args.crop / FACE  # pasted square
            # Vertical: centre of the lane, a little drift; never leaves the lane.
            cy_lo = pid * lane_h + smax / 2
            cy_hi = (pid + 1) * lane_h - smax / 2
            if cy_hi < cy_lo:  # lane narrower than the face: centre it (faces may then touch)
                cy_lo = cy_hi = (pid + 0.5) * lane_h
            y0 = rng.uniform(cy_lo, cy_hi)
            y1 = min(cy_hi, max(cy_lo, y0 + rng.uniform(-0.1, 0.1) * lane_h))
            direction = rng.choice([-1, 1])
            dist = args.speed * length * rng.uniform(0.6, 1.0)
            if rng.random() < 0.5:
                # Slides in from the side edge it moves away from (starts fully outside).
                p0 = s0 * args.crop / FACE
                x0 = -p0 / 2 if direction > 0 else args.width + p0 / 2
            else:
                # Pops up inside the frame.
                x0 = rng.uniform(s0, args.width - s0)  # face centre inside the frame
            x1 = x0 + direction * dist
            f0 = round(t * args.fps)
            planned = round((t + length) * args.fps)  # motion is planned over the full length,
            f1 = min(frames, planned)                 # even when the video ends first
            if f1 - f0 >= 2:
                apps.append({
                    "person": pid, "name": name, "index": k, "image": imgs[k % len(imgs)],
                    "start_frame": f0, "end_frame": f1, "planned_end_frame": planned,  # ends exclusive
                    "size_from": round(s0, 2), "size_to": round(s1, 2),
                    "centre_from": [round(x0, 2), round(y0, 2)], "centre_to": [round(x1, 2), round(y1, 2)],
                })
                k += 1
            t += length + rng.uniform(args.min_gap, args.max_gap)
    return apps, frames


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output .mp4 (the sidecar goes next to it as .json)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds")
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--people", type=int, default=4)
    ap.add_argument("--face-min", type=float, default=24.0, help="smallest face side, px")
    ap.add_argument("--face-max", type=float, default=64.0, help="largest face side, px")
    ap.add_argument("--speed", type=float, default=30.0, help="drift speed, px/s")
    ap.add_argument("--min-appearance", type=float, default=4.0, help="s")
    ap.add_argument("--max-appearance", type=float, default=9.0, help="s")
    ap.add_argument("--min-gap", type=float, default=1.0, help="s between a person's appearances")
    ap.add_argument("--max-gap", type=float, default=3.0, help="s")
    ap.add_argument("--max-start", type=float, default=3.0, help="latest first entrance, s")
    ap.add_argument("--background", choices=["noise", "plain"], default="noise")
    ap.add_argument("--crop", type=int, default=FACE,
                    help="side of the central LFW region pasted (120 = the face only, 250 = whole photo)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lfw", default=DEFAULT_LFW)
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="lfw-pairs.txt (folds 6-10 are excluded)")
    ap.add_argument("--keep-frames", help="also keep the PNG frames in this directory")
    ap.add_argument("--light-changes", type=int, default=0,
                    help="this many brief changes of the scene's brightness (each 1 s, up to +-6%%), "
                         "spread over the video: a static scene's passing cloud or auto-exposure step")
    args = ap.parse_args()
    if args.people < 0:
        ap.error("--people must be 0 (the background alone) or more")
    if not (0 < args.face_min <= args.face_max):
        ap.error("need 0 < --face-min <= --face-max")
    if not FACE <= args.crop <= 250:
        ap.error(f"--crop must be between {FACE} and 250 (LFW images are 250x250)")
    if shutil.which("gst-launch-1.0") is None:
        sys.exit("gst-launch-1.0 not found (GStreamer 1.x with plugins good/bad/ugly is needed)")

    rng = random.Random(args.seed)
    rng_np = np.random.default_rng(args.seed)
    people = pick_people(args.lfw, args.pairs, args.people, rng)
    apps, frames = plan_appearances(args, people, rng)
    crops = {}
    for a in apps:
        key = (a["name"], a["image"])
        if key not in crops:
            crops[key] = face_crop(os.path.join(args.lfw, a["name"], a["image"]), args.crop)
    bg = background(args.background, args.width, args.height, rng_np)
    # Brightness gain per frame: 1 except during the light changes (a 1 s triangle up to +-6%).
    gain = [1.0] * frames
    for k in range(args.light_changes):
        centre = round((k + 1) * frames / (args.light_changes + 1))
        amp = rng.choice([-1, 1]) * rng.uniform(0.02, 0.06)
        half = max(1, args.fps // 2)
        for fi in range(max(0, centre - half), min(frames, centre + half + 1)):
            gain[fi] = 1.0 + amp * (1 - abs(fi - centre) / (half + 1))

    truth = []
    tmp = tempfile.mkdtemp(prefix="farsight-frames-")
    try:
        for fi in range(frames):
            frame = bg.copy()
            faces = []
            for ai, a in enumerate(apps):
                if not a["start_frame"] <= fi < a["end_frame"]:
                    continue
                span = max(1, a["planned_end_frame"] - 1 - a["start_frame"])
                u = (fi - a["start_frame"]) / span
                side = round(a["size_from"] + u * (a["size_to"] - a["size_from"]))
                cx = a["centre_from"][0] + u * (a["centre_to"][0] - a["centre_from"][0])
                cy = a["centre_from"][1] + u * (a["centre_to"][1] - a["centre_from"][1])
                pasted = round(side * args.crop / FACE)
                px, py = round(cx - pasted / 2), round(cy - pasted / 2)
                x, y = px + (pasted - side) // 2, py + (pasted - side) // 2  # the face's square
                cx0, cy0 = max(0, x), max(0, y)
                cx1, cy1 = min(args.width, x + side), min(args.height, y + side)
                if cx1 <= cx0 or cy1 <= cy0:
                    continue
                face = crops[(a["name"], a["image"])].resize((pasted, pasted), Image.LANCZOS)
                frame.paste(face, (px, py))
                faces.append({
                    "person": a["person"], "appearance": ai, "box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
                    "size": side, "visible": round((cx1 - cx0) * (cy1 - cy0) / (side * side), 3),
                })
            truth.append({"frame": fi, "faces": faces})
            if gain[fi] != 1.0:
                frame = Image.fromarray(np.clip(np.asarray(frame, dtype=np.float32) * gain[fi], 0, 255).astype(np.uint8))
            frame.save(os.path.join(tmp, f"f{fi:05d}.png"), compress_level=1)
        out = os.path.abspath(args.out)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        cmd = [
            "gst-launch-1.0", "-q", "multifilesrc", f"location={tmp}/f%05d.png", "index=0",
            f"caps=image/png,framerate={args.fps}/1", "!", "pngdec", "!", "videoconvert", "!",
            "video/x-raw,format=I420", "!", "x264enc", "threads=1", f"key-int-max={2 * args.fps}", "!", "h264parse", "!", "mp4mux", "!",
            "filesink", f"location={out}",
        ]
        subprocess.run(cmd, check=True)
        if args.keep_frames:
            shutil.copytree(tmp, args.keep_frames, dirs_exist_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    counts = [len(t["faces"]) for t in truth]
    full = [sum(1 for f in t["faces"] if f["visible"] >= 0.999) for t in truth]
    sidecar = {
        "video": os.path.basename(out),
        "generator": "scripts/bench/make_video.py",
        "args": {k: v for k, v in vars(args).items() if k not in ("lfw", "pairs", "out", "keep_frames")},
        "width": args.width, "height": args.height, "fps": args.fps, "frames": frames,
        "face_crop": (f"central {args.crop}x{args.crop} of the LFW image, resized (Lanczos) by size/{FACE}; "
                      f"'box' is the face's square (the central {FACE}x{FACE}), 'size' its side"),
        "people": [{"id": i, "name": n, "images": len(imgs)} for i, (n, imgs) in enumerate(people)],
        "appearances": apps,
        "summary": {
            "face_instances": sum(counts),
            "fully_visible_instances": sum(full),
            "faces_per_frame_mean": round(sum(counts) / max(1, frames), 3),
            "faces_per_frame_max": max(counts, default=0),
            "frames_without_faces": sum(1 for c in counts if c == 0),
            "appearances": len(apps),
        },
        "truth": truth,
    }
    side_path = os.path.splitext(out)[0] + ".json"
    with open(side_path, "w") as f:
        json.dump(sidecar, f, indent=1)
    print(json.dumps({"video": out, "sidecar": side_path, **sidecar["summary"]}))


if __name__ == "__main__":
    main()
