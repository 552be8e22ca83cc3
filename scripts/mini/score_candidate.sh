#!/bin/bash
# Score a trained SALMONN-mini candidate as the model card is scored, without touching the card's stored outputs:
# export its weights into the package (the card's scripts score the shipped files), then write every result under
# OUT. Ship by moving OUT's files into scripts/mini/results/; otherwise `git checkout src/salmonn/assets/mini`.
#   bash scripts/mini/score_candidate.sh runs/mini-v3/stage2/final/trainable.safetensors runs/mini-v3/eval
set -euo pipefail
CKPT=$1
OUT=${2:-$(dirname "$(dirname "$(dirname "$CKPT")")")/eval}
W=${W:-$HOME/.cache/salmonn/eval/$(basename "$(dirname "$OUT")")}  # salmonn eval resumes from its files: one per run
C=${C:-$HOME/.cache/salmonn/data/mini-v2}
mkdir -p "$OUT"
py=.venv/bin/python
$py scripts/mini/export.py "$CKPT"
$py scripts/mini/card_numbers.py --corpus "$C" --limit 64 --work "$W" --out "$OUT/card_numbers.json" \
  --tasks asr@voice,gender_recognition@voice,asr@quiet,asr@events,QA@voice_qa
$py scripts/mini/card_numbers.py --limit 64 --work "$W-base" --out "$OUT/card_numbers.json"  # merged: same weights
$py scripts/mini/gender_probe.py --clips 300 --out "$OUT/gender_probe.json"
$py scripts/mini/spoken_qa_heard.py "$W-base/manifests/QA.jsonl" "$W/manifests/QA@voice_qa.jsonl" \
  --out "$OUT/spoken_qa_heard.json"
$py scripts/mini/long_form.py --limit 40 --modes pause:8 --out "$OUT/long_form_first40.json"
$py scripts/mini/long_form.py --modes pause:8 --out "$OUT/long_form_all.json"
$py scripts/mini/clip_long_form.py --whole-clips "$OUT/long_form_all.json" --out "$OUT/clip_long_form.json"
$py scripts/mini/real_events.py --work "$W-real" --out "$OUT/real_events.json"
$py scripts/mini/real_events_probe.py --out "$OUT/real_events_probe.json"
$py scripts/mini/real_voice_gender.py --out "$OUT/real_voice_gender.json"
$py scripts/mini/ctc_rescore.py --setting 0.4,2 --out "$OUT/ctc_rescore.json"
$py scripts/mini/long_form.py --modes pause:8 --num-beams 4 --out "$OUT/long_form_all_ctc_rescore.json" \
  generate.ctc_weight=0.4 generate.ctc_length_bonus=2
