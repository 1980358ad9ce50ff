#!/usr/bin/env bash
# `make bench`: the C training step and sampling forward pass against PyTorch 1.13
# on this machine, in fp32 and in bf16 mixed precision (C: training.precision
# bf16; PyTorch: CPU autocast to bfloat16, GroupNorm in fp32), plus the SGEMM and
# bf16 GEMM peaks, printed as one table (bench/report.py).
# C and PyTorch run one after the other, never at the same time, so they do not
# compete for the cores. PyTorch gets the same OpenBLAS kernel as the C programs
# (OPENBLAS_CORETYPE, see common/core/blas_setup.h): its linear layers and attention
# matmuls go through Debian's OpenBLAS, which otherwise falls back to Prescott.
#
# The host's speed drifts (the SGEMM peak has moved 25% between runs here), so the
# whole sequence runs BENCH_ROUNDS times, C and PyTorch alternating case by case,
# and the report gives medians over the rounds (and the ratio's range).
#
# Environment: BENCH_THREADS (2), BENCH_STEPS (7 timed), BENCH_WARMUP (2),
# BENCH_ROUNDS (3), BENCH_CASES ("fashion_mnist:64 cifar10:8").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bench/bench_step
PY=/usr/bin/python3
THREADS="${BENCH_THREADS:-2}"
STEPS="${BENCH_STEPS:-7}"
WARMUP="${BENCH_WARMUP:-2}"
ROUNDS="${BENCH_ROUNDS:-3}"
CASES="${BENCH_CASES:-fashion_mnist:64 cifar10:8}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

[ -x "$BIN" ] || { echo "run_bench.sh: $BIN missing (run make bench)" >&2; exit 1; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "run_bench.sh: BENCH_ROUNDS='$ROUNDS': expected a whole number >= 1" >&2; exit 1; }
for r in $(seq "$ROUNDS"); do
    "$BIN" sgemm --threads "$THREADS" >"$OUT/sgemm.r$r"
    KERNEL="$(awk '$1 == "kernel" { print $2 }' "$OUT/sgemm.r$r")"
    echo "# round $r/$ROUNDS: SGEMM done; OpenBLAS kernel $KERNEL, $THREADS threads" >&2
    for c in $CASES; do
        name="${c%%:*}" batch="${c##*:}"
        for mode in train forward; do
            for prec in fp32 bf16; do
                echo "# round $r: $name batch $batch $mode $prec: C, then PyTorch" >&2
                tag="${name}_${batch}_$mode"; [ $prec = bf16 ] && tag="${tag}_bf16"
                "$BIN" "$mode" "configs/$name.yaml" "$batch" --threads "$THREADS" --steps "$STEPS" \
                    --warmup "$WARMUP" --precision $prec >"$OUT/c_$tag.r$r"
                OPENBLAS_CORETYPE="$KERNEL" "$PY" bench/torch_step.py "$mode" "configs/$name.yaml" \
                    "$batch" --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" \
                    $([ $prec = bf16 ] && echo --bf16) >"$OUT/t_$tag.r$r"
            done
        done
    done
done
"$PY" bench/report.py "$OUT" "$ROUNDS" $CASES
