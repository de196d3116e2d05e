#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then lint, type-check and test.
# Used by the README's Quick start and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# PyTorch is the tests' oracle; the CPU wheel of this pinned release is what the machine image carries.
.venv/bin/pip install -q -e '.[test]' 'torch==2.13.0'
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
