#!/usr/bin/env bash
# Measure the 5B training stages where GPUs are at hand: seconds per step and peak GPU memory per process, one
# sample per GPU (no gradient accumulation), random weights (nothing to download), synthetic clips at 81 frames,
# 704x1280. About 10 minutes on one H200 (SFT and teacher forcing; GR-DMD needs at least 2 such GPUs, see
# docs/benchmarks/training_5b.md). Each stage prints one "bench ..." line; compare it with
# `python -m chameleon_core.training.estimate --gpus N --global-batch N`.
#
#   GPUS=1 bash docs/benchmarks/training_5b_gpu.sh          # SFT and teacher forcing on one GPU
#   GPUS=8 bash docs/benchmarks/training_5b_gpu.sh          # all three stages on 8 GPUs
#
# The variables below change the size (a CPU smoke test of this script: DEVICE=cpu SIZE=tiny bash ...).
set -euo pipefail
GPUS=${GPUS:-1}
STEPS=${STEPS:-3}
SIZE=${SIZE:-5b}
if [ "$SIZE" = tiny ]; then
  FRAMES=9; WIDTH=64; HEIGHT=64; TIMEOUT=${TIMEOUT:-300}
else
  FRAMES=81; WIDTH=704; HEIGHT=1280; TIMEOUT=${TIMEOUT:-240}
fi
COMMON=(--set model.init=random:0 --set data.batch_size="$GPUS" --steps "$STEPS" --frames "$FRAMES"
        --width "$WIDTH" --height "$HEIGHT")
if [ -n "${DEVICE:-}" ]; then COMMON+=(--set run.device="$DEVICE"); fi
if [ "$SIZE" = tiny ]; then COMMON+=(--set model.param_dtype=fp32); fi

config() { if [ "$SIZE" = tiny ]; then echo "tiny_$1"; else echo "$1_5b"; fi; }

bench() {
  echo "== $1 ($GPUS GPU(s), $FRAMES frames ${WIDTH}x${HEIGHT})"
  timeout "$TIMEOUT" torchrun --nproc_per_node "$GPUS" -m chameleon_core.training bench --stage "$@" "${COMMON[@]}" \
    2>&1 | grep -E "bench |failed on rank|stopping" || echo "$1: no result (timed out after ${TIMEOUT} s or failed)"
}

bench sft --config "$(config sft)"
bench forcing --config "$(config forcing)"
if [ "$GPUS" -ge 2 ] || [ "$SIZE" = tiny ]; then
  # The reward decodes with a full-size random Wan2.2 VAE (its cost is part of a generator update).
  if [ "$SIZE" = tiny ]; then VAE=wan2.2-tiny; CHUNK=1; else VAE=wan2.2; CHUNK=3; fi
  bench dmd --config "$(config dmd)" --set dmd.teacher=random:1 --set dmd.reward=random \
    --set "dmd.extra.vae=random:$VAE" --set dmd.chunk_frames="$CHUNK" --set dmd.critic_per_generator=1
else
  echo "== dmd: skipped (generator, critic, teacher and EMA need at least 2 GPUs of 141 GB; GPUS=$GPUS)"
fi
