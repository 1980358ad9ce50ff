#!/usr/bin/env bash
# ddpm-train's 10 optimizer steps (warmup, clipping, Adam, EMA) against PyTorch on
# the very batches the C training run dumps: losses, final parameters and EMA within
# 1e-4 relative (tests/ref/optim_ref.py). Dropout is off here: the reference cannot
# redraw the C masks; dropout itself is checked in test_unet_ref.sh.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}"
OUT="$TMP/optim_run"
rm -rf "$OUT"
# The paper's lr. (At 10x that lr, tensors initialised at 1e-10 are pure Adam updates,
# and float32 rounding in their gradients moves them by up to 4e-4 relative: PyTorch
# in float32 differs from PyTorch in float64 by the same amount, so that is a limit of
# float32 training, not of this code.)
LR=0.0002 WARMUP=4 CLIP=1.0 EMA=0.9 STEPS=10
if ! build/ddpm-train configs/tiny_fashion.yaml model.dropout=0 training.steps=$STEPS \
        training.lr=$LR training.warmup_steps=$WARMUP training.grad_clip=$CLIP \
        training.ema_decay=$EMA training.batch_size=4 output.dir="$OUT" \
        --dump-batches "$TMP/optim.tns" >"$TMP/optim_train.log" 2>&1; then
    echo "not ok - ddpm-train with --dump-batches failed: $(tail -3 "$TMP/optim_train.log")"
    exit 0
fi
if /usr/bin/python3 tests/ref/optim_ref.py "$TMP/optim.tns" $LR $WARMUP $CLIP $EMA 1000 $STEPS \
        >"$TMP/optim_ref.log" 2>&1; then
    echo "ok - $STEPS optimizer steps match PyTorch (losses, parameters, EMA within 1e-4): $(grep '^# ' "$TMP/optim_ref.log" | sed 's/^# //')"
else
    echo "not ok - optimizer steps differ from PyTorch:"
    grep -v '^ok' "$TMP/optim_ref.log" | head -20
fi
grep '^ok - step\|^not ok - step' "$TMP/optim_ref.log" | sed 's/^ok - /#   /; s/^not ok - /#   FAIL /'
