#!/usr/bin/env bash
# Rebuild every bundled file of the embedded Crafter world from seeds, on a CPU:
#   recordings -> VQ tokenizer -> world model, the two IDMs, the NFD model, the dream env's reward heads, the
#   start-scene pool, the suite, the post-training prompts, the post-trained model, their SHA256SUMS and the
#   leaderboard's seed bundles.
# Usage: scripts/build_embedded.sh [WORK_DIR]   (default runs/embedded; `make embedded` runs it)
# The model card (worldmodels/bundled/MODEL_CARD.md) records what one run of this script measured.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # a failed step stops the trainings running in the background
RLIR=${RLIR:-.venv/bin/rlir}
PY=${PY:-.venv/bin/python}
WORK=${1:-runs/embedded}
MODELS=$WORK/models
mkdir -p "$MODELS"

# 1. Real Crafter played by the mixture behaviour policy (the result does not depend on --workers).
#    `data` trains the tokenizer, the world model and the reward IDM; `heldout` (another seed) the held-out IDM
#    and the start scenes.
[ -f "$WORK/data/manifest.json" ] || $RLIR record crafter "$WORK/data" --frames 100000 --seed 0 --workers 2
[ -f "$WORK/heldout/manifest.json" ] || $RLIR record crafter "$WORK/heldout" --frames 40000 --seed 1 --workers 2
# v2 data (issue 14): 500,000 frames played by the `decorrelated` policy, whose action at t is much less predictable
# from the frames before it than the mixture's (bench/action_predictability.py; a world model trained on persistent
# actions learns to continue the past motion and ignore the action token); resumable (--resume auto keeps finished shards).
[ -f "$WORK/data-v2/manifest.json" ] || $RLIR record crafter "$WORK/data-v2" --frames 500000 --seed 0 \
  --policy decorrelated --workers 2 --resume auto --no-progress
# Post-training prompts (bench/posttrain_demo.py): other worlds than the benchmark's.
[ -f "$WORK/train-suite/manifest.json" ] || $RLIR suite build-crafter "$WORK/train-suite" --name crafter-train \
  --items 512 --seed 77
# ... and the post-training probe's (logging.eval_every; seed 78): neither the training prompts nor the benchmark.
[ -f "$WORK/val-suite/manifest.json" ] || $RLIR suite build-crafter "$WORK/val-suite" --name crafter-val \
  --items 64 --seed 78

# 2. The VQ tokenizer (72x72 -> 9x9 tokens, 512 codes).
$RLIR train tokenizer --data "$WORK/data" --out "$MODELS/crafter-vq.safetensors" --steps 5000 --eval-every 2500 --seed 0 \
  --threads 1 --no-progress

# 2b. Data of tokenizer v2 (issue 14): the first 30,000 frames of the v2 data (the same seed and shard size record the
#     same six shards) to train on, and another recording of the same policy (seed 101) to score by day and night.
#     (Plain VQ training on it, scripts/crafter-vq-v2.json, reached 22.4 dB and 9% stable tokens: see the model card.)
[ -f "$WORK/data-v2-tok/manifest.json" ] || $RLIR record crafter "$WORK/data-v2-tok" --frames 30000 --seed 0 \
  --policy decorrelated --workers 2 --resume auto --no-progress
[ -f "$WORK/tok-eval-v2/manifest.json" ] || $RLIR record crafter "$WORK/tok-eval-v2" --frames 20000 --seed 101 \
  --policy decorrelated --policy-kwargs '{"p_random": 0.5}' --workers 2 --resume auto --no-progress
# 2c. Tokenizer v2 under pattern supervision (issue 14; bundled as crafter-vq-v2.safetensors, not yet the default): the
#     codes are fixed from the same training frames' exact 8x8 cell patterns (near-duplicate tints within 2 levels RMS
#     share one; 1024 codes), the encoder learns them as a classifier and the decoder renders them
#     (worldmodels/training/tokenizer_patterns.py, scripts/crafter-vq-v2-patterns.json). One BLAS thread as well: the
#     table's k-means codes differ in their last bits with the thread count, and with them the trained weights.
OMP_NUM_THREADS=1 $RLIR train tokenizer --data "$WORK/data-v2-tok" --eval-data "$WORK/tok-eval-v2" \
  --out "$MODELS/crafter-vq-v2p.safetensors" \
  --vq-config scripts/crafter-vq-v2-patterns.json --supervision patterns --merge-levels 2 --steps 3600 --batch-size 16 \
  --lr 2e-3 --eval-every 600 --eval-frames 512 --seed 0 --threads 1 --no-progress --resume auto
