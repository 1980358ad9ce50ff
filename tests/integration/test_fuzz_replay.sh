#!/usr/bin/env bash
# Replays every decoder fuzz target's regression corpus (tests/fuzz_corpus/fuzz_<name>/,
# seeds plus what `make fuzz-run` found) through the target's own checks, built with
# gcc under ASan+UBSan (build-san/fuzz-replay/fuzz_<name>, fuzz/replay_main.c).
# The wire targets are replayed by tests/unit/test_wire_corpus.c.
set -u
cd "$(dirname "$0")/../.."
n=0
for src in fuzz/fuzz_*.c; do
    name="$(basename "$src" .c)"
    case "$name" in fuzz_wire_*) continue ;; esac
    n=$((n + 1))
    bin="build-san/fuzz-replay/$name"
    if [ ! -x "$bin" ]; then
        echo "not ok - $name: $bin not built (make test-build)"
        continue
    fi
    corpus="tests/fuzz_corpus/$name"
    if [ ! -d "$corpus" ]; then
        echo "not ok - $name: no regression corpus $corpus"
        continue
    fi
    "$bin" "$name" "$corpus" 2>"${DDPM_TEST_TMP:-/tmp}/$name.replay.err"
    rc=$?
    if [ $rc -ne 0 ]; then
        tail -30 "${DDPM_TEST_TMP:-/tmp}/$name.replay.err"
        echo "not ok - $name: replay exited with status $rc"
    fi
done
[ "$n" -gt 0 ] || echo "not ok - no decoder fuzz targets under fuzz/"
