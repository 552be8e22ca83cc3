#!/bin/bash
# SALMONN-mini stages 0-2 from configs/mini/stage{0,1,2}.yaml on the mini-v2 corpus (a stage cut short goes on with
# `salmonn train <its yaml> <the same overrides> --resume`).
#   bash scripts/mini/train.sh [CORPUS]     (CORPUS: salmonn data synth CORPUS --size mini-v2)
# Environment: R run folder; FIRST the clips a partly rendered corpus held (make_manifests.py --first); CAP stage-2
# samples per task; EXTRA overrides for every stage, EXTRA0 for stage 0 only.
#   mini-v2c (shipped, 2026-11-30, 3rd session): the defaults below -- 9,200 clips (8.1 h), stage 0 1500 steps,
#     stage 1 800, stage 2 1200.
#   mini-v3 (candidate, 4th session; not shipped: scripts/mini/results/candidate_v3/): 11,800 clips (10.1 h), CTC
#     scale 32, the gender loss on query 1 in every stage, stage 0 1800 steps:
#     R=runs/mini-v3 FIRST=voice=5000,voice_qa=1080,voice_mix=720 EXTRA="run.ctc_scale=32 run.gender_weight=1 \
#     run.gender_query=1" EXTRA0=run.iters_per_epoch=900 bash scripts/mini/train.sh
# Scoring a result as the model card is scored: scripts/mini/score_candidate.sh.
set -euo pipefail
C=${1:-$HOME/.cache/salmonn/data/mini-v2}
R=${R:-runs/mini-v2c}
FIRST=${FIRST:-voice=3080,voice_qa=680,voice_mix=440}
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
