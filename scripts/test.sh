#!/usr/bin/env bash
# The README's test command, and what CI runs (.ci/run calls it): on a fresh Debian machine with
# the Rust toolchain and python3, installs what the tests need and runs them. Each step is
# idempotent and says what it does:
#   1. scripts/install-deps.sh      Debian packages: GStreamer + V4L2 build deps, the RTSP server and
#                                   mosquitto the tests start, x264 for test videos, chromium and
#                                   chromium-driver for the page's browser test (sudo if not root)
#   2. python3 models/fetch.py --check      the committed models against their pinned sha256
#   3. models/ftlgan/setup.sh       the FTLGAN training venv (pinned PyTorch, ~3 GB the first time)
#                                   for the training smoke test; skipped when
#                                   FARSIGHT_SKIP_TRAINING_SMOKE=1 (the test then says it skipped)
#   4. packaging/make-conffile.sh --check   the package's conffile matches farsight.example.toml
#      systemd/check.sh             systemd-analyze verify + exposure <= 2.0 (when systemd-analyze is
#                                   installed; needs root when /usr/bin/farsight does not exist)
#   5. cargo test --release "$@"    (arguments are passed on, e.g. scripts/test.sh -- --nocapture)
# The integration tests read LFW from ../shared/datasets and fail loudly without it.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "test.sh: $*" >&2; }

command -v cargo >/dev/null || { say "error: no Rust toolchain (cargo) on this machine: install it with rustup"; exit 1; }
if [ ! -d ../shared/datasets/lfw ] || [ ! -f ../shared/datasets/lfw-pairs.txt ]; then
  say "error: ../shared/datasets (LFW + lfw-pairs.txt) is missing; the integration tests need it"
  exit 1
fi

say "system packages (scripts/install-deps.sh)"
scripts/install-deps.sh

say "models (python3 models/fetch.py --check)"
python3 models/fetch.py --check

if [ "${FARSIGHT_SKIP_TRAINING_SMOKE:-}" = "1" ]; then
  say "FARSIGHT_SKIP_TRAINING_SMOKE=1: not creating the training venv (the training smoke test skips)"
else
  say "training venv (models/ftlgan/setup.sh; ~3 GB of PyTorch the first time)"
  models/ftlgan/setup.sh
fi

say "packaging and service files"
packaging/make-conffile.sh --check
if ! command -v systemd-analyze >/dev/null; then
  say "systemd-analyze not installed: systemd/check.sh skipped"
elif [ ! -e /usr/bin/farsight ] && [ "$(id -u)" -ne 0 ]; then
  say "not root and no /usr/bin/farsight for systemd-analyze verify: systemd/check.sh skipped"
else
  systemd/check.sh
fi

say "cargo test --release $*"
exec cargo test --release "$@"
