#!/usr/bin/env bash
# Creates models/ftlgan/.venv with the pinned training requirements (PyTorch from PyPI, ~3 GB).
# Idempotent: an existing venv is only brought up to date. Every training step and the training
# smoke test (tests/integration/training.rs) use this venv's python.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -c "import torch, onnx2torch, onnxruntime; print('ftlgan venv: torch', torch.__version__)"
