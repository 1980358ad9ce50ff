#!/usr/bin/env bash
# Runs every fuzz target (build/fuzz/fuzz_*, from `make fuzz`: the wire codecs and
# messages and every decoder) for SECONDS each, on a working corpus
# build/fuzz/corpus/<target> (kept between runs) seeded from the regression corpus
# tests/fuzz_corpus/<target>; prints libFuzzer's execution count and coverage; then
# merges back into the regression corpus only inputs that reach new edges (-merge=1
# with hit counters off, so each corpus stays at a few dozen small files). A crash
# stops the script; the input is kept as build/fuzz/crash-* to add to the corpus
# after the fix. Usage:
#   bash fuzz/run_fuzz.sh [SECONDS] [TARGET_SUBSTRING]
set -eu
cd "$(dirname "$0")/.."
T="${1:-60}"
ONLY="${2:-}"
work=build/fuzz/corpus
for bin in build/fuzz/fuzz_*; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    name="$(basename "$bin")"
    case "$name" in *"$ONLY"*) ;; *) continue ;; esac
    corpus="tests/fuzz_corpus/$name"
    mkdir -p "$work/$name" "$corpus"
    cp "$corpus"/* "$work/$name"/ 2>/dev/null || true
    # wire messages are small; decoder inputs (checkpoints, images) are as large as
    # their seeds (libFuzzer's default max_len is the largest corpus file)
    len=()
    case "$name" in fuzz_wire_*) len=(-max_len=8192) ;; esac
    if ! "$bin" -max_total_time="$T" -print_final_stats=1 "${len[@]}" -timeout=10 \
            -rss_limit_mb=2048 -artifact_prefix=build/fuzz/ "$work/$name" >"$work/$name.log" 2>&1; then
        tail -60 "$work/$name.log"
        echo "fuzz: $name FAILED (input saved under build/fuzz/)"
        exit 1
    fi
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$')"
    cov="$(grep -o 'cov: [0-9]* ft: [0-9]*' "$work/$name.log" | tail -1)"
    "$bin" -merge=1 -use_counters=0 "${len[@]}" "$corpus" "$work/$name" >"$work/$name.merge.log" 2>&1
    echo "fuzz: $name: $execs executions in ${T} s ($cov), $(ls "$work/$name" | wc -l) inputs found," \
         "regression corpus now $(ls "$corpus" | wc -l) files"
done
