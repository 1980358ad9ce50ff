#!/usr/bin/env bash
# The C U-Net against the independent PyTorch reference (tests/ref/unet_ref.py):
# output and every parameter gradient of L_simple, for the fashion_mnist model and
# for a small 3-channel model with attention and channel changes in every block
# type, and for a small model with learned variances (model.learn_sigma); then
# the same comparison with one gradient perturbed must fail.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}"
PY=/usr/bin/python3
run_ref() {   # label config N [build dir] [KEY=VALUE...]
    local label="$1" cfg="$2" n="$3" bdir="${4:-build}"
    if ! $bdir/tools/unet_ref_dump "$cfg" "$TMP/$label.tns" "$n" 4321 "${@:5}" >"$TMP/$label.dump.log" 2>&1; then
        echo "not ok - $label: unet_ref_dump failed: $(cat "$TMP/$label.dump.log")"
        return
    fi
    if $PY tests/ref/unet_ref.py "$TMP/$label.tns" >"$TMP/$label.ref.log" 2>&1; then
        echo "ok - $label: C U-Net output and all gradients match PyTorch within 1e-4 ($(grep '^# ' "$TMP/$label.ref.log" | sed 's/^# //'))"
    else
        echo "not ok - $label: C U-Net differs from PyTorch:"
        grep -v '^ok' "$TMP/$label.ref.log" | head -20
    fi
    # per-tensor errors for the record (not counted as separate checks)
    sed 's/^ok - /#   /; s/^not ok - /#   FAIL /' "$TMP/$label.ref.log" | head -400
}
run_ref fashion_mnist configs/fashion_mnist.yaml 2
run_ref small_rgb tests/configs/ref_small.yaml 3
# learned variances: conv_out has 2 x in_channels outputs (eps, then v); the loss
# is an MSE over all of them, so v's gradient path is compared too
run_ref learn_sigma tests/configs/bpd_tiny.yaml 2 build model.learn_sigma=true
# Both again with every 3x3 stride-1 convolution as Winograd (auto takes it only
# from 128 channels on, which neither model has): F(2x2, 3x3) throughout, then
# the forward's F(4x4, 3x3) on every map (backward stays F(2x2)).
DDPM_CONV=winograd2 run_ref fashion_mnist_winograd configs/fashion_mnist.yaml 2
DDPM_CONV=winograd2 run_ref small_rgb_winograd tests/configs/ref_small.yaml 3
DDPM_CONV=winograd4 run_ref fashion_mnist_winograd4 configs/fashion_mnist.yaml 2
DDPM_CONV=winograd4 run_ref small_rgb_winograd4 tests/configs/ref_small.yaml 3
# The same computation under AddressSanitizer + UndefinedBehaviorSanitizer.
run_ref small_rgb_san tests/configs/ref_small.yaml 2 build-san
# A class-conditional model (3 classes + the null label): 5 images with labels
# 0,1,2,null,0, so the label embedding's gradient sums a repeated label.
run_ref class_cond tests/configs/ref_class.yaml 5
run_ref class_cond_san tests/configs/ref_class.yaml 5 build-san

# bf16 mixed precision (training.precision: bf16) against float64 with bf16
# emulated (tests/ref/unet_ref_bf16.py has the criterion and why); then with the
# convolutions left exact in the emulation, which must fail.
if build/tools/unet_ref_dump tests/configs/ref_small.yaml "$TMP/small_bf16.tns" 3 4321 bf16 \
        >"$TMP/small_bf16.dump.log" 2>&1; then
    if $PY tests/ref/unet_ref_bf16.py "$TMP/small_bf16.tns" >"$TMP/small_bf16.ref.log" 2>&1; then
        echo "ok - small_rgb_bf16: C bf16 U-Net's output and gradient errors are bf16-sized against emulated bf16 ($(grep -c '^ok' "$TMP/small_bf16.ref.log") checks; $(grep 'all .* nonzero' "$TMP/small_bf16.ref.log" | sed 's/^ok - //'))"
    else
        echo "not ok - small_rgb_bf16: C bf16 U-Net against emulated bf16:"
        grep -v '^ok' "$TMP/small_bf16.ref.log" | head -20
    fi
    sed 's/^ok - /#   /; s/^not ok - /#   FAIL /' "$TMP/small_bf16.ref.log" | head -4
    if $PY tests/ref/unet_ref_bf16.py "$TMP/small_bf16.tns" --exact conv2d >"$TMP/bf16x.log" 2>&1; then
        echo "not ok - the bf16 comparison passed against a reference with exact convolutions"
    else
        echo "ok - the bf16 comparison fails against a reference whose convolutions are exact ($(grep -c '^not ok' "$TMP/bf16x.log") tensors out)"
    fi
else
    echo "not ok - small_rgb_bf16: unet_ref_dump failed: $(cat "$TMP/small_bf16.dump.log")"
fi

# The comparison must be able to fail: perturb one gradient of the small model.
if $PY tests/ref/unet_ref.py "$TMP/small_rgb.tns" --perturb down.1.block.0.conv1.weight >"$TMP/perturb.log" 2>&1; then
    echo "not ok - a perturbed gradient passed the PyTorch comparison"
else
    if grep -q '^not ok - grad down.1.block.0.conv1.weight' "$TMP/perturb.log"; then
        echo "ok - a perturbed gradient (down.1.block.0.conv1.weight) fails the comparison"
    else
        echo "not ok - perturbed run failed for another reason: $(head -5 "$TMP/perturb.log")"
    fi
fi
if $PY tests/ref/unet_ref.py "$TMP/class_cond.tns" --perturb label_emb.weight >"$TMP/perturb_label.log" 2>&1; then
    echo "not ok - a perturbed label-embedding gradient passed the PyTorch comparison"
elif grep -q '^not ok - grad label_emb.weight' "$TMP/perturb_label.log"; then
    echo "ok - a perturbed gradient (label_emb.weight) fails the comparison"
else
    echo "not ok - perturbed label run failed for another reason: $(head -5 "$TMP/perturb_label.log")"
fi
