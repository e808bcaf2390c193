#!/usr/bin/env bash
# Checks, without systemd, that farsight stays inside the sandbox systemd/farsight.service puts it
# in: every system call it makes (as a non-root user) while validating, enrolling, identifying and
# running (an image folder, an H.264 file through GStreamer, and a live RTSP camera) is allowed by
# the unit's SystemCallFilter= lines (@system-service, minus @privileged @resources, plus the two
# calls added back; groups as this machine's systemd-analyze defines them), every socket() is one
# of RestrictAddressFamilies=, and no mapping is made writable and executable
# (MemoryDenyWriteExecute=yes: no mmap with PROT_WRITE|PROT_EXEC, no mprotect adding PROT_EXEC).
# A call outside the filter would fail with EPERM (SystemCallErrorNumber=EPERM) under systemd.
#
#   systemd/syscalls.sh [FARSIGHT_BINARY]     (default: target/release/farsight)
#
# Needs strace and systemd-analyze (installed if missing), gst-launch-1.0 with x264enc and
# python3-gi with the RTSP server (scripts/install-deps.sh), and LFW in ../shared/datasets/lfw.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(realpath "${1:-$ROOT/target/release/farsight}")"
LFW="${LFW:-$ROOT/../shared/datasets/lfw}"
say() { echo "systemd/syscalls.sh: $*" >&2; }
[[ -x "$bin" ]] || { say "error: $bin not found (cargo build --release)"; exit 1; }
for tool in strace:strace systemd-analyze:systemd; do
  if ! command -v "${tool%%:*}" >/dev/null; then
    say "installing Debian package: ${tool##*:}"
    SUDO=""; [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${tool##*:}" >&2
  fi
done

work="$(mktemp -d)"
chmod 0755 "$work"
# Like the service, not as root (SQLite, for one, fchown()s its journal only when root).
as_user=()
[[ "$(id -u)" -ne 0 ]] || as_user=(-u nobody)
rtsp_pid=""
cleanup() { [[ -z "$rtsp_pid" ]] || kill "$rtsp_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/frames" "$work/traces"
printf 'version = 1\nmodels_dir = "%s"\ngallery = "%s"\n[[camera]]\nname = "frames"\nurl = "%s"\n' \
  "$ROOT/models" "$work/g.db" "$work/frames" >"$work/c.toml"
cp "$LFW/Tony_Blair/Tony_Blair_0003.jpg" "$LFW/Colin_Powell/Colin_Powell_0001.jpg" "$work/frames/"
cp "$LFW/Tony_Blair/Tony_Blair_0001.jpg" "$LFW/Tony_Blair/Tony_Blair_0002.jpg" "$LFW/Tony_Blair/Tony_Blair_0005.jpg" "$work/"
chmod -R a+rwX "$work"
gst-launch-1.0 -q filesrc location="$LFW/Tony_Blair/Tony_Blair_0004.jpg" ! jpegdec ! imagefreeze num-buffers=15 \
  ! video/x-raw,framerate=5/1 ! videoconvert ! x264enc ! video/x-h264,profile=main ! h264parse ! mp4mux \
  ! filesink location="$work/clip.mp4"
chmod a+r "$work/clip.mp4"
port=$((20000 + RANDOM % 20000))
/usr/bin/python3 "$ROOT/tests/fixtures/rtsp_server.py" "$port" cam "$work/clip.mp4" >"$work/rtsp.out" 2>&1 &
rtsp_pid=$!
for _ in $(seq 100); do grep -q ready "$work/rtsp.out" 2>/dev/null && break; sleep 0.1; done

trace() { # name args...: strace -f the binary with the config
  local name="$1"; shift
  say "strace: farsight $*"
  strace -f -qq "${as_user[@]}" -o "$work/traces/$name" "$bin" --config "$work/c.toml" "$@" >"$work/$name.out" 2>"$work/$name.err" \
    || { cat "$work/$name.err" >&2; say "error: farsight $* failed"; exit 1; }
}
trace validate validate
trace enroll enroll --largest --name "Tony Blair" "$work/Tony_Blair_0001.jpg" "$work/Tony_Blair_0002.jpg"
trace identify identify "$work/Tony_Blair_0005.jpg"
trace run-images run
trace run-video run --source "$work/clip.mp4"
# A live camera runs until SIGTERM: stop it after a few seconds (the clean shutdown is traced too).
say "strace: farsight run --source rtsp://127.0.0.1:$port/cam (SIGTERM after 8 s)"
strace -f -qq "${as_user[@]}" -o "$work/traces/run-rtsp" "$bin" --config "$work/c.toml" run --source "rtsp://127.0.0.1:$port/cam" \
  >"$work/run-rtsp.out" 2>"$work/run-rtsp.err" &
spid=$!
sleep 8
pkill -TERM -P "$spid" 2>/dev/null || true
wait "$spid" || true
for n in run-images run-video run-rtsp; do say "$n: $(grep -c '"event"' "$work/$n.out" || true) events"; done

python3 - "$work/traces" "$ROOT/systemd/farsight.service" <<'EOF'
import os, re, subprocess, sys
def expand(group, seen=None):
    seen = seen or set()
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True).stdout
    calls = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("@"):
            if item not in seen:
                seen.add(item)
                calls |= expand(item, seen)
        else:
            calls.add(item)
    return calls
def expand_all(items):
    calls = set()
    for item in items:
        calls |= expand(item) if item.startswith("@") else {item}
    return calls
# The unit's SystemCallFilter= lines in order: the first allow-list sets, "~" lines remove, later
# allow lines add (systemd's rule); RestrictAddressFamilies= likewise from the unit.
allowed, families_allowed = None, set()
for line in open(sys.argv[2]):
    key, _, value = line.strip().partition("=")
    if key == "SystemCallFilter":
        deny = value.startswith("~")
        items = set(value.lstrip("~").split())
        if deny:
            allowed -= expand_all(items)
        else:
            allowed = expand_all(items) if allowed is None else allowed | expand_all(items)
    elif key == "RestrictAddressFamilies":
        families_allowed |= set(value.split())
call_re = re.compile(r"^(\d+)\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]")
# GStreamer's plugin scanner (gst-plugin-scanner, run when the registry cache in $HOME/.cache is
# missing or stale) is reported apart: its calls are not farsight's, and one that the unit refuses
# only hides that plugin's devices (the va and v4l2codecs plugins' udev hotplug monitors).
used, families, wx = {}, {}, []
for name in sorted(os.listdir(sys.argv[1])):
    scanner = set()
    for line in open(os.path.join(sys.argv[1], name), errors="replace"):
        m = call_re.match(line)
        if not m or line.split(None, 1)[1].startswith(("---", "+++")):
            continue
        pid, call = m.group(1), m.group(2)
        if call == "execve" and "gst-plugin-scanner" in line:
            scanner.add(pid)
        if call in ("clone", "clone3", "fork", "vfork") and pid in scanner:
            child = re.search(r"= (\d+)\s*$", line)
            if child:
                scanner.add(child.group(1))   # the scanner's threads
        who = "gst-plugin-scanner" if pid in scanner else "farsight"
        used.setdefault(call, {}).setdefault(who, set()).add(name)
        if "resumed>" in line:   # the arguments were on the "<unfinished ...>" line
            continue
        if call == "socket":
            families.setdefault(line.split("(", 1)[1].split(",", 1)[0], set()).add(who)
        if (call in ("mmap", "mmap2") and "PROT_WRITE" in line and "PROT_EXEC" in line) or \
           (call in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in line):
            wx.append(f"{who} in {name}: {line.strip()[:120]}")
print(f"{len(used)} distinct system calls in {len(os.listdir(sys.argv[1]))} traced runs; "
      f"the unit's SystemCallFilter= allows {len(allowed)}")
failures = 0
for c in sorted(used):
    if c in allowed:
        continue
    for who, runs in sorted(used[c].items()):
        fatal = who == "farsight"
        failures += fatal
        print(f"  {'OUTSIDE THE FILTER' if fatal else 'refused, tolerated'}: {c} by {who} (in {', '.join(sorted(runs))})")
print(f"socket families: {' '.join(sorted(families)) or 'none'}")
for f, whos in sorted(families.items()):
    if f in families_allowed:
        continue
    for who in sorted(whos):
        fatal = who == "farsight"
        failures += fatal
        print(f"  {'OUTSIDE RestrictAddressFamilies' if fatal else 'refused, tolerated'}: {f} by {who}")
for w in wx:
    print(f"  W+X MAPPING: {w}")
failures += len(wx)
print("PASS: farsight stays inside SystemCallFilter=, RestrictAddressFamilies= and MemoryDenyWriteExecute="
      if not failures else f"FAIL: {failures}")
sys.exit(0 if not failures else 1)
EOF
