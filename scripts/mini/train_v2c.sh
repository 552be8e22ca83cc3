#!/bin/bash
# The shipped SALMONN-mini (mini-v2c, 2026-11-30, third session) from configs/mini/stage{0,1,2}.yaml: the partly rendered mini-v2 corpus (every quick clip + the first
# VOICE voice, VOICE_QA voice_qa and VOICE_MIX voice_mix clips), two queries per window (CTC spells query 0; query 1
# is left free for what is not a word piece, e.g. the speaker), stage 0 for 1500 steps, stage 1 for 800, stage 2
# for 1200 on a balanced mix (at most CAP samples per task).
#   bash scripts/mini/train_v2c.sh [CORPUS]     (CORPUS: salmonn data synth CORPUS --size mini-v2)
set -euo pipefail
C=${1:-$HOME/.cache/salmonn/data/mini-v2}
R=${R:-runs/mini-v2c}
FIRST=${FIRST:-voice=3080,voice_qa=680,voice_mix=440}
CAP=${CAP:-800}
.venv/bin/python scripts/mini/make_manifests.py "$C" --spoken-qa --first "$FIRST" --stage2-per-task "$CAP"
data() { echo "datasets.train_ann_path=$C/$1_train.jsonl datasets.valid_ann_path=$C/$1_valid.jsonl datasets.cache_dir=cache/mini-v2-encoders"; }
.venv/bin/salmonn train configs/mini/stage0.yaml $(data stage0) run.output_dir=$R/stage0
.venv/bin/salmonn train configs/mini/stage1.yaml $(data stage1) run.output_dir=$R/stage1 run.init_from=$R/stage0/final
.venv/bin/salmonn train configs/mini/stage2.yaml $(data stage2) run.output_dir=$R/stage2 run.init_from=$R/stage1/final
# shipped and scored (card_numbers.json; the v2 split's rows first, then the espeak-era split's):
#   .venv/bin/python scripts/mini/export.py $R/stage2/final/trainable.safetensors
#   .venv/bin/python scripts/mini/card_numbers.py --corpus $C --limit 64 --work ~/.cache/salmonn/eval/card-v2c \
#       --tasks asr@voice,gender_recognition@voice,asr@quiet,asr@events,QA@voice_qa
#   .venv/bin/python scripts/mini/card_numbers.py --limit 64 --work ~/.cache/salmonn/eval/card-v2c-base
#   .venv/bin/python scripts/mini/long_form.py --limit 40 --modes pause:8 --out scripts/mini/results/long_form_first40.json
#   .venv/bin/python scripts/mini/long_form.py --modes pause:8 --out scripts/mini/results/long_form_all.json
#   .venv/bin/python scripts/mini/gender_probe.py --clips 300
