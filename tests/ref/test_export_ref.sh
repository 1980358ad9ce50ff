#!/usr/bin/env bash
# ddpm-export's safetensors file in PyTorch (tests/ref/export_ref.py): a tiny
# Fashion-MNIST model (attention at 14x14) trained 3 steps at a large learning rate
# so that no weight is still at its initial value, exported with --weights params;
# the shipped module (export/ddpm_unet.py) loads it with its own reader and its
# epsilon equals the C network's (loaded as ddpm-sample loads it) within 1e-4; a
# perturbed weight must fail the comparison.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/export_ref"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
build/ddpm-train configs/tiny_fashion.yaml model.ch_mult=[1,2] training.batch_size=4 \
    training.steps=3 training.checkpoint_every=3 training.lr=0.002 training.warmup_steps=0 \
    output.dir="$TMP/run" >"$TMP/train.log" 2>&1 || echo "not ok - training failed: $(tail -2 "$TMP/train.log")"
CK="$TMP/run/ckpt-0000000003.ddpm"
build/ddpm-export "$CK" --weights params --out "$TMP/m.safetensors" 2>"$TMP/export.log" \
    || echo "not ok - ddpm-export failed: $(cat "$TMP/export.log")"
build/tools/ckpt_eps_dump "$CK" params 3 77 "$TMP/eps.tns" || echo "not ok - ckpt_eps_dump failed"
$PY tests/ref/export_ref.py "$TMP/m.safetensors" "$TMP/eps.tns" down.1.block.0.conv1.weight 2>&1 \
    || echo "not ok - export_ref.py exited with status $?"
# the same with every model option there is: learned variances (the output holds
# eps and v) and 10 classes (label_emb; the dump's labels include the null label)
build/ddpm-train configs/tiny_fashion.yaml model.ch_mult=[1,2] model.learn_sigma=true \
    model.num_classes=10 training.label_dropout=0.2 \
    data.labels_path=/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz training.batch_size=4 \
    training.steps=3 training.checkpoint_every=3 training.lr=0.002 training.warmup_steps=0 \
    output.dir="$TMP/run2" >"$TMP/train2.log" 2>&1 || echo "not ok - training (learn_sigma, classes) failed: $(tail -2 "$TMP/train2.log")"
CK="$TMP/run2/ckpt-0000000003.ddpm"
build/ddpm-export "$CK" --weights params --out "$TMP/m2.safetensors" 2>"$TMP/export2.log" \
    || echo "not ok - ddpm-export failed: $(cat "$TMP/export2.log")"
build/tools/ckpt_eps_dump "$CK" params 11 78 "$TMP/eps2.tns" || echo "not ok - ckpt_eps_dump failed"
$PY tests/ref/export_ref.py "$TMP/m2.safetensors" "$TMP/eps2.tns" label_emb.weight 2>&1 \
    || echo "not ok - export_ref.py (learn_sigma, classes) exited with status $?"
