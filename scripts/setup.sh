#!/usr/bin/env bash
# Create .venv (if missing) and install the package with its test extras into it.
# TORCH_SPEC chooses the torch build, e.g. TORCH_SPEC="torch==2.13.0" for a CPU wheel already on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "${TORCH_SPEC:-}" ]; then .venv/bin/python -m pip install -q "$TORCH_SPEC"; fi
.venv/bin/python -m pip install -q -e '.[test]'
