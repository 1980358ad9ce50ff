#!/usr/bin/env bash
# Learned variances and the hybrid loss (model.learn_sigma) against an independent
# float64 numpy/PyTorch implementation of improved-diffusion's formulas
# (tests/ref/hybrid_ref.py): the learned log variance on a plain and a respaced
# process, an ancestral step with it, L_simple + (T/1000) L_vlb per sample, and its
# gradient w.r.t. the network output against PyTorch autograd (stop-gradient on the
# mean) and finite differences; once more under ASan+UBSan; then a perturbed
# gradient must fail the comparison.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/hybrid_ref"
PY=/usr/bin/python3
$PY tests/ref/hybrid_ref.py build/tools/hybrid_dump "$TMP/a" linear 1000 100
$PY tests/ref/hybrid_ref.py build/tools/hybrid_dump "$TMP/b" cosine 100 10,15
$PY tests/ref/hybrid_ref.py build-san/tools/hybrid_dump "$TMP/san" linear 1000 none \
    | sed 's/^\(not \)\{0,1\}ok - /&asan+ubsan: /'
if $PY tests/ref/hybrid_ref.py build/tools/hybrid_dump "$TMP/p" linear 1000 none --perturb \
    >"$TMP/perturb.log" 2>&1; then
    echo "not ok - a perturbed hybrid-loss gradient passed the comparison"
elif [ "$(grep -c '^not ok - .*d loss / d v at t = 0' "$TMP/perturb.log")" = 2 ]; then
    echo "ok - a gradient of v perturbed by 1e-3 (relative) fails both the autograd and the finite-difference comparison"
else
    echo "not ok - perturbed run failed for another reason: $(grep '^not ok' "$TMP/perturb.log" | head -3)"
fi
