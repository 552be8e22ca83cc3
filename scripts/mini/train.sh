#!/bin/bash
# SALMONN-mini stages 0-2 from configs/mini/stage{0,1,2}.yaml on the mini-v2 corpus (a stage cut short goes on with
# `salmonn train <its yaml> <the same overrides> --resume`).
#   bash scripts/mini/train.sh [CORPUS]     (CORPUS: salmonn data synth CORPUS --size mini-v2)
# Environment: R run folder; FIRST the clips a partly rendered corpus held (make_manifests.py --first); CAP stage-2
# samples per task; STAGES the stages to run (default "0 1 2"; a later stage starts from $R/stage<N-1>/final);
# EXTRA overrides for every stage, EXTRA0 / EXTRA1 / EXTRA2 for one stage; RESUME=1 continues each stage from its
# latest checkpoint (a stage with none starts from the beginning); ENC the frozen-Whisper output cache (default
# ~/.cache/salmonn/encoders/mini-v2, outside the work tree like the corpus: a later session resumes with both);
# MANIFESTS more make_manifests.py arguments (--add, --dev, --balance); INIT a checkpoint the first stage of STAGES
# starts from (mini-v8: mini-v6's, as the defaults train it or from git: `git show 8a64c50:src/salmonn/assets/mini/
# trainable.safetensors`).
#   v10 (candidate, 17th session, not shipped: scripts/mini/results/history/candidate_v10/): v9's stage 1 run on 240
#     steps and a v9 stage 2 with joined 8-29.5 s transcripts (wideband and phone band) and balanced gender samples:
#     salmonn data joined $D/voices-v3 $D/joined-long-v3 --seconds 8,29.5 --copies 3 --seed 1
#     salmonn data joined $D/voices-v3 $D/joined-phone-v3 --seconds 8,29.5 --copies 2 --seed 2 --audio $D/phone-v3
#     M="--add $D/voices-v3 $D/phone-v3 $D/joined-long-v3 $D/joined-phone-v3 $D/words-v3:2 $D/real-sounds \
#     --dev $D/voices-v3/dev.json --balance gender_recognition"
#     R=runs/mini-v10 FIRST= STAGES="1 2" INIT=runs/mini-v9/stage1/final MANIFESTS="$M" EXTRA1=run.iters_per_epoch=120 \
#     EXTRA2="run.iters_per_epoch=150 run.optims.init_lr=1.5e-4 run.optims.min_lr=1.5e-5" bash scripts/mini/train.sh
#   v11 (candidate, 17th session, not shipped: scripts/mini/results/history/candidate_v11/): v9's stage 2 again from
#     v9's stage 1 with phone-band copies of words-v3 (salmonn data phone $D/words-v3 $D/phone-words-v3) added as
#     $D/phone-words-v3:2 to v9's M; R=runs/mini-v11 STAGES=2 INIT=runs/mini-v9/stage1/final and v9's EXTRA2.
#   v12b (candidate, 18th session, not shipped: scripts/mini/results/history/candidate_v12/): v11's recipe with real
#     recorded speech instead (salmonn data real-speech $D/real-speech --copies 2; salmonn data phone $D/real-speech
#     $D/real-speech-phone) added as $D/real-speech:2 $D/real-speech-phone:2 to v9's M; R=runs/mini-v12b.
#   mini-v9 (16th session; chosen on dev over v8b and v8p: scripts/mini/results/history/candidate_v9/): v8's stage 1
#     run on for 600 steps and a v8b stage 2, both with three more corpora (configs/mini/README.md): phone-band copies
#     of voices-v3 (`salmonn data phone`), its clips joined into 8-25 s transcripts 3 times over (`salmonn data
#     joined`) and 1-3 word phrases twice over (`salmonn data synth --size words-v3`):
#     D=$HOME/.cache/salmonn/data; M="--add $D/voices-v3 $D/phone-v3 $D/joined-v3:3 $D/words-v3:2 $D/real-sounds \
#     --dev $D/voices-v3/dev.json"
#     R=runs/mini-v9 FIRST= STAGES="1 2" INIT=runs/mini-v8/stage1/final MANIFESTS="$M" EXTRA1=run.iters_per_epoch=300 \
#     EXTRA2="run.iters_per_epoch=150 run.optims.init_lr=1.5e-4 run.optims.min_lr=1.5e-5" bash scripts/mini/train.sh
#   v8p (candidate): v8b's stage 2 command with phone-v3 added (--add $D/voices-v3 $D/phone-v3 $D/real-sounds).
#   mini-v8b (shipped 2026-12-05, 15th session; chosen on dev over v8 and v8c-e: scripts/mini/results/history/
#     candidate_v8/): mini-v6 trained on, every rendered clip of mini-v2 (7,080 of 25,600), voices-v3's train split
#     and the real recordings' train split with 4 augmented copies (`salmonn data real-sounds DIR --copies 4`),
#     validated on voices-v3's dev; v8 = stage 1 1200 steps + stage 2 600 steps; v8b = v8's stage 1 + stage 2 300
#     steps at lr 1.5e-4:
#     M="--add $HOME/.cache/salmonn/data/voices-v3 $HOME/.cache/salmonn/data/real-sounds \
#     --dev $HOME/.cache/salmonn/data/voices-v3/dev.json"
#     R=runs/mini-v8 FIRST= STAGES="1 2" INIT=runs/mini-v6/stage2/final MANIFESTS="$M" EXTRA1=run.iters_per_epoch=600 \
#     EXTRA2=run.iters_per_epoch=300 bash scripts/mini/train.sh
#     R=runs/mini-v8b FIRST= STAGES=2 INIT=runs/mini-v8/stage1/final MANIFESTS="$M" \
#     EXTRA2="run.iters_per_epoch=150 run.optims.init_lr=1.5e-4 run.optims.min_lr=1.5e-5" bash scripts/mini/train.sh
#   v8c / v8d (candidates): v8b's stage 2 run on from v8b (INIT=runs/mini-v8b/stage2/final) for 450 steps,
#     EXTRA2="run.iters_per_epoch=225 run.optims.init_lr=1.5e-4 run.optims.min_lr=1.5e-5"; v8d with
#     MANIFESTS="$M --balance gender_recognition" (400 male / 400 female gender samples instead of 519 / 281);
#     v8e: v8b's command with the balanced manifest.
#   mini-v6 (shipped 2026-12-01 to 12-05, 7th session): the defaults below -- all 13,960 rendered clips (11.7 h), CTC
#     scale 32, the gender loss on query 1 in every stage, stage 0 5400 steps, stage 1 3200, stage 2 1200.
#   mini-v5 (shipped 2026-12-01, 6th session): 11,800 clips (10.1 h), stage 0 1800 steps (mini-v3's stage 0):
#     R=runs/mini-v5 FIRST=voice=5000,voice_qa=1080,voice_mix=720 EXTRA0=run.iters_per_epoch=900 \
#     bash scripts/mini/train.sh
#   mini-v4 (shipped 2026-12-01, 5th session): mini-v5 with stage 1 1600 steps:
#     R=runs/mini-v4 FIRST=voice=5000,voice_qa=1080,voice_mix=720 EXTRA0=run.iters_per_epoch=900 \
#     EXTRA1=run.iters_per_epoch=800 bash scripts/mini/train.sh
#   mini-v3 (candidate, 4th session, not shipped: scripts/mini/results/history/candidate_v3/): mini-v5 with stage 1 800 steps:
#     R=runs/mini-v3 FIRST=voice=5000,voice_qa=1080,voice_mix=720 EXTRA0=run.iters_per_epoch=900 \
#     EXTRA1=run.iters_per_epoch=400 bash scripts/mini/train.sh
#   mini-v2c (shipped 2026-11-30 to 12-01): 9,200 clips (8.1 h), no gender loss, CTC scale 16, stages 1500 / 800 / 1200:
#     R=runs/mini-v2c FIRST=voice=3080,voice_qa=680,voice_mix=440 EXTRA="run.ctc_scale=16 run.gender_weight=0" \
#     EXTRA0=run.iters_per_epoch=750 EXTRA1=run.iters_per_epoch=400 bash scripts/mini/train.sh
#   mini-v7 (candidate, 8th session, not shipped: scripts/mini/results/history/candidate_v7/): mini-v6 with a hidden-512
#     Q-Former and stage 0 at lr 2e-3 over 2 x 1350 steps:
#     R=runs/mini-v7 EXTRA="model.qformer_hidden_size=512 model.qformer_num_attention_heads=8 \
#     model.qformer_intermediate_size=2048" EXTRA0="run.iters_per_epoch=1350 run.optims.init_lr=2e-3" \
#     bash scripts/mini/train.sh
# Scoring a result as the model card is scored: scripts/mini/score_candidate.sh.
set -euo pipefail
C=${1:-$HOME/.cache/salmonn/data/mini-v2}
R=${R:-runs/mini-v6}
FIRST=${FIRST-voice=6480,voice_qa=1400,voice_mix=960}
CAP=${CAP:-800}
ENC=${ENC:-$HOME/.cache/salmonn/encoders/mini-v2}
.venv/bin/python scripts/mini/make_manifests.py "$C" --spoken-qa --first "$FIRST" --stage2-per-task "$CAP" \
  ${MANIFESTS:-}
data() {
  echo "datasets.train_ann_path=$C/$1_train.jsonl datasets.valid_ann_path=$C/$1_valid.jsonl" \
    "datasets.cache_dir=$ENC"
}
STAGES=${STAGES:-0 1 2}
init() {
  if [ -n "${INIT:-}" ] && [ "$1" = "${STAGES%% *}" ]; then echo "run.init_from=$INIT"
  elif [ "$1" != 0 ]; then echo "run.init_from=$R/stage$(($1 - 1))/final"; fi
}
for N in $STAGES; do
  X=EXTRA$N
  .venv/bin/salmonn train configs/mini/stage$N.yaml $(data stage$N) run.output_dir=$R/stage$N $(init $N) \
    ${EXTRA:-} ${!X:-} ${RESUME:+--resume}
done
