#!/bin/bash
# Stage-0 ablation (2026-11-30, fourth session): 300 connector-only steps of configs/mini/stage0.yaml per variant on
# the stage-0 manifest train.sh writes with the mini-v3 candidate's FIRST (11,800 clips), scored by the CTC best
# path (ctc_wer.py) on 96 held-out ASR clips: the first 48 espeak-ng and the first 48 neural-voice ones. base is
# stage0.yaml (ctc_scale 16); mini-v3 took scale 32 from this ablation. Short runs favour variants that learn fast:
# they rank what to train long, they are not final WERs.
#   bash scripts/mini/stage0_ablation.sh [CORPUS]   -> scripts/mini/results/stage0_ablation/<variant>.json
set -euo pipefail
C=${1:-$HOME/.cache/salmonn/data/mini-v2}
R=${R:-runs/stage0-ablation}
OUT=scripts/mini/results/stage0_ablation
mkdir -p "$OUT" "$R"
TEST=$R/test_asr_96.jsonl
awk '/\/test\/speech\// && s++ < 48' "$C/test_asr.jsonl" > "$TEST"
awk '/\/test\/voice\// && v++ < 48' "$C/test_asr.jsonl" >> "$TEST"
declare -A VARIANTS=(
  [base]="run.ctc_scale=16"
  [scale32]="run.ctc_scale=32"
  [layers4]="run.ctc_scale=16 model.qformer_num_hidden_layers=4"
  [lr2e-3]="run.ctc_scale=16 run.optims.init_lr=2e-3"
  [both-queries]="run.ctc_scale=32 run.ctc_query=null"
)
declare -A QUERY=([both-queries]=null)  # the query ctc_wer.py reads (run.ctc_query; default 0)
for name in ${ONLY:-base scale32 layers4 lr2e-3 both-queries}; do
  q=${QUERY[$name]:-0}
  [ -f "$OUT/$name.json" ] && continue
  .venv/bin/salmonn train configs/mini/stage0.yaml datasets.train_ann_path=$C/stage0_train.jsonl \
    datasets.valid_ann_path= datasets.cache_dir=cache/mini-v2-encoders run.output_dir=$R/$name \
    run.iters_per_epoch=300 run.optims.max_epoch=1 run.save_every=0 run.valid_every=0 ${VARIANTS[$name]}
  .venv/bin/python scripts/mini/ctc_wer.py $R/$name/final/infer.yaml --manifest $TEST --limit 96 \
    $([ "$q" = null ] || echo --query $q) --out "$OUT/$name.json"
done
