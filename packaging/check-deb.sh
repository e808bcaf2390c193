#!/usr/bin/env bash
# End-to-end check of the Debian package on this machine (x86-64, PID 1 need not be systemd).
# NOT run in CI: it installs and purges the farsight package, so it needs root and it DELETES
# /var/lib/farsight at the end (it refuses to start when a farsight package or state is already
# there, unless --force).
#
#   packaging/check-deb.sh                  build the amd64 .deb with cargo-deb, then check it
#   packaging/check-deb.sh --deb FILE.deb   check an existing package
#
# Steps (each prints what it does and shows the evidence):
#   1. cargo deb (niced; CARGO_TARGET_DIR is honoured), dpkg-deb --info/--contents
#   2. dpkg -i: the farsight user (group video), /var/lib/farsight 0700, the conffile root:farsight 0640
#   3. an operator adds an image-folder [[camera]] to /etc/farsight/farsight.toml and enrolls
#      "Tony Blair" (LFW) as the farsight user
#   4. the unit's ExecStartPre and ExecStart run the way systemd would run them: as farsight:farsight
#      with group video (setpriv --init-groups), no new privileges, no capabilities, UMask 0077, in
#      WorkingDirectory /var/lib/farsight, with the unit's environment (STATE_DIRECTORY,
#      CONFIGURATION_DIRECTORY, HOME...) and a NOTIFY_SOCKET that this script listens on (systemd
#      would); the events come out on stdout
#  4b. the same ExecStart on a live camera (a loopback RTSP server from tests/fixtures) for 12 s,
#      then SIGTERM: READY, STATUS, WATCHDOG keep-alives and STOPPING on the notify socket
#   5. dpkg -i again (the upgrade path) and dpkg -r: the gallery stays in /var/lib/farsight
#   6. dpkg --purge: what it deletes
# What is NOT reproduced without systemd as PID 1: the namespaces and seccomp filter of the unit's
# hardening lines (systemd/check.sh checks those statically), the watchdog and MemoryMax.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LFW="${LFW:-$ROOT/../shared/datasets/lfw}"
step() { printf '\n=== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
die() { echo "check-deb: error: $*" >&2; exit 1; }

deb="" force=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --deb) deb="$2"; shift 2 ;;
    --force) force=1; shift ;;
    *) die "usage: packaging/check-deb.sh [--deb FILE.deb] [--force]" ;;
  esac
done
[[ "$(id -u)" -eq 0 ]] || die "run as root (it installs and purges the package)"
[[ -d "$LFW" ]] || die "LFW not found at $LFW (set LFW=...)"
if [[ $force -eq 0 ]] && { dpkg-query -W farsight >/dev/null 2>&1 || [[ -e /var/lib/farsight ]]; }; then
  die "a farsight package or /var/lib/farsight is already here; this script purges it at the end (--force to go on)"
fi

step "1. build the package"
packaging/make-conffile.sh --check
if [[ -z "$deb" ]]; then
  command -v cargo-deb >/dev/null || run nice -n 19 cargo install cargo-deb --locked
  start=$(date +%s)
  run nice -n 19 cargo deb
  echo "cargo deb took $(( $(date +%s) - start )) s"
  deb="$(ls -t "${CARGO_TARGET_DIR:-$ROOT/target}"/debian/farsight_*_amd64.deb | head -1)"
fi
run dpkg-deb --info "$deb"
run dpkg-deb --contents "$deb"

step "2. install"
run dpkg -i "$deb"
run id farsight
run ls -ld /var/lib/farsight /etc/farsight /etc/farsight/farsight.toml /usr/bin/farsight
run ls -l /usr/share/farsight/models
run dpkg-statoverride --list /etc/farsight/farsight.toml
run /usr/bin/farsight --version

