#!/bin/bash
# LoRA-capacity ablation (2026-12-01, eleventh session). CTC rescoring showed the connector's own spelling reads real
# speech 17 points better than the LLM does, so the LLM is the weak reader of audio tokens. Does more LoRA help it?
# Both arms start from the shipped mini-v6 weights and run the same 600 stage-2 steps (configs/mini/stage2.yaml) on
# the same clips (mini-v2c's FIRST, 9,200 clips, all rendered); they differ only in the adapters:
#   qv  : LoRA on q_proj, v_proj (as shipped; the control: what 600 more steps alone do)
#   all : LoRA on every linear of the LLM (q, k, v, o, gate, up, down); the new adapters start at zero (peft's B = 0),
#         so the arm starts from exactly v6's answers
# Each arm is scored greedily by `salmonn eval` on the card's 64 neural-voice test clips, the 542 Asterisk prompts
# (real speech, clip by clip) and the 64 spoken questions (QA@voice_qa) into $R/<arm>/eval/, and
# `scripts/mini/lora_ablation_table.py` writes every arm scored so far to scripts/mini/results/lora_ablation.json.
# Result (the card's "LoRA capacity"): ASR neural v6 37.1 %, qv 39.8 %, all 43.0 %; Asterisk 68.3 / 70.6 / 69.6 %;
# spoken QA same answer 13 / 17 / 19 of 51.
#   v6: the shipped weights scored the same way (ONLY="v6 qv all")
#   ONLY="qv all" bash scripts/mini/lora_ablation.sh [CORPUS]
set -euo pipefail
C=${1:-$HOME/.cache/salmonn/data/mini-v2}
R=${R:-$HOME/.cache/salmonn/runs/lora-ablation}
ENC=${ENC:-$HOME/.cache/salmonn/encoders/mini-v2}
STEPS=${STEPS:-300}  # per epoch; stage2.yaml runs 2 epochs
py=.venv/bin/python
PROMPTS=$PWD/src/salmonn/assets/mini/test_prompts.json  # the card's instructions (a trained run's infer.yaml has none)
A=$HOME/.cache/salmonn/data/asterisk.json  # real speech, a test set: nothing here trains on it
mkdir -p "$R"
[ -f "$A" ] || .venv/bin/salmonn data asterisk "$A"
$py scripts/mini/make_manifests.py "$C" --spoken-qa --first voice=3080,voice_qa=680,voice_mix=440 --stage2-per-task 800
$py -c "import sys; sys.path.insert(0, 'scripts/mini'); from pathlib import Path; from evaluate import manifest_for
for t in ('asr@voice', 'QA@voice_qa'): manifest_for(Path('$C'), t, 64, Path('$R'))"  # the card's clips
ALL="[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
NEW="[k_proj.lora,o_proj.lora,gate_proj.lora,up_proj.lora,down_proj.lora]"  # adapters v6 lacks
for ARM in ${ONLY:-qv all}; do
  case $ARM in
    v6|qv) X="" ;;  # v6: the shipped weights, scored by the same commands (no training)
    all) X="model.lora_target_modules=$ALL run.init_allow_missing=$NEW" ;;
  esac
  CFG=$([ $ARM = v6 ] && echo src/salmonn/assets/mini/config.yaml || echo "$R/$ARM/final/infer.yaml")
  [ $ARM = v6 ] || [ -f "$CFG" ] || .venv/bin/salmonn train configs/mini/stage2.yaml \
    datasets.train_ann_path=$C/stage2_train.jsonl datasets.valid_ann_path=$C/stage2_valid.jsonl \
    datasets.cache_dir=$ENC run.output_dir=$R/$ARM run.init_from=src/salmonn/assets/mini \
    run.iters_per_epoch=$STEPS $X ${RESUME:+--resume}
  for T in asr@voice QA@voice_qa asterisk; do
    M=$([ $T = asterisk ] && echo "$A" || echo "$R/manifests/$T.jsonl")
    TASK=$([ $T = asterisk ] && echo asr || echo "${T%@*}")
    .venv/bin/salmonn eval --config "$CFG" --manifest "$M" --task $TASK --no-java \
      --output "$R/$ARM/eval/$T" model.test_prompt_path=$PROMPTS
  done
done
$py scripts/mini/lora_ablation_table.py "$R"  # every arm scored so far -> scripts/mini/results/lora_ablation.json
