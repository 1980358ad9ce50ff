#!/usr/bin/env bash
# DPM-Solver++(2M) (and DDIM, through the same sampler loop) against an
# independent float64 numpy implementation of the paper's Algorithm 2
# (tests/ref/solver_ref.py), with a closed-form epsilon in place of the network,
# for the release and the ASan+UBSan builds of tests/tools/solver_dump.
# Run from the repo root after `make test-build`.
set -u
scratch="${DDPM_TEST_TMP:-/tmp}/solver_ref.$$"
rc=0
for flavour in build build-san; do
    tool="$flavour/tools/solver_dump"
    if [ ! -x "$tool" ]; then
        echo "not ok - $tool is missing (run make test-build)"
        rc=1
        continue
    fi
    /usr/bin/python3 tests/ref/solver_ref.py "$tool" "$scratch/$flavour" "$flavour" || rc=1
done
rm -rf "$scratch"
exit $rc
