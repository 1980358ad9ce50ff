#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install the dependencies, build, train
# configs/fashion_mnist.yaml for a bounded demo, and sample a grid of images.
#   bash ops/demo.sh              (as root, or a user with sudo)
# Environment: DEMO_STEPS (default 400), DEMO_OUT (default runs/fashion_mnist_demo),
# SAMPLE_STEPS (respaced sampling steps, default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${DEMO_STEPS:-400}"
OUT="${DEMO_OUT:-runs/fashion_mnist_demo}"
SAMPLE_STEPS="${SAMPLE_STEPS:-100}"
bash ops/install-deps.sh
make -j"$(nproc)" all
echo "== training configs/fashion_mnist.yaml for $STEPS steps into $OUT (resumes if interrupted)"
# a grid of 16 samples every 100 steps (samples/step-<step>.png and TensorBoard), from
# the trained weights: the EMA is still warming up (below)
build/ddpm-train configs/fashion_mnist.yaml training.steps="$STEPS" output.dir="$OUT" \
    training.sample_every=100 training.sample_weights=params --resume auto
CKPT="$(ls "$OUT"/ckpt-*.ddpm | sort | tail -n 1)"
# A 400-step demo is too short for the EMA (decay 0.995 still averages in the first,
# untrained steps), so the main grid uses the trained weights; the EMA grid is drawn
# too, for comparison. Longer runs should sample the EMA weights (the default).
echo "== sampling 64 images with $SAMPLE_STEPS respaced steps from $CKPT"
# --grid-scale 3: the 8x8 grid of 28-pixel images is drawn 726 pixels wide
build/ddpm-sample "$CKPT" -n 64 -b 64 --steps "$SAMPLE_STEPS" --weights params \
    --grid "$OUT/samples.png" --grid-scale 3 --npz "$OUT/samples.npz"
build/ddpm-sample "$CKPT" -n 64 -b 64 --steps "$SAMPLE_STEPS" --weights ema \
    --grid "$OUT/samples_ema.png" --grid-scale 3 --npz none
echo "== done: samples in $OUT/samples.png (EMA: $OUT/samples_ema.png)"
echo "   grids drawn during training: $OUT/samples/step-*.png"
echo "   metrics: $OUT/metrics.jsonl; TensorBoard event files: $OUT/events.out.tfevents.*"
echo "   (on a workstation with TensorBoard: tensorboard --logdir $OUT)"
echo "   a picture of the run without TensorBoard: python3 ops/plot_metrics.py $OUT  (writes $OUT/loss.png)"
