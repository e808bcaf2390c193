#!/usr/bin/env bash
# Smoke test of a cross-built farsight under qemu user-mode, against the native build:
#
#   cross/smoke.sh aarch64        (after cross/build.sh aarch64 and a native `cargo build --release`)
#   cross/smoke.sh armv7
#
# Both binaries load the real models (models/), enroll the same LFW photos into their own temporary
# gallery ("Tony Blair": Tony_Blair_0001 + 0002, "George W Bush": George_W_Bush_0001, each with
# --largest), then `identify` the same probes: three full-size LFW photos (one of a stranger) and
# two frames in which an LFW photo is shrunk so the face is ~19 px (examples/small_face.rs, scale
# 0.2), which the FTLGAN restorer handles. The outputs are printed side by side; the test passes
# when every face has the same identity, the same candidates in the same order, the same size
# (+-1 px) and restorer decision, and every score agrees within TOL (default 1e-3 absolute:
# tract runs other kernels on ARM, NEON instead of AVX, so float sums differ in the last bits).
# `identify` prints scores with 3 decimals, so the printed values are compared within TOL + 1e-3;
# the same probes then go through `farsight run` as an image-folder camera (each image its own track:
# frames 10 s apart, tracks closed after 1 s), whose JSON events carry the full-precision scores,
# compared within TOL.
# qemu's wall times are printed for information only: they are not performance figures.
#
# Environment: CARGO_TARGET_DIR (default target/), FARSIGHT_NATIVE (the native binary, default
# $CARGO_TARGET_DIR/release/farsight), LFW (default ../shared/datasets/lfw), TOL, QEMU_CPU.
# Installs qemu-user if missing (no binfmt: qemu is called explicitly with -L SYSROOT).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { echo "cross/smoke.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The emulated CPU is a box's, not qemu's default "max" (which has SVE/SME, and tract would pick
# kernels no Raspberry Pi runs): Cortex-A72 (Pi 4) for aarch64, Cortex-A7 (Pi 2, many NVR SoCs)
# for armv7. qemu-user shows the host's /proc/cpuinfo, where tract looks for NEON on armv7, so
# NEON is forced on there (TRACT_CPU_ARM32_NEON=true: the kernels a real Cortex-A7 gets).
case "${1:-}" in
  aarch64 | arm64 | aarch64-unknown-linux-gnu)
    triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu debarch=arm64 qemu=qemu-aarch64
    qemu_cpu="${QEMU_CPU:-cortex-a72}" ;;
  armv7 | armhf | armv7-unknown-linux-gnueabihf)
    triple=armv7-unknown-linux-gnueabihf gnu=arm-linux-gnueabihf debarch=armhf qemu=qemu-arm
    qemu_cpu="${QEMU_CPU:-cortex-a7}"
    export TRACT_CPU_ARM32_NEON="${TRACT_CPU_ARM32_NEON:-true}" ;;
  *) die "usage: cross/smoke.sh aarch64|armv7" ;;
esac
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
arm="$TARGET_DIR/$triple/release/farsight"
native="${FARSIGHT_NATIVE:-$TARGET_DIR/release/farsight}"
LFW="${LFW:-$ROOT/../shared/datasets/lfw}"
TOL="${TOL:-1e-3}"
[[ -x "$arm" ]] || die "$arm not found: run cross/build.sh $1 first"
[[ -x "$native" ]] || die "$native not found: run cargo build --release (or set FARSIGHT_NATIVE)"
[[ -d "$LFW" ]] || die "LFW not found at $LFW (set LFW=...)"
command -v python3 >/dev/null || die "python3 is needed to compare the outputs"

