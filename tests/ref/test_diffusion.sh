#!/usr/bin/env bash
# Diffusion tables and sampler steps against an independent numpy float64
# reference (tests/ref/diffusion_ref.py), for the release and the ASan+UBSan
# builds of tests/tools/diffusion_dump. Run from the repo root after `make test-build`.
set -u
scratch="${DDPM_TEST_TMP:-/tmp}/diffusion_ref.$$"
rc=0
for flavour in build build-san; do
    tool="$flavour/tools/diffusion_dump"
    if [ ! -x "$tool" ]; then
        echo "not ok - $tool is missing (run make test-build)"
        rc=1
        continue
    fi
    /usr/bin/python3 tests/ref/diffusion_ref.py "$tool" "$scratch/$flavour" "$flavour" || rc=1
done
rm -rf "$scratch"
exit $rc
