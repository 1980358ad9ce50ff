#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install the dependencies, build, train
# configs/fashion_mnist.yaml for a bounded demo, and sample a grid of images.
#   bash ops/demo.sh              (as root, or a user with sudo)
# Environment: DEMO_STEPS (default 1500), DEMO_OUT (default runs/fashion_mnist_demo),
# SAMPLE_STEPS (respaced sampling steps, default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${DEMO_STEPS:-1500}"
OUT="${DEMO_OUT:-runs/fashion_mnist_demo}"
SAMPLE_STEPS="${SAMPLE_STEPS:-100}"
bash ops/install-deps.sh
make -j"$(nproc)" all
echo "== training configs/fashion_mnist.yaml for $STEPS steps into $OUT (resumes if interrupted)"
build/ddpm-train configs/fashion_mnist.yaml training.steps="$STEPS" output.dir="$OUT" --resume auto
CKPT="$(ls "$OUT"/ckpt-*.ddpm | sort | tail -n 1)"
echo "== sampling 64 images with $SAMPLE_STEPS respaced steps from $CKPT"
build/ddpm-sample "$CKPT" -n 64 -b 64 --steps "$SAMPLE_STEPS" \
    --grid "$OUT/samples.png" --npz "$OUT/samples.npz"
echo "== done: loss curve in $OUT/metrics.jsonl, samples in $OUT/samples.png and $OUT/samples.npz"