if ! command -v "$qemu" >/dev/null; then
  say "installing Debian package: qemu-user"
  SUDO=""; [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends qemu-user >&2
fi
# A binary built with GStreamer needs the target's GStreamer libraries: the sysroot cross/build.sh
# unpacked has them and the target's libc; without GStreamer the cross libc package is enough.
sysroot="/usr/$gnu"
if readelf -d "$arm" | grep -q 'libgstreamer'; then
  sysroot="$TARGET_DIR/cross-sysroot/$debarch"
  [[ -d "$sysroot/usr/lib/$gnu" ]] || die "$arm links GStreamer but $sysroot is missing: run cross/build.sh $1"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The small-face probes: LFW photos shrunk so the face is ~19 px, on a 640x480 canvas.
small_face="$TARGET_DIR/release/examples/small_face"
if [[ ! -x "$small_face" ]]; then
  say "building examples/small_face (native)"
  cargo build --release --quiet --example small_face
  small_face="$TARGET_DIR/release/examples/small_face"
fi
"$small_face" "$LFW/Tony_Blair/Tony_Blair_0005.jpg" "$work/small-Tony_Blair_0005.png" 0.2 >/dev/null
"$small_face" "$LFW/George_W_Bush/George_W_Bush_0003.jpg" "$work/small-George_W_Bush_0003.png" 0.2 >/dev/null

enroll_tb=("$LFW/Tony_Blair/Tony_Blair_0001.jpg" "$LFW/Tony_Blair/Tony_Blair_0002.jpg")
enroll_gwb=("$LFW/George_W_Bush/George_W_Bush_0001.jpg")
probes=("$LFW/Tony_Blair/Tony_Blair_0003.jpg" "$LFW/George_W_Bush/George_W_Bush_0002.jpg"
  "$LFW/Colin_Powell/Colin_Powell_0001.jpg" "$work/small-Tony_Blair_0005.png" "$work/small-George_W_Bush_0003.png")

run_side() { # name command...: enroll + identify with that binary; stdout -> $work/name.out
  local name="$1"; shift
  printf 'version = 1\nmodels_dir = "%s"\ngallery = "%s"\n' "$ROOT/models" "$work/$name.db" >"$work/$name.toml"
  local t0 t1
  t0=$(date +%s.%N)
  "$@" --config "$work/$name.toml" enroll --largest --name "Tony Blair" "${enroll_tb[@]}" >"$work/$name.log" 2>&1
  "$@" --config "$work/$name.toml" enroll --largest --name "George W Bush" "${enroll_gwb[@]}" >>"$work/$name.log" 2>&1
  "$@" --config "$work/$name.toml" identify "${probes[@]}" >"$work/$name.out" 2>>"$work/$name.log"
  cat "$work/$name.toml" - >"$work/$name-run.toml" <<EOF
[track]
lost_after_s = 1.0
[[camera]]
name = "probes"
url = "$work/probes"
frame_interval_ms = 10000
EOF
  "$@" --config "$work/$name-run.toml" run >"$work/$name.events" 2>>"$work/$name.log"
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk -v n="$name" '{printf "%s: enroll x2, identify and run over 5 images in %.1f s\n", n, $2 - $1}' >&2
}
mkdir -p "$work/probes"
i=0
for p in "${probes[@]}"; do i=$((i + 1)); cp "$p" "$work/probes/$i-$(basename "$p")"; done

say "native: $native ($(file -b "$native" | cut -d, -f1-2))"
say "$1: $qemu -cpu $qemu_cpu -L $sysroot $arm ($(file -b "$arm" | cut -d, -f1-2))${TRACT_CPU_ARM32_NEON:+, TRACT_CPU_ARM32_NEON=$TRACT_CPU_ARM32_NEON}"
run_side native "$native" || { cat "$work/native.log" >&2; die "the native binary failed"; }
run_side "$debarch" "$qemu" -cpu "$qemu_cpu" -L "$sysroot" "$arm" || { cat "$work/$debarch.log" >&2; die "the $1 binary failed under qemu"; }
"$qemu" -cpu "$qemu_cpu" -L "$sysroot" "$arm" --version

python3 - "$work/native" "$work/$debarch" "$TOL" "$debarch" <<'EOF'
import json, re, sys
native, arm, tol, arch = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
native_out, arm_out = native + ".out", arm + ".out"
tol_printed = tol + 1e-3   # both sides rounded to 3 decimals
line_re = re.compile(r"^(?P<img>.*): face (?P<n>\d+) \((?P<px>\d+) px(?P<restored>, restored)?\): (?P<id>.*?) \| candidates: (?P<cands>.*)$")

def parse(path):
    faces = {}
    for line in open(path):
        m = line_re.match(line.rstrip("\n"))
        if not m:
            faces[(line.split(":")[0].rsplit("/", 1)[-1], 0)] = {"raw": line.strip()}
            continue
        cands = []
        for c in m["cands"].split(", "):
            name, score = c.rsplit(" ", 1)
            cands.append((name, float(score)))
        key = (m["img"].rsplit("/", 1)[-1], int(m["n"]))
        faces[key] = {"px": int(m["px"]), "restored": bool(m["restored"]), "id": m["id"], "cands": cands}
    return faces

a, b = parse(native_out), parse(arm_out)
def show(f):
    if f is None: return "(missing)"
    if "raw" in f: return f["raw"]
    c = ", ".join(f"{n} {s:.3f}" for n, s in f["cands"][:2])
    return f"{f['id']} [{c}] {f['px']}px{' R' if f['restored'] else ''}"
W = 66
print("farsight identify (scores printed with 3 decimals)")
print(f"{'image':<30} {'native x86-64':<{W}} {arch + ' (qemu)':<{W}} {'max |d|':>7}")
failures, worst = 0, 0.0
for key in sorted(set(a) | set(b)):
    fa, fb = a.get(key), b.get(key)
    ok, d = True, 0.0
    if fa is None or fb is None or ("raw" in fa) != ("raw" in fb):
        ok = False
    elif "raw" in fa:
        ok = fa["raw"].split(":", 1)[1] == fb["raw"].split(":", 1)[1]
    else:
        ok = (fa["id"] == fb["id"] and fa["restored"] == fb["restored"] and abs(fa["px"] - fb["px"]) <= 1
              and [n for n, _ in fa["cands"]] == [n for n, _ in fb["cands"]])
        if ok:
            d = max(abs(x - y) for (_, x), (_, y) in zip(fa["cands"], fb["cands"]))
            ok = d <= tol_printed
    worst = max(worst, d)
    failures += not ok
    print(f"{key[0][:30]:<30} {show(fa):<{W}} {show(fb):<{W}} {d:7.4f} {'ok' if ok else 'DIFFERENT'}")
print(f"{len(set(a) | set(b))} faces, {failures} different; largest score difference {worst:.4f} "
      f"(tolerance {tol:g}, {tol_printed:g} on the printed 3-decimal scores)")

def events(path):
    evs = [json.loads(l) for l in open(path) if l.strip()]
    return sorted(evs, key=lambda e: e["best_shot"]["frame"])
ea, eb = events(native + ".events"), events(arm + ".events")
print()
print("farsight run over the same images (JSON events, full-precision scores)")
print(f"{'frame':<6} {'native x86-64':<{W}} {arch + ' (qemu)':<{W}} {'max |d|':>9}")
def show_event(e):
    c = ", ".join(f"{x['name']} {x['score']:.6f}" for x in e["candidates"][:2])
    bs = e["best_shot"]
    return f"{e['identity']} [{c}] {bs['face_px']:.1f}px{' R' if bs['restored'] else ''}"
run_fail, run_worst = 0, 0.0
if len(ea) != len(eb) or not ea:
    run_fail += 1
    print(f"event counts: native {len(ea)}, {arch} {len(eb)}")
for x, y in zip(ea, eb):
    ok = (x["identity"] == y["identity"] and x["event"] == y["event"]
          and x["best_shot"]["restored"] == y["best_shot"]["restored"]
          and [c["name"] for c in x["candidates"]] == [c["name"] for c in y["candidates"]]
          and abs(x["best_shot"]["face_px"] - y["best_shot"]["face_px"]) <= 1.0)
    d = max([abs(c["score"] - k["score"]) for c, k in zip(x["candidates"], y["candidates"])] or [0.0])
    ok = ok and d <= tol
    run_worst = max(run_worst, d)
    run_fail += not ok
    print(f"{x['best_shot']['frame']:<6} {show_event(x):<{W}} {show_event(y):<{W}} {d:9.2e} {'ok' if ok else 'DIFFERENT'}")
print(f"{len(ea)} events, {run_fail} different; largest score difference {run_worst:.2e} (tolerance {tol:g})")
sys.exit(1 if failures or run_fail else 0)
EOF
say "PASS: $1 under qemu gives the native identities and scores"
