#!/bin/bash
# The mini-v2 candidate of 2026-11-30 (not shipped: scripts/mini/results/candidate_v2b.json, model card), as it was
# trained: the partly rendered mini-v2 corpus (every quick clip + the first 1,840 voice, 400 voice_qa and 280
# voice_mix clips), stage 0 for 800 steps, stage 2 (no stage 1) for 900 steps, then 900 more from its weights.
#   bash scripts/mini/train_v2_candidate.sh [CORPUS]     (CORPUS: salmonn data synth CORPUS --size mini-v2)
set -euo pipefail
C=${1:-$HOME/.cache/salmonn/data/mini-v2}
R=runs/mini-v2
.venv/bin/python scripts/mini/make_manifests.py "$C" --spoken-qa --first voice=1840,voice_qa=400,voice_mix=280
data() { echo "datasets.train_ann_path=$C/$1_train.jsonl datasets.valid_ann_path=$C/$1_valid.jsonl datasets.cache_dir=${ENC:-$HOME/.cache/salmonn/encoders/mini-v2}"; }
ONE_QUERY="model.num_speech_query_token=1 run.ctc_query=null"  # the YAML's since v2c: 2 queries, CTC on query 0
.venv/bin/salmonn train configs/mini/stage0.yaml $(data stage0) $ONE_QUERY run.output_dir=$R/stage0 run.iters_per_epoch=400
.venv/bin/salmonn train configs/mini/stage2.yaml $(data stage2) $ONE_QUERY run.output_dir=$R/stage2 \
    run.init_from=$R/stage0/final run.iters_per_epoch=450
.venv/bin/salmonn train configs/mini/stage2.yaml $(data stage2) $ONE_QUERY run.output_dir=$R/stage2b \
    run.init_from=$R/stage2/final run.iters_per_epoch=450 run.optims.init_lr=3e-4 run.optims.warmup_steps=20 run.seed=1
# scored like the shipped weights (export writes into the package; git checkout restores the shipped file):
#   .venv/bin/python scripts/mini/export.py $R/stage2b/final/trainable.safetensors
#   .venv/bin/python scripts/mini/card_numbers.py --corpus $C --limit 64 --out scripts/mini/results/candidate_v2b.json \
#       --tasks asr@speech,asr@voice,gender_recognition@voice,gender_recognition@speech,sound_event,instrument,asr@quiet,asr@events,QA@voice_qa,asr@voice_mix,audiocaption,music_description,QA@qa