$PY bench/tokenizer_quality.py "$MODELS/crafter-vq-v2p.safetensors" --data "$WORK/tok-eval-v2" --frames 4000 \
  --out "$MODELS/crafter-vq-v2p.quality.json"
# 2d. Its decoder fine-tuned with the tokens frozen (issue 14; shipped as crafter-vq-v2 and inside crafter-mineworld
#     and crafter-mineworld-rlir since 2026-12-07): the encoder and codebook stay bit for bit, so every frame tokenizes
#     as before and the world model below is unaffected; the first 100,000 frames of the v2 recording (the same seed
#     and shard size record the same first shards as data-v2), 5,000 steps then extended to 10,000 (--resume auto on
#     the longer schedule), both cores.
[ -f "$WORK/data-v2-100k/manifest.json" ] || $RLIR record crafter "$WORK/data-v2-100k" --frames 100000 --seed 0 \
  --policy decorrelated --workers 2 --resume auto --no-progress
vq_decoder() {
  $RLIR train tokenizer --supervision decoder --init "$MODELS/crafter-vq-v2p.safetensors" --data "$WORK/data-v2-100k" \
    --eval-data "$WORK/tok-eval-v2" --out "$MODELS/crafter-vq-v2d.safetensors" --batch-size 32 --lr 5e-4 --warmup 200 \
    --eval-every 500 --eval-frames 1024 --seed 0 --threads 2 --no-progress --resume auto "$@"
}
[ -f "$MODELS/crafter-vq-v2d.json" ] || vq_decoder --steps 5000
vq_decoder --steps 10000
$PY bench/tokenizer_quality.py "$MODELS/crafter-vq-v2d.safetensors" --data "$WORK/tok-eval-v2" --frames 4000 \
  --out "$MODELS/crafter-vq-v2d.quality.json"

# 3. The world model (one thread) next to the two IDMs (one thread each, one after the other): the 2 cores stay busy
#    without OpenMP threads of different jobs waiting on each other.
#    v1 (bundled as crafter-mineworld-v1, the baseline of docs/benchmarks.md): 100k frames, tokenizer v1.
$RLIR train worldmodel --data "$WORK/data" --tokenizer "$MODELS/crafter-vq.safetensors" \
  --out "$MODELS/crafter-mineworld-v1.safetensors" --seed 0 --threads 1 --no-progress &
wm=$!
$RLIR train idm --data "$WORK/data" --split train --width 48 --seed 1 --threads 1 --eval-data "$WORK/heldout" \
  --out "$MODELS/crafter-idm-reward.safetensors" --name crafter-idm-reward
$RLIR train idm --data "$WORK/heldout" --width 64 --seed 2 --threads 1 --eval-data "$WORK/data" \
  --out "$MODELS/crafter-idm-heldout.safetensors" --name crafter-idm-heldout
