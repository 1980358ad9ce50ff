#!/usr/bin/env bash
# Logs that read well in a file, grids you can see, a picture of the run:
# with stderr redirected to a file, ddpm-sample, ddpm-eval and ddpm-prep write
# plain progress lines (no carriage return); the training progress line has an
# ETA and the last checkpoint; ddpm-sample --grid-scale K equals the unscaled grid
# with every pixel repeated K x K (numpy); ops/plot_metrics.py writes loss.png.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/logs"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
plain_lines() {   # label, log, pattern, least count
    local cr n
    cr=$(tr -cd '\r' <"$2" | wc -c)
    n=$(grep -c -- "$3" "$2")
    if [ "$cr" = 0 ] && [ "$n" -ge "$4" ]; then
        ok "$1: stderr to a file holds $n plain progress lines, no carriage return"
    else
        fail "$1: $cr carriage returns, $n lines matching '$3' (want >= $4): $(head -c 300 "$2" | tr '\r' '|')"
    fi
}

build/ddpm-train configs/tiny_fashion.yaml model.ch_mult=[1,2] model.num_res_blocks=1 \
    diffusion.timesteps=20 training.batch_size=4 training.log_every=1 training.threads=1 \
    training.steps=4 training.checkpoint_every=2 output.dir="$TMP/run" 2>"$TMP/train.log" \
    || fail "training: $(tail -3 "$TMP/train.log")"
grep -q "^step 4/4 .* ETA 0s  ckpt step 2 [0-9hms]* ago$" "$TMP/train.log" \
    && grep -q "^step 1/4 .* ETA [0-9hms]*  no ckpt yet$" "$TMP/train.log" \
    && ok "training progress lines end with the ETA and the last checkpoint: '$(grep '^step 4/4' "$TMP/train.log" | sed 's/.*img\/s *//')'" \
    || fail "training progress line: $(grep '^step' "$TMP/train.log" | tail -2)"
CKPT="$TMP/run/ckpt-0000000004.ddpm"

# --- ddpm-sample: plain lines, and --grid-scale ---
build/ddpm-sample "$CKPT" --ddim -n 4 -b 2 --seed 1 --grid "$TMP/g1.png" --npz none --threads 1 \
    2>"$TMP/sample.log" || fail "ddpm-sample: $(tail -2 "$TMP/sample.log")"
plain_lines "ddpm-sample" "$TMP/sample.log" '^\[[#.]*\] *[0-9.]*%  images' 10
build/ddpm-sample "$CKPT" --ddim -n 4 -b 2 --seed 1 --grid "$TMP/g5.png" --grid-scale 5 --npz none \
    --threads 1 -q 2>"$TMP/sample5.log" || fail "ddpm-sample --grid-scale 5: $(tail -2 "$TMP/sample5.log")"
grep -q '%  images' "$TMP/sample5.log" && fail "-q still wrote progress: $(grep -m1 '%  images' "$TMP/sample5.log")"
$PY -c "
import sys; import numpy as np; from PIL import Image
a = np.asarray(Image.open(sys.argv[1])); b = np.asarray(Image.open(sys.argv[2]))
up = np.repeat(np.repeat(a, 5, axis=0), 5, axis=1)
sys.exit(0 if b.shape == up.shape and np.array_equal(b, up) and a.std() > 0 else 1)" "$TMP/g1.png" "$TMP/g5.png" \
    && ok "--grid-scale 5: the grid equals the unscaled one with each pixel repeated 5x5 (numpy), $(
        $PY -c "from PIL import Image; import sys; print('x'.join(map(str, Image.open(sys.argv[1]).size)))" "$TMP/g5.png") px" \
    || fail "--grid-scale 5 differs from the upsampled unscaled grid"
build/ddpm-sample "$CKPT" -n 1 --grid-scale 65 >"$TMP/bad.log" 2>&1 \
    && fail "--grid-scale 65 accepted" || ok "--grid-scale 65 refused: $(tail -1 "$TMP/bad.log")"

# --- ddpm-eval bpd ---
build/ddpm-eval bpd "$CKPT" --images 2 --stride 2 --batch 4 --threads 1 >"$TMP/eval.out" 2>"$TMP/eval.log" \
    || fail "ddpm-eval bpd: $(tail -2 "$TMP/eval.log")"
plain_lines "ddpm-eval bpd" "$TMP/eval.log" 'bpd: [0-9]*/[0-9]* network evaluations' 5

# --- ddpm-prep ---
$PY -c "
import struct, sys
import numpy as np
x = (np.arange(200 * 8 * 8) * 7 % 251).astype(np.uint8)
open(sys.argv[1], 'wb').write(struct.pack('>IIII', 0x803, 200, 8, 8) + x.tobytes())" "$TMP/imgs.idx"
build/ddpm-prep --input "$TMP/imgs.idx" --format idx --size 8 --channels 1 --out "$TMP/shards" \
    --threads 1 --records-per-shard 50 2>"$TMP/prep.log" || fail "ddpm-prep: $(tail -2 "$TMP/prep.log")"
plain_lines "ddpm-prep" "$TMP/prep.log" '^\[[#.]*\] *[0-9.]*%  [0-9]*/200 items' 5

# --- ops/plot_metrics.py ---
if $PY -c "import matplotlib" 2>/dev/null; then
    if $PY ops/plot_metrics.py "$TMP/run" >"$TMP/plot.log" 2>&1 \
       && $PY -c "from PIL import Image; import sys; im = Image.open(sys.argv[1]); sys.exit(0 if im.size[0] >= 800 else 1)" "$TMP/run/loss.png"; then
        ok "ops/plot_metrics.py wrote RUN_DIR/loss.png ($(tail -1 "$TMP/plot.log"))"
    else
        fail "ops/plot_metrics.py: $(tail -2 "$TMP/plot.log")"
    fi
else
    echo "skip - ops/plot_metrics.py: matplotlib is not installed (python3-matplotlib)"
fi
