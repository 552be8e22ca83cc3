#!/bin/bash
# SALMONN-mini v3 (2026-11-30, fourth session) from configs/mini/stage{0,1,2}.yaml: v2c's recipe (two queries per
# window, CTC spells query 0) plus the speaker-gender loss on query 1 and a CTC scale of 32 (run.gender_weight, train/gender.py) in every
# stage, on the 11,800 training clips (10.1 h) the mini-v2 corpus held then (the first VOICE voice, VOICE_QA
# voice_qa and VOICE_MIX voice_mix clips), stage 0 for 1800 steps, stage 1 for 800, stage 2 for 1200 (<= CAP
# samples per task).
#   bash scripts/mini/train_v3.sh [CORPUS]     (CORPUS: salmonn data synth CORPUS --size mini-v2)
set -euo pipefail
C=${1:-$HOME/.cache/salmonn/data/mini-v2}
R=${R:-runs/mini-v3}
FIRST=${FIRST:-voice=5000,voice_qa=1080,voice_mix=720}
CAP=${CAP:-800}
.venv/bin/python scripts/mini/make_manifests.py "$C" --spoken-qa --first "$FIRST" --stage2-per-task "$CAP"
data() { echo "datasets.train_ann_path=$C/$1_train.jsonl datasets.valid_ann_path=$C/$1_valid.jsonl datasets.cache_dir=cache/mini-v2-encoders"; }
.venv/bin/salmonn train configs/mini/stage0.yaml $(data stage0) run.output_dir=$R/stage0
.venv/bin/salmonn train configs/mini/stage1.yaml $(data stage1) run.output_dir=$R/stage1 run.init_from=$R/stage0/final
.venv/bin/salmonn train configs/mini/stage2.yaml $(data stage2) run.output_dir=$R/stage2 run.init_from=$R/stage1/final
# scored as v2c (scripts/mini/train_v2c.sh's closing lines), with --work ~/.cache/salmonn/eval/card-v3*
