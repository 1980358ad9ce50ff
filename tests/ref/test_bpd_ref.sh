#!/usr/bin/env bash
# Bits/dim (common/eval/bpd.h) against an independent float64 implementation of the
# authors' formulas on the same weights, images and noise (tests/ref/bpd_ref.py):
# both variance kinds, with and without clipping, strided estimates, a model with
# learned variances (model.learn_sigma), a class-conditional model; once more under
# ASan+UBSan; then a perturbed term must fail the comparison.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}"
PY=/usr/bin/python3
CFG=tests/configs/bpd_tiny.yaml
# beta_start / beta_end of $CFG, passed exactly as written there
BS=0.001
BE=0.2
run() {   # label bdir kind clip stride seed [KEY=VALUE...]
    local label="$1" bdir="$2"
    if ! $bdir/tools/bpd_ref_dump $CFG "$TMP/$label.tns" 2 "$6" "$3" "$4" "$5" "${@:7}" >"$TMP/$label.log" 2>&1; then
        echo "not ok - $label: bpd_ref_dump failed: $(cat "$TMP/$label.log")"
        return
    fi
    $PY tests/ref/bpd_ref.py "$TMP/$label.tns" $BS $BE | sed "s/^\(not \)\{0,1\}ok - /&$label: /"
}
run bpd_beta_clip build beta 1 5 7
run bpd_betatilde_noclip build beta_tilde 0 7 8
run bpd_san build-san beta 1 3 9
# learned variances (improved-diffusion's LEARNED_RANGE): the kind is then unused
run bpd_learned_sigma build beta 1 5 10 model.learn_sigma=true
# a class-conditional model, each image's terms conditioned on its label (-log p(x | y))
run bpd_class_cond build beta 1 5 11 model.num_classes=3
if $PY tests/ref/bpd_ref.py "$TMP/bpd_beta_clip.tns" $BS $BE --perturb >"$TMP/perturb.log" 2>&1; then
    echo "not ok - a perturbed bits/dim term passed the comparison"
elif grep -q '^not ok - .*every term' "$TMP/perturb.log"; then
    echo "ok - a term perturbed by 1e-6 (relative) fails the comparison"
else
    echo "not ok - perturbed run failed for another reason: $(head -3 "$TMP/perturb.log")"
fi