step "3. configure a camera (an image folder) and enroll an identity, as an operator would"
inbox=/var/lib/farsight/inbox
install -d -o farsight -g farsight -m 0700 "$inbox"
incoming="$(mktemp -d)"
trap 'rm -rf "$incoming"' EXIT
chmod 0755 "$incoming"
cp "$LFW/Tony_Blair/Tony_Blair_0001.jpg" "$LFW/Tony_Blair/Tony_Blair_0002.jpg" "$incoming/"
chmod 0644 "$incoming"/*.jpg
# Frames: Tony Blair (another photo), a stranger; the service reads them in name order, 5 s apart
# in stream time (track.lost_after_s is 1.5 s: two tracks, two events).
install -o farsight -g farsight -m 0600 "$LFW/Tony_Blair/Tony_Blair_0003.jpg" "$inbox/frame-001.jpg"
install -o farsight -g farsight -m 0600 "$LFW/Colin_Powell/Colin_Powell_0001.jpg" "$inbox/frame-002.jpg"
cat >>/etc/farsight/farsight.toml <<EOF

# Added by packaging/check-deb.sh
[[camera]]
name = "inbox"
url = "$inbox"
frame_interval_ms = 5000
EOF
run tail -5 /etc/farsight/farsight.toml
run runuser -u farsight -- /usr/bin/farsight --config /etc/farsight/farsight.toml enroll --largest \
  --name "Tony Blair" "$incoming/Tony_Blair_0001.jpg" "$incoming/Tony_Blair_0002.jpg"
run runuser -u farsight -- /usr/bin/farsight --config /etc/farsight/farsight.toml gallery list

step "4. ExecStartPre + ExecStart as the unit runs them (user, groups, umask, cwd, environment)"
# A notify socket like systemd's: collect what the service says (READY=1, STATUS=, WATCHDOG=1...),
# each message with the seconds since the start of `farsight run`.
notify_dir="$(mktemp -d)"
chown farsight "$notify_dir"
listen() { # start collecting into $notify_dir/messages
  rm -f "$notify_dir/notify" "$notify_dir/messages"
  python3 - "$notify_dir/notify" "$notify_dir/messages" <<'EOF' &
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666)
s.settimeout(120)
with open(sys.argv[2], "w", buffering=1) as out:
    try:
        while True:
            msg = s.recv(4096).decode(errors="replace")
            out.write(f"{time.time():.3f}\t" + " | ".join(msg.strip().split("\n")) + "\n")
    except (socket.timeout, KeyboardInterrupt):
        pass
EOF
  listener=$!
  for _ in $(seq 50); do [[ -S "$notify_dir/notify" ]] && break; sleep 0.1; done
}
show_messages() { # t0
  kill "$listener" 2>/dev/null || true; wait "$listener" 2>/dev/null || true
  echo "--- sd_notify messages received on NOTIFY_SOCKET (seconds after the start of farsight run)"
  if [[ -s "$notify_dir/messages" ]]; then
    awk -F'\t' -v t0="$1" '{printf "%7.3f s  %s\n", $1 - t0, $2}' "$notify_dir/messages"
  else
    echo "(none: this build does not speak sd_notify)"
  fi
}
watchdog_usec=30000000   # WatchdogSec=30s
as_unit() { # the unit's User=, Group=, SupplementaryGroups=video, NoNewPrivileges=, CapabilityBoundingSet=,
  # UMask=, WorkingDirectory=, and the environment systemd gives a system service
  setpriv --reuid=farsight --regid=farsight --init-groups --no-new-privs --bounding-set=-all --inh-caps=-all -- \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    HOME=/var/lib/farsight USER=farsight LOGNAME=farsight SHELL=/usr/sbin/nologin \
    STATE_DIRECTORY=/var/lib/farsight CONFIGURATION_DIRECTORY=/etc/farsight \
    NOTIFY_SOCKET="$notify_dir/notify" WATCHDOG_USEC="$watchdog_usec" \
    sh -c "umask 0077 && cd /var/lib/farsight && export WATCHDOG_PID=\$\$ && echo \$\$ >'$notify_dir/pid' && exec \"\$@\"" \
    sh "$@"
}
run as_unit id
run as_unit /usr/bin/farsight --config /etc/farsight/farsight.toml validate
listen
start=$(date +%s.%N)
echo "\$ as_unit /usr/bin/farsight --config /etc/farsight/farsight.toml run >events 2>log"
as_unit /usr/bin/farsight --config /etc/farsight/farsight.toml run >"$notify_dir/events" 2>"$notify_dir/log"
echo "farsight run exited 0 after $(echo "$start $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}') s"
echo "--- stderr (log)"; cat "$notify_dir/log"
echo "--- stdout (events)"; cat "$notify_dir/events"
show_messages "$start"
python3 - "$notify_dir/events" <<'EOF'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for e in events:
    print(f"event: {e['event']:<8} identity={e['identity']!r} score={e['score']:.3f} camera={e['camera']} "
          f"face_px={e['best_shot']['face_px']:.0f}")
assert any(e["event"] == "match" and e["identity"] == "Tony Blair" for e in events), "no Tony Blair match"
print(f"{len(events)} events; Tony Blair matched")
EOF
run ls -la /var/lib/farsight
run runuser -u farsight -- /usr/bin/farsight --config /etc/farsight/farsight.toml status

step "4b. a live camera (loopback RTSP) for 12 s, then SIGTERM (what systemctl stop sends)"
# The same ExecStart with `--source` instead of the folder camera; WATCHDOG_USEC=4 s so that a
# short run shows the keep-alives (farsight pings at half the period).
if command -v gst-launch-1.0 >/dev/null && /usr/bin/python3 -c 'import gi' 2>/dev/null; then
  gst-launch-1.0 -q filesrc location="$LFW/Tony_Blair/Tony_Blair_0004.jpg" ! jpegdec ! imagefreeze num-buffers=100 \
    ! video/x-raw,framerate=5/1 ! videoconvert ! x264enc ! video/x-h264,profile=main ! h264parse ! mp4mux \
    ! filesink location="$incoming/clip.mp4"
  port=$((20000 + RANDOM % 20000))
  /usr/bin/python3 "$ROOT/tests/fixtures/rtsp_server.py" "$port" cam "$incoming/clip.mp4" >"$incoming/rtsp.out" 2>&1 &
  rtsp_pid=$!
  for _ in $(seq 100); do grep -q ready "$incoming/rtsp.out" 2>/dev/null && break; sleep 0.1; done
  watchdog_usec=4000000
  listen
  start=$(date +%s.%N)
  echo "\$ as_unit /usr/bin/farsight --config /etc/farsight/farsight.toml run --source rtsp://127.0.0.1:$port/cam & sleep 12; kill -TERM"
  rm -f "$notify_dir/pid"
  as_unit /usr/bin/farsight --config /etc/farsight/farsight.toml run --source "rtsp://127.0.0.1:$port/cam" \
    >"$notify_dir/events" 2>"$notify_dir/log" &
  job=$!
  sleep 12
  farsight_pid="$(cat "$notify_dir/pid")"   # the shell that exec'd farsight wrote its pid
  kill -TERM "$farsight_pid"
  rc=0; wait "$job" || rc=$?
  echo "farsight run exited $rc after $(echo "$start $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}') s"
  kill "$rtsp_pid" 2>/dev/null || true; wait "$rtsp_pid" 2>/dev/null || true
  echo "--- stderr (log)"; cat "$notify_dir/log"
  echo "--- stdout (events)"; cat "$notify_dir/events"
  show_messages "$start"
  watchdog_usec=30000000
else
  echo "skipped: needs gst-launch-1.0 and python3-gi with the RTSP server (scripts/install-deps.sh)"
fi
rm -rf "$notify_dir"

step "5. dpkg -i again (upgrade path), then dpkg -r: the gallery stays"
run dpkg -i "$deb"
run runuser -u farsight -- /usr/bin/farsight --config /etc/farsight/farsight.toml gallery list
run dpkg -r farsight
run ls -la /var/lib/farsight /etc/farsight
run ls -l /usr/bin/farsight /usr/share/farsight 2>&1 || true
run id farsight
[[ -f /var/lib/farsight/gallery.db ]] || die "dpkg -r deleted the gallery"
echo "OK: /var/lib/farsight/gallery.db survived dpkg -r"

step "6. dpkg --purge"
run dpkg --purge farsight
run ls -la /var/lib/farsight /etc/farsight 2>&1 || true
run id farsight || true
[[ ! -e /var/lib/farsight ]] || die "purge left /var/lib/farsight"
echo "OK: purge deleted /var/lib/farsight and /etc/farsight; the farsight user is kept"