wait $wm
# 3b. World model v2 (issue 14; bundled as crafter-mineworld): the same architecture on the 500k-frame v2 data in the
#     tokens of tokenizer v2, both cores: 3,000 steps of 8 windows of 8 frames (16.1M tokens; resumable), then the
#     same run extended to 6,000 steps (32.1M tokens): a larger --steps with --resume auto continues it on the
#     6,000-step schedule (a warm restart from lr/10 to 0.57 lr, the batches a 6,000-step run draws), compiled.
wm_v2() {
  $RLIR train worldmodel --data "$WORK/data-v2" --tokenizer "$MODELS/crafter-vq-v2p.safetensors" \
    --out "$MODELS/crafter-mineworld.safetensors" --size small --batch-size 8 --lr 1.5e-3 --warmup 150 \
    --eval-every 500 --seed 0 --threads 2 --no-progress --resume auto "$@"
}
[ -f "$MODELS/crafter-mineworld.json" ] || wm_v2 --steps 3000  # the summary is written when a run finishes
wm_v2 --steps 6000 --compile
# Its default decoding, stored in the file (envs, `rlir eval` and `rlir demo` use it unless told otherwise; models
# post-trained from it inherit it): top-p 0.9, chosen on crafter-train with a reward IDM, never on the benchmark
# (docs/benchmarks.md §1).
$PY scripts/set_default_sampling.py "$MODELS/crafter-mineworld.safetensors" --top-p 0.9
# ... and the fine-tuned decoder of 2d (the shipped crafter-mineworld-rlir was post-trained before the decoder
# existed and got it afterwards, its comparison rescored: posttrain_summary.py --rescore; a rebuild post-trains with it).
$PY scripts/replace_tokenizer_decoder.py "$MODELS/crafter-vq-v2d.safetensors" "$MODELS/crafter-mineworld.safetensors"
# 3b, continued: 6,000 more steps as a warm start (since 2026-12-07, late evening): its transformer, a fresh AdamW
#     (peak lr 6e-4, 150 warm-up steps, cosine to lr/10), batches drawn from a stream of the init's own (not those that
#     trained it), the same seed and so the same validation episodes; the output keeps the default decoding and the
#     decoder. It is the shipped crafter-mineworld (step 6).
[ -f "$MODELS/crafter-mineworld-12k.json" ] || $RLIR train worldmodel --data "$WORK/data-v2" \
  --tokenizer "$MODELS/crafter-vq-v2d.safetensors" --init "$MODELS/crafter-mineworld.safetensors" \
  --out "$MODELS/crafter-mineworld-12k.safetensors" --steps 6000 --batch-size 8 --lr 6e-4 --warmup 150 \
  --eval-every 500 --seed 0 --threads 2 --compile --no-progress --resume auto

# 3c. The reward IDM ensemble of post-training (issue 15; `crafter-idm-ensemble`): three IDMs, each trained on its own
#     100,000-frame recording of the v2 policy (seeds 201, 202, 203: disjoint from each other, from the world model's
#     data and from the held-out IDM's), one thread each, side by side.
for seed in 201 202 203; do
  [ -f "$WORK/idm-v2-s$seed/manifest.json" ] || $RLIR record crafter "$WORK/idm-v2-s$seed" --frames 100000 --seed $seed \
    --policy decorrelated --workers 2 --resume auto --no-progress
done
train_reward_idm() {  # letter, recording seed
  $RLIR train idm --data "$WORK/idm-v2-s$2" --width 48 --seed $2 --threads 1 --eval-data "$WORK/tok-eval-v2" \
    --out "$MODELS/crafter-idm-reward-$1.safetensors" --name "crafter-idm-reward-$1" --no-progress
}
train_reward_idm a 201 & ida=$!
train_reward_idm b 202 & idb=$!
train_reward_idm c 203
wait $ida $idb

# 4. The learned reward and termination heads of RLIR-CrafterDream-v0, trained on real frames and on frames passed
#    through the world model's tokenizer (what they see in the dream env). The shipped heads learnt from tokenizer
#    v1's reconstructions (crafter-mineworld-v1); tokenizer v2's are closer to the real frames they also learn from.
$RLIR train reward-head --data "$WORK/data" --heldout "$WORK/heldout" \
  --tokenizer "$MODELS/crafter-mineworld-v1.safetensors" --out rlir_env/dream/crafter_heads.safetensors --steps 2500 \
  --threads 1

# 4b. The NFD model of the diffusion paradigm (issue 14): its own autoencoder, then the transformer, on the first
#     100,000 frames of the decorrelated policy (data-v2-100k, step 2d), 6,000 steps on 2 threads (~1 h 40 min; the
#     run was interrupted at step 2,000 and continued with the same command plus --resume auto), then 3,000 more as a
#     warm start (its autoencoder kept; ~40 min), which ships.
$RLIR train nfd --data "$WORK/data-v2-100k" --out "$MODELS/crafter-nfd.safetensors" --size nfd-crafter-small \
  --seed 0 --steps 6000 --threads 2 --no-progress --resume auto
$RLIR train nfd --data "$WORK/data-v2-100k" --init "$MODELS/crafter-nfd.safetensors" \
  --out "$MODELS/crafter-nfd-9k.safetensors" --seed 0 --steps 3000 --lr 5e-4 --warmup 150 --threads 2 --no-progress \
  --resume auto

# 5. Start scenes for RLIR-Crafter-v0 (from the held-out recording) and the suite (its own seeds; pinned in
#    evaluation/suites.py, so a different result fails loudly).
$RLIR record scenes "$WORK/heldout" rlir_env/crafter/start_scenes.npz --scenes 256 --scene-frames 4 --seed 5
$RLIR suite build-crafter evaluation/suite_data/crafter-af-v1 --items 256 --seed 33

