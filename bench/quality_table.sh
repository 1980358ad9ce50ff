#!/usr/bin/env bash
# The quality table of docs/evaluation.md: for one Fashion-MNIST checkpoint, draws N
# images per sampler row with ddpm-sample, times each row (wall time per image) and
# measures its FID against the 10,000 test images on the feature network of
# bench/fmnist_fid.py (trained and cached under build/ on first use), then prints a
# markdown table.
#
#   bash bench/quality_table.sh CKPT [ROW ...]
#   make bench-quality CKPT=runs/.../ckpt-1500.ddpm [ROWS="ddim:50 ddim:20"]
#
# A row is SAMPLER:STEPS[:OPTION...]:
#   ancestral:S      Algorithm 2 over S respaced steps (S = T: the paper's sampler)
#   ddim:S           DDIM (eta 0) over S steps
#   dpm-solver++:S   any other name X: ddpm-sample --sampler X --steps S
#   ...:NAME[=VALUE] more ddpm-sample options for that row: dpm-solver++:20:no-clip
#                    adds --no-clip, dpm-solver++:20:spacing=time adds --spacing time
#   real             no sampling: the first N training images (the real-vs-real floor)
# Default rows: ancestral:1000 ancestral:100 ddim:50 ddim:20 sde-dpm-solver++:20
# dpm-solver++:20 sde-dpm-solver++:10 dpm-solver++:10 (ancestral:1000 on 1,000 images takes about 2 hours of a 2-core
# machine).
#
# Environment: N (images per row, 1000), BATCH (ddpm-sample --batch, 64), WEIGHTS
# (ema | params, ema), SEED (0), THREADS (ddpm-sample --threads, 0: all cores),
# OUT (where the .npz, logs and times go; default build/quality/<checkpoint name>),
# FID_WEIGHTS (the feature network, default build/fmnist_features.pt), REUSE=1 (keep a row's .npz and time from an earlier run of the same settings
# instead of sampling again), SAMPLE_ARGS (more ddpm-sample options for every row),
# CHUNK (0: one ddpm-sample run per row; C > 0: each row drawn in ranges of C images
# with --first, image i depending only on the seed and i, so the merged .npz is the
# one run's image for image; with REUSE=1 a row stopped midway goes on from the
# ranges already drawn: ancestral:1000 on 1,000 images survives an interruption).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
SAMPLE=build/ddpm-sample
[ $# -ge 1 ] || { sed -n '2,26p' "$0" >&2; exit 2; }
CKPT="$1"; shift
[ -f "$CKPT" ] || { echo "quality_table.sh: $CKPT: no such checkpoint" >&2; exit 1; }
[ -x "$SAMPLE" ] || { echo "quality_table.sh: $SAMPLE missing (run make)" >&2; exit 1; }
ROWS=("$@")
[ ${#ROWS[@]} -gt 0 ] || ROWS=(ancestral:1000 ancestral:100 ddim:50 ddim:20 sde-dpm-solver++:20 dpm-solver++:20
                                  sde-dpm-solver++:10 dpm-solver++:10)
N="${N:-1000}" BATCH="${BATCH:-64}" WEIGHTS="${WEIGHTS:-ema}" SEED="${SEED:-0}"
THREADS="${THREADS:-0}" REUSE="${REUSE:-0}" CHUNK="${CHUNK:-0}"
[[ "$CHUNK" =~ ^[0-9]+$ ]] || { echo "quality_table.sh: CHUNK=$CHUNK: expected a count of images" >&2; exit 2; }
FID_WEIGHTS="${FID_WEIGHTS:-build/fmnist_features.pt}"
OUT="${OUT:-build/quality/$(basename "$CKPT" .ddpm)}"
mkdir -p "$OUT"

# ddpm-sample's options for a row (the empty string for "real"), or exit 2.
row_args() {
    if [ "$1" = real ]; then echo ""; return; fi
    local fields sampler steps extra="" f
    IFS=: read -r -a fields <<<"$1"
    sampler="${fields[0]}" steps="${fields[1]:-}"
    [[ ${#fields[@]} -ge 2 && "$sampler" =~ ^[a-z+-]+$ && "$steps" =~ ^[1-9][0-9]*$ ]] || {
        echo "quality_table.sh: row '$1': expected SAMPLER:STEPS[:OPTION...] (e.g. ddim:50," \
             "dpm-solver++:20:clip:spacing=time) or real" >&2
        exit 2; }
    for f in "${fields[@]:2}"; do
        [[ "$f" =~ ^[a-z-]+(=[A-Za-z0-9._-]+)?$ ]] || {
            echo "quality_table.sh: row '$1': option '$f' is not NAME or NAME=VALUE" >&2
            exit 2; }
        if [[ "$f" == *=* ]]; then extra+=" --${f%%=*} ${f#*=}"; else extra+=" --$f"; fi
    done
    case "$sampler" in
        ancestral) echo "--steps $steps$extra" ;;
        ddim) echo "--ddim --steps $steps$extra" ;;
        *) echo "--sampler $sampler --steps $steps$extra" ;;
    esac
}
for r in "${ROWS[@]}"; do row_args "$r" >/dev/null; done

# draw ROW ARGS COUNT FIRST NPZ: images FIRST..FIRST+COUNT-1 into NPZ (written whole
# or not at all), the wall seconds into NPZ.time, the grid of the first range
draw() {
    local grid=() t0 t1
    [ "$4" != 0 ] || grid=(--grid "$OUT/$tag.png")
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086  # args is a list of options
    "$SAMPLE" "$CKPT" $2 -n "$3" --first "$4" -b "$BATCH" --seed "$SEED" --weights "$WEIGHTS" \
        --threads "$THREADS" "${grid[@]}" --npz "$5.partial.npz" -q ${SAMPLE_ARGS:-} \
        2>"$5.log" || {
        grep "ddpm-sample:" "$5.log" | tail -2 >&2
        echo "quality_table.sh: row $1: ddpm-sample failed (log: $5.log)" >&2
        exit 1; }
    t1=$(date +%s.%N)
    mv "$5.partial.npz" "$5"
    echo "$t0 $t1" | awk '{ printf "%.1f\n", $2 - $1 }' >"$5.time"
}

echo "# $CKPT, $WEIGHTS weights, $N images per row, seed $SEED, batch $BATCH; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
TABLE="$OUT/table.md"
{
    echo "| row | ddpm-sample options | images | wall s | s / image | FID (test set) |"
    echo "| --- | --- | --- | --- | --- | --- |"
} >"$TABLE"
for r in "${ROWS[@]}"; do
    args="$(row_args "$r")"
    tag="${r//[^A-Za-z0-9]/_}_n${N}_${WEIGHTS}_s${SEED}"
    npz="$OUT/$tag.npz"
    if [ "$r" = real ]; then
        "$PY" bench/fmnist_fid.py write-real "$N" "$npz"
        echo "-" >"$OUT/$tag.time"
    elif [ "$REUSE" = 1 ] && [ -f "$npz" ] && [ -f "$OUT/$tag.time" ]; then
        echo "# $r: reusing $npz" >&2
    elif [ "$CHUNK" -gt 0 ] && [ "$CHUNK" -lt "$N" ]; then
        parts=()
        for ((first = 0; first < N; first += CHUNK)); do
            n=$((N - first < CHUNK ? N - first : CHUNK))
            part="$OUT/$tag.from$first.npz"
            parts+=("$part")
            if [ "$REUSE" = 1 ] && [ -f "$part" ] && [ -f "$part.time" ]; then
                echo "# $r: reusing images $first..$((first + n - 1)) ($part)" >&2
                continue
            fi
            echo "# $r: images $first..$((first + n - 1)): ddpm-sample $args (load $(cut -d' ' -f1 /proc/loadavg))" >&2
            draw "$r" "$args" "$n" "$first" "$part"
        done
        "$PY" - "$npz" "${parts[@]}" <<'PY'
import sys, numpy as np
out, parts = sys.argv[1], sys.argv[2:]
np.savez(out, arr_0=np.concatenate([np.load(p)["arr_0"] for p in parts]))
PY
        cat "${parts[@]/%/.time}" | awk '{ s += $1 } END { printf "%.1f\n", s }' >"$OUT/$tag.time"
    else
        echo "# $r: ddpm-sample $args (load $(cut -d' ' -f1 /proc/loadavg))" >&2
        draw "$r" "$args" "$N" 0 "$npz"
        mv "$npz.time" "$OUT/$tag.time"
    fi
    secs="$(cat "$OUT/$tag.time")"
    per="-"
    [ "$secs" = "-" ] || per="$(awk -v s="$secs" -v n="$N" 'BEGIN { printf "%.3f", s / n }')"
    "$PY" bench/fmnist_fid.py fid "$npz" --weights "$FID_WEIGHTS" >"$OUT/$tag.fid"
    fid="$(awk '$1 == "fid" { printf "%.2f", $2 }' "$OUT/$tag.fid")"
    echo "# $r: $secs s, FID $fid; $(sed -n 3p "$OUT/$tag.fid")" >&2
    echo "| $r | ${args:-(training images)} | $N | $secs | $per | $fid |" >>"$TABLE"
done
echo "# load at the end $(cut -d' ' -f1-3 /proc/loadavg); table in $TABLE" >&2
cat "$TABLE"
