#!/usr/bin/env bash
# The Fashion-MNIST feature network's FID (bench/fmnist_fid.py, docs/evaluation.md):
# its float64 FID against scipy's sqrtm, numpy's eigenvalues and a closed form; its
# training code path on 1,024 images (seeded, bit-identical twice, accuracy
# recomputed); its `fid` command on .npz files and its refusals
# (tests/ref/fmnist_fid_ref.py). Not the full training: that is a benchmark step.
# Skipped only where Debian's PyTorch is missing.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/fmnist_fid"
PY=/usr/bin/python3
if ! $PY -c 'import torch, scipy' 2>/dev/null; then
    echo "skip - Debian's python3-torch / python3-scipy not importable under $PY"
    exit 0
fi
$PY tests/ref/fmnist_fid_ref.py "$TMP"
