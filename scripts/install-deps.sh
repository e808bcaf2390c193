#!/usr/bin/env bash
# Debian packages farsight needs to build (GStreamer and V4L2 features, a C compiler for the crates
# that compile C or assembly: bundled SQLite, tract's kernels), to fetch samples and models (pip,
# venv) and to run its tests (a loopback RTSP server, a mosquitto broker, x264 to encode test
# videos, headless chromium and chromedriver for the page's browser test). Idempotent: installs
# only what is missing and says what; uses sudo when not root.
set -euo pipefail
packages=(
  gcc libc6-dev                                            # cc: rusqlite (bundled), tract-linalg
  python3-pip python3-venv                                 # fetch-samples (pip download), model venvs
  pkg-config libclang-dev                                  # v4l's bindgen
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev      # gstreamer-rs
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good       # decodebin, appsink, rtspsrc, qtdemux
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly        # h264parse, openh264dec (H.264); x264enc (test videos)
  gstreamer1.0-libav gstreamer1.0-tools                     # avdec_h264 (4:4:4, h264_decoder = "auto"), gst-launch-1.0
  gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi   # the tests' RTSP server
  mosquitto procps                                          # the tests' MQTT broker; kill
  chromium chromium-driver                                  # the page's browser test (tests/integration/page.rs)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#packages[@]} Debian packages already installed" >&2
fi
