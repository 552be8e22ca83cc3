#!/bin/bash
# SALMONN-mini stages 0-2 from configs/mini/stage{0,1,2}.yaml on the mini-v2 corpus (a stage cut short goes on with
# `salmonn train <its yaml> <the same overrides> --resume`).
#   bash scripts/mini/train.sh [CORPUS]     (CORPUS: salmonn data synth CORPUS --size mini-v2)
# Environment: R run folder; FIRST the clips a partly rendered corpus held (make_manifests.py --first); CAP stage-2
# samples per task; EXTRA overrides for every stage, EXTRA0 for stage 0 only (the YAML's settings changed since).
#   mini-v3 (shipped candidate, 2026-11-30, 4th session): the defaults below -- 11,800 clips (10.1 h), CTC scale 32,
#     the gender loss on query 1, stage 0 1800 steps, stage 1 800, stage 2 1200.
#   mini-v2c (3rd session): R=runs/mini-v2c FIRST=voice=3080,voice_qa=680,voice_mix=440 \
#     EXTRA="run.ctc_scale=16 run.gender_weight=0" EXTRA0=run.iters_per_epoch=750 bash scripts/mini/train.sh
# Scoring a result as the model card is scored: scripts/mini/score_candidate.sh.
set -euo pipefail
C=${1:-$HOME/.cache/salmonn/data/mini-v2}
R=${R:-runs/mini-v3}
FIRST=${FIRST:-voice=5000,voice_qa=1080,voice_mix=720}
CAP=${CAP:-800}
.venv/bin/python scripts/mini/make_manifests.py "$C" --spoken-qa --first "$FIRST" --stage2-per-task "$CAP"
data() {
  echo "datasets.train_ann_path=$C/$1_train.jsonl datasets.valid_ann_path=$C/$1_valid.jsonl" \
    "datasets.cache_dir=cache/mini-v2-encoders"
}
.venv/bin/salmonn train configs/mini/stage0.yaml $(data stage0) run.output_dir=$R/stage0 ${EXTRA:-} ${EXTRA0:-}
.venv/bin/salmonn train configs/mini/stage1.yaml $(data stage1) run.output_dir=$R/stage1 run.init_from=$R/stage0/final \
  ${EXTRA:-}
.venv/bin/salmonn train configs/mini/stage2.yaml $(data stage2) run.output_dir=$R/stage2 run.init_from=$R/stage1/final \
  ${EXTRA:-}
