#!/usr/bin/env bash
# Classifier-free guidance (ddpm-sample --guidance) against a float64 numpy formula
# (tests/ref/guidance_ref.py) on a small class-conditional U-Net, for w = 2 and for
# w = 0 (plain conditional), release and ASan+UBSan builds.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}"
for flavour in build build-san; do
    for w in 2 0; do
        out="$TMP/guidance.$flavour.$w.tns"
        if ! $flavour/tools/guidance_dump tests/configs/ref_class.yaml "$out" "$w" 3 >"$out.log" 2>&1; then
            echo "not ok - $flavour guidance_dump w=$w failed: $(head -3 "$out.log")"
            continue
        fi
        /usr/bin/python3 tests/ref/guidance_ref.py "$out" | sed "s/^\(ok\|not ok\) - /\1 - $flavour: /"
    done
done
