#!/usr/bin/env bash
# Set everything up on a fresh machine and run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# slow tests (the Java METEOR scorer) run too; SALMONN_SLOW_TESTS=0 skips them locally
export SALMONN_SLOW_TESTS=${SALMONN_SLOW_TESTS:-1}
exec .venv/bin/python -m pytest -q "$@"