# 6. Install the weights with their summaries and pins.
cp "$MODELS"/crafter-mineworld-v1.{safetensors,json} worldmodels/bundled/
cp "$MODELS/crafter-nfd-9k.safetensors" worldmodels/bundled/crafter-nfd.safetensors
cp "$MODELS/crafter-nfd-9k.json" worldmodels/bundled/crafter-nfd.json
cp "$MODELS/crafter-mineworld-12k.safetensors" worldmodels/bundled/crafter-mineworld.safetensors
cp "$MODELS/crafter-mineworld-12k.json" worldmodels/bundled/crafter-mineworld.json
cp "$MODELS/crafter-mineworld.run/curves.png" docs/crafter-mineworld-curves.png  # the first 6,000 steps (3b)
cp "$MODELS/crafter-mineworld-12k.run/curves.png" docs/crafter-mineworld-curves-12k.png  # the warm start (3b, continued)
cp "$MODELS/crafter-vq-v2d.safetensors" worldmodels/bundled/crafter-vq-v2.safetensors
cp "$MODELS/crafter-vq-v2d.json" worldmodels/bundled/crafter-vq-v2.json
cp "$MODELS"/crafter-idm-{reward,heldout,reward-a,reward-b,reward-c}.{safetensors,json} evaluation/idm/bundled/
(cd evaluation/idm/bundled && sha256sum crafter-idm-reward.safetensors crafter-idm-heldout.safetensors \
  crafter-idm-reward-{a,b,c}.safetensors > SHA256SUMS)
pin_models() {
  (cd worldmodels/bundled && sha256sum crafter-mineworld.safetensors crafter-mineworld-v1.safetensors \
    $(ls crafter-mineworld-rlir.safetensors 2>/dev/null) crafter-nfd.safetensors crafter-vq-v2.safetensors > SHA256SUMS)
}
rm -f worldmodels/bundled/crafter-mineworld-rlir.safetensors  # its base changed: post-train it again (6b)
pin_models
$RLIR suite info crafter-af-v1

# 6b. crafter-mineworld-rlir (issue 15): RLIR post-training of the installed crafter-mineworld with the reward IDM
#     ensemble plus a pixel term on the crafter-train prompts, probed on crafter-val
#     (scripts/crafter-mineworld-rlir.yaml; ~50 min on 2 cores; resumable).
$RLIR posttrain --config scripts/crafter-mineworld-rlir.yaml --data "$WORK/train-suite" --suite "$WORK/val-suite" \
  --out "$WORK/rlir" --resume auto --no-progress
cp "$WORK/rlir/model.safetensors" worldmodels/bundled/crafter-mineworld-rlir.safetensors
cp "$WORK/rlir/curves.png" docs/crafter-mineworld-rlir-curves.png
pin_models

# 7. The leaderboard's seed bundles (they pin the weights' sha256, so they follow every rebuild).
$RLIR demo --out "$WORK/demo" --no-leaderboard
$RLIR demo --model crafter-nfd --out "$WORK/demo" --no-leaderboard
$RLIR demo --model crafter-mineworld-v1 --out "$WORK/demo" --no-leaderboard
$RLIR demo --model crafter-mineworld-rlir --out "$WORK/demo" --no-leaderboard
for name in crafter-mineworld crafter-mineworld-v1 crafter-mineworld-rlir crafter-nfd ground-truth; do
  cp "$WORK/demo/$name/bundle.json" "leaderboard/seed_bundles/$name.json"
done
# crafter-mineworld-rlir's run summary: its curves, probe and the paired comparison with its base (seed 0), the base
# sampled as the post-trained model samples (temperature 1, untruncated; its own default is top-p 0.9).
$RLIR eval --model crafter-mineworld --suite crafter-af-v1 --idm crafter-idm-heldout --num-envs 64 --seed 0 --top-p 1 \
  --out "$WORK/demo/crafter-mineworld-t1" --no-videos --no-progress
$PY scripts/posttrain_summary.py "$WORK/rlir" "$WORK/demo/crafter-mineworld-t1" "$WORK/demo/crafter-mineworld-rlir" \
  --out worldmodels/bundled/crafter-mineworld-rlir.json
echo "bundled files rebuilt; run 'make demo' to evaluate them"
