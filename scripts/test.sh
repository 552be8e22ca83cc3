#!/usr/bin/env bash
# Set everything up on a fresh machine and run the test suite (what CI runs): the main suite in .venv, then the
# vLLM tests (tests/vllm) in .venv-vllm. With arguments, only the main suite runs, with them (pytest's own flags).
set -euo pipefail
cd "$(dirname "$0")/.."
if (( $# )); then
  bash scripts/setup.sh --test
else
  bash scripts/setup.sh --test --vllm
fi
# slow tests (the Java METEOR scorer) run too; SALMONN_SLOW_TESTS=0 skips them locally
export SALMONN_SLOW_TESTS=${SALMONN_SLOW_TESTS:-1}
if (( $# )); then
  exec .venv/bin/python -m pytest -q "$@"
fi
status=0
.venv/bin/python -m pytest -q || status=$?
echo "--- the vLLM tests, in .venv-vllm (one engine of each kind for the session) ---"
.venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/vllm || status=$?
exit $status
