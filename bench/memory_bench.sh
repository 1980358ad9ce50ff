#!/usr/bin/env bash
# Peak memory of one training step, C against PyTorch 1.13, at several micro-batches
# (docs/memory.md). Each point is a fresh process running one forward + backward +
# Adam step: bench/mem_step.c (C) and bench/torch_mem.py (the same U-Net from
# export/ddpm_unet.py, float32). Both report getrusage's ru_maxrss and the step's
# seconds per image. Runs are strictly one after the other (memory and cores are
# shared); PyTorch gets the OpenBLAS kernel the C program reports, as in run_bench.sh.
#
# A point whose estimated peak exceeds MEM_BENCH_LIMIT_MIB (default 20480) or what
# the machine has available now (MemAvailable less 1 GiB) is skipped, not swapped:
# C estimates from its activation size plus 4 parameter copies; PyTorch from its
# measured peaks at the smaller micro-batches (linear in the micro-batch).
#
# Environment: MEM_BENCH_CONFIG (configs/lsun256.yaml), MEM_BENCH_MICRO ("1 2 4";
# "1 2" is the fast mode), MEM_BENCH_THREADS (2), MEM_BENCH_LIMIT_MIB (20480),
# MEM_BENCH_BIN (build/bench/mem_step; another build of it, e.g. to measure "before"),
# MEM_BENCH_PRECISION (fp32; bf16: the C step in bf16 mixed precision, PyTorch stays fp32).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${MEM_BENCH_BIN:-build/bench/mem_step}"
PY=/usr/bin/python3
CONFIG="${MEM_BENCH_CONFIG:-configs/lsun256.yaml}"
MICROS="${MEM_BENCH_MICRO:-1 2 4}"
THREADS="${MEM_BENCH_THREADS:-2}"
LIMIT="${MEM_BENCH_LIMIT_MIB:-20480}"
PREC="${MEM_BENCH_PRECISION:-fp32}"
case "$PREC" in fp32|bf16) ;; *) echo "memory_bench.sh: MEM_BENCH_PRECISION='$PREC': expected fp32 or bf16" >&2; exit 1 ;; esac
[ -x "$BIN" ] || make "$BIN" >/dev/null
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

key() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }
avail_mib() { awk '$1 == "MemAvailable:" { printf "%d", $2 / 1024 - 1024 }' /proc/meminfo; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }

KERNEL=""
tm_prev="" tp_prev="" tm_last="" tp_last=""
rows=()
for m in $MICROS; do
    lim="$(min "$LIMIT" "$(avail_mib)")"
    echo "# $CONFIG micro $m: C (limit $lim MiB)" >&2
    c_rss="skipped" c_spi="-" c_act="-"
    set +e
    "$BIN" "$CONFIG" "$m" --threads "$THREADS" --limit-mib "$lim" --precision "$PREC" >"$OUT/c_$m"
    rc=$?
    set -e
    if [ $rc -eq 0 ]; then
        c_rss="$(key "$OUT/c_$m" peak_rss_mib)" c_spi="$(key "$OUT/c_$m" s_per_image)"
        c_act="$(key "$OUT/c_$m" activation_mib)"
        KERNEL="$(key "$OUT/c_$m" kernel)"
    elif [ $rc -eq 3 ]; then
        c_act="$(key "$OUT/c_$m" activation_mib)"
        echo "# C micro $m skipped: estimate $(key "$OUT/c_$m" estimate_mib) MiB > $lim MiB" >&2
    else
        echo "memory_bench.sh: mem_step failed at micro $m" >&2; exit 1
    fi

    lim="$(min "$LIMIT" "$(avail_mib)")"
    est=0
    if [ -n "$tm_prev" ]; then
        est="$(awk -v m1="$tm_prev" -v p1="$tp_prev" -v m2="$tm_last" -v p2="$tp_last" -v m="$m" \
            'BEGIN { printf "%d", p2 + (p2 - p1) / (m2 - m1) * (m - m2) }')"
    elif [ -n "$tm_last" ]; then
        est="$(awk -v m1="$tm_last" -v p1="$tp_last" -v m="$m" 'BEGIN { printf "%d", p1 * m / m1 }')"
    fi
    t_rss="skipped" t_spi="-"
    if [ "$est" -gt "${lim%.*}" ]; then
        echo "# PyTorch micro $m skipped: estimate $est MiB > $lim MiB" >&2
    else
        echo "# $CONFIG micro $m: PyTorch (estimate $est MiB)" >&2
        OPENBLAS_CORETYPE="${KERNEL:-SkylakeX}" "$PY" bench/torch_mem.py "$CONFIG" "$m" \
            --threads "$THREADS" >"$OUT/t_$m"
        t_rss="$(key "$OUT/t_$m" peak_rss_mib)" t_spi="$(key "$OUT/t_$m" s_per_image)"
        tm_prev="$tm_last" tp_prev="$tp_last" tm_last="$m" tp_last="$t_rss"
    fi
    ratio="-"
    if [ "$c_rss" != skipped ] && [ "$t_rss" != skipped ]; then
        ratio="$(awk -v a="$c_rss" -v b="$t_rss" 'BEGIN { printf "%.2f", a / b }')"
    fi
    rows+=("| $m | $c_act | $c_rss | $c_spi | $t_rss | $t_spi | $ratio |")
done

echo "$CONFIG, one training step (forward + backward + Adam), $THREADS threads, C in $PREC, OpenBLAS ${KERNEL:-?}, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| micro-batch | C activations MiB | C peak RSS MiB | C s/image | PyTorch peak RSS MiB | PyTorch s/image | C/PyTorch RSS |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for r in "${rows[@]}"; do echo "$r"; done
