#!/usr/bin/env bash
# Class-conditional training with label dropout and sampling with classifier-free
# guidance, end to end on Fashion-MNIST (its IDX label file): 2 workers over MPI
# equal the single process, a resume is bit-exact and logs a changed label_dropout,
# num_classes must match on resume, ddpm-sample draws one grid row per class (image
# i of `--class all` equals the same image drawn alone with --class i mod K),
# ddpm-eval bpd runs with the null label, and bad input is refused clearly.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/class_cond"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# the 10,000 test images and their labels: 6x cheaper to open than the training set
T10K=/usr/share/datasets/fashion-mnist/t10k
TRAIN=/usr/share/datasets/fashion-mnist/train
LABELS=$T10K-labels-idx1-ubyte.gz
CFG=configs/tiny_fashion.yaml
# ch 64: two channels per GroupNorm group (see test_distributed.sh); batch 5: shares 3+2
COND=(model.ch=64 model.ch_mult=[1,2] model.num_res_blocks=1 model.num_classes=10
      training.label_dropout=0.3 data.path=$T10K-images-idx3-ubyte.gz data.labels_path=$LABELS
      training.batch_size=5
      training.log_every=1 training.checkpoint_every=3 training.warmup_steps=2
      distributed.timeout_s=30)
ZERO=('attn[._][0-9]*\.k\.bias' 0.0012)
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
state() { build/tools/ckpt_state "$1" "$2" >/dev/null 2>&1; }
final() { ls "$1"/ckpt-*.ddpm 2>/dev/null | sort | tail -n 1; }
train() { build/ddpm-train $CFG "${COND[@]}" "$@"; }
expect_fail() {  # name, expected text, command...
    local name="$1" want="$2"; shift 2
    if "$@" >"$TMP/x.log" 2>&1; then fail "$name: accepted"
    elif grep -q -- "$want" "$TMP/x.log"; then ok "$name: $(grep -- "$want" "$TMP/x.log" | head -1 | cut -c1-160)"
    else fail "$name: no '$want' in: $(tail -2 "$TMP/x.log")"; fi
}

train training.steps=6 output.dir="$TMP/single" >"$TMP/single.log" 2>&1 \
    || fail "single-process run: $(tail -2 "$TMP/single.log")"
state "$(final "$TMP/single")" "$TMP/single.tns"
grep -q "class-conditional: 10 classes, label dropout 0.3" "$TMP/single.log" \
    && ok "the run says it is class-conditional (10 classes, label dropout 0.3)" \
    || fail "no class-conditional line in the log"

if timeout 300 "${MPIRUN[@]}" -np 3 build/ddpm-train $CFG "${COND[@]}" training.steps=6 \
        output.dir="$TMP/w2" >"$TMP/w2.log" 2>&1 && state "$(final "$TMP/w2")" "$TMP/w2.tns" \
   && $PY tests/ref/compare_runs.py "$TMP/w2.tns" "$TMP/single.tns" "$TMP/w2/metrics.jsonl" \
        "$TMP/single/metrics.jsonl" 1e-4 1e-5 "${ZERO[@]}" >"$TMP/w2.cmp" 2>&1; then
    ok "2 workers + 1 shard equal the single process (labels and label dropout per sample): $(grep -o 'worst.*' "$TMP/w2.cmp" | head -1 | cut -d, -f1)"
else
    fail "2 workers differ from the single process: $(grep 'not ok' "$TMP/w2.cmp" 2>/dev/null | head -3) $(tail -3 "$TMP/w2.log")"
fi

# bit-exact resume: 3 steps, stop, resume to 6 == 6 straight
train training.steps=3 output.dir="$TMP/split" >"$TMP/s1.log" 2>&1
train training.steps=6 output.dir="$TMP/split" --resume auto >"$TMP/s2.log" 2>&1
state "$(final "$TMP/split")" "$TMP/split.tns"
if cmp -s "$TMP/split.tns" "$TMP/single.tns" && [ -s "$TMP/split.tns" ]; then
    ok "resume is bit-exact with labels and label dropout (params, EMA, Adam at step 6)"
else
    fail "resumed class-conditional run differs: $(tail -2 "$TMP/s2.log")"
fi
cp -r "$TMP/split" "$TMP/relabel"
train training.steps=7 training.label_dropout=0.5 output.dir="$TMP/relabel" --resume auto >"$TMP/r.log" 2>&1
grep -q "settings changed since the checkpoint: .*training.label_dropout" "$TMP/r.log" \
    && ok "label_dropout may change at a resume, and the change is logged" \
    || fail "label_dropout change at resume: $(tail -2 "$TMP/r.log")"
expect_fail "model.num_classes must match on resume" "settings differ from the config: model.num_classes" \
    train model.num_classes=12 training.steps=7 output.dir="$TMP/other" --resume "$(final "$TMP/split")"

# sampling: --class all, one row per class; image i == image i drawn alone with its class
CK="$(final "$TMP/single")"
S=(--steps 4 --guidance 2 --seed 3 -q)
if build/ddpm-sample "$CK" "${S[@]}" --class all -n 20 -b 8 --grid "$TMP/all.png" --npz "$TMP/all.npz" >"$TMP/all.log" 2>&1 \
   && build/ddpm-sample "$CK" "${S[@]}" --class 3 --first 13 -n 1 --grid none --npz "$TMP/one.npz" >"$TMP/one.log" 2>&1 \
   && $PY - "$TMP" <<'PY' >"$TMP/grid.out" 2>&1; then
import sys
import numpy as np
from PIL import Image
d = sys.argv[1]
g = Image.open(d + "/all.png")
a = np.load(d + "/all.npz")["arr_0"]; one = np.load(d + "/one.npz")["arr_0"]
assert a.shape == (20, 28, 28, 1), a.shape
# 10 rows (classes) x 2 columns of 28 px with 2 px padding (make_grid)
assert g.size == (2 + 2 * 30, 2 + 10 * 30), g.size
grid = np.asarray(g.convert("L"))
cell = lambda r, c: grid[2 + 30 * r:30 + 30 * r, 2 + 30 * c:30 + 30 * c]
assert (cell(3, 1) == a[13, :, :, 0]).all(), "row 3, column 1 is not image 13 (class 3)"
assert (cell(7, 0) == a[7, :, :, 0]).all(), "row 7, column 0 is not image 7"
assert (one[0] == a[13]).all(), "image 13 drawn alone with --class 3 differs"
print("grid %dx%d" % g.size)
PY
    ok "--class all --guidance 2: $(cat "$TMP/grid.out"), one row per class; image 13 alone with --class 3 is identical"
else
    fail "guided sampling: $(tail -3 "$TMP/all.log" "$TMP/one.log" "$TMP/grid.out" 2>/dev/null)"
fi
build/ddpm-sample "$CK" --steps 2 -n 2 -q --grid none --npz none >"$TMP/null.log" 2>&1 \
    && grep -q "sampling with the null label" "$TMP/null.log" \
    && ok "without --class a conditional model samples with the null label and says so" \
    || fail "sampling without --class: $(tail -2 "$TMP/null.log")"
expect_fail "--class out of range" "--class 10 is out of range: the model has 10 classes" \
    build/ddpm-sample "$CK" --class 10 -n 1 --steps 2 --grid none --npz none
expect_fail "--guidance without --class" "--guidance needs --class" \
    build/ddpm-sample "$CK" --guidance 1 -n 1 --steps 2 --grid none --npz none
build/ddpm-train $CFG data.path=$T10K-images-idx3-ubyte.gz training.steps=1 output.dir="$TMP/uncond" >"$TMP/u.log" 2>&1
expect_fail "--class on an unconditional checkpoint" "this one is unconditional" \
    build/ddpm-sample "$(final "$TMP/uncond")" --class 1 --guidance 1 -n 1 --steps 2 --grid none --npz none

# bits/dim with the null label
build/ddpm-eval bpd "$CK" --images 2 --stride 250 -q >"$TMP/bpd.log" 2>&1 \
    && grep -qi "bits/dim" "$TMP/bpd.log" \
    && ok "ddpm-eval bpd runs on a conditional checkpoint (null label): $(grep -i 'bits/dim' "$TMP/bpd.log" | tail -1 | cut -c1-100)" \
    || fail "bpd on a conditional checkpoint: $(tail -2 "$TMP/bpd.log")"

# bad labels
BAD=(data.path=$T10K-images-idx3-ubyte.gz training.steps=1)
expect_fail "num_classes without labels" "has no class labels, but model.num_classes is 10" \
    build/ddpm-train $CFG "${BAD[@]}" model.num_classes=10 output.dir="$TMP/nolab"
expect_fail "a label outside 0..num_classes-1 names the file and record" \
    "t10k-labels-idx1-ubyte.gz: record 0: label 9 is out of range for model.num_classes 5" \
    build/ddpm-train $CFG "${BAD[@]}" model.num_classes=5 data.labels_path=$LABELS output.dir="$TMP/badlab"
expect_fail "a label file of another length" "holds 60000 labels but the images" \
    build/ddpm-train $CFG "${BAD[@]}" model.num_classes=10 output.dir="$TMP/short" \
    data.labels_path=$TRAIN-labels-idx1-ubyte.gz
expect_fail "images given as labels" "this is an IDX image file, expected labels" \
    build/ddpm-train $CFG "${BAD[@]}" model.num_classes=10 output.dir="$TMP/img" \
    data.labels_path=$T10K-images-idx3-ubyte.gz

# shards carry the labels: ddpm-prep --labels, then the shards dataset returns them,
# and a run on the shards is bit-identical to the same run on the IDX files
if build/ddpm-prep --input $T10K-images-idx3-ubyte.gz --format idx --size 28 --channels 1 \
        --labels $T10K-labels-idx1-ubyte.gz --out "$TMP/shards" --quiet --threads 2 >"$TMP/prep.log" 2>&1 \
   && build/tools/shard_tool labels "$TMP/shards" 28 1 >"$TMP/shard_labels.txt" \
   && $PY -c "
import gzip, sys
want = list(gzip.open('$T10K-labels-idx1-ubyte.gz').read()[8:])
got = [int(l) for l in open('$TMP/shard_labels.txt')]
assert got == want, (len(got), len(want), got[:5], want[:5])
print(len(got))" >"$TMP/shard_labels.out" 2>&1; then
    ok "ddpm-prep --labels: the shards' $(cat "$TMP/shard_labels.out") records carry the IDX file's labels"
else
    fail "shard labels: $(tail -2 "$TMP/prep.log" "$TMP/shard_labels.out" 2>/dev/null)"
fi
train training.steps=2 data.path=$T10K-images-idx3-ubyte.gz data.labels_path=$T10K-labels-idx1-ubyte.gz \
    output.dir="$TMP/on_idx" >"$TMP/on_idx.log" 2>&1
train training.steps=2 data.format=shards data.path="$TMP/shards" data.labels_path= \
    output.dir="$TMP/on_shards" >"$TMP/on_shards.log" 2>&1
state "$(final "$TMP/on_idx")" "$TMP/on_idx.tns"; state "$(final "$TMP/on_shards")" "$TMP/on_shards.tns"
if [ -s "$TMP/on_idx.tns" ] && cmp -s "$TMP/on_idx.tns" "$TMP/on_shards.tns"; then
    ok "a conditional run on the labelled shards is bit-identical to the run on the IDX files and labels"
else
    fail "shards vs IDX conditional runs differ: $(tail -1 "$TMP/on_idx.log" "$TMP/on_shards.log")"
fi

# image folders: the class is the file-name prefix before the first '_', classes
# numbered in sorted order; a name without one is its own class, extension included,
# as in guided-diffusion (ant.png 0, cat 1, dog 2); recorded in classes.txt
mkdir -p "$TMP/imgs"
$PY -c "
from PIL import Image
import numpy as np
for i, n in enumerate(['dog_0', 'cat_1', 'ant', 'cat_2']):
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) * (i + 1) % 256).astype('uint8')).save('$TMP/imgs/' + n + '.png')
"
FOLDER=(data.format=image_folder data.path="$TMP/imgs" data.labels_path= training.batch_size=4)
expect_fail "a folder with more classes than num_classes names the class and a file" \
    "class 'dog' (class 2 of the 3 file-name prefixes, first file $TMP/imgs/dog_0.png)" \
    train "${FOLDER[@]}" model.num_classes=2 training.steps=1 output.dir="$TMP/f2"
if train "${FOLDER[@]}" model.num_classes=3 training.steps=1 output.dir="$TMP/f3" >"$TMP/f3.log" 2>&1 \
   && [ "$(tr '\n' ' ' <"$TMP/f3/classes.txt")" = "ant.png cat dog " ] \
   && build/ddpm-prep --input "$TMP/imgs" --format image_folder --size 28 --channels 1 --out "$TMP/fshards" \
        --quiet --threads 1 >"$TMP/fprep.log" 2>&1 \
   && [ "$(tr '\n' ' ' <"$TMP/fshards/classes.txt")" = "ant.png cat dog " ] \
   && [ "$(build/tools/shard_tool labels "$TMP/fshards" 28 1 | tr '\n' ' ')" = "0 1 1 2 " ]; then
    ok "image folder classes by file-name prefix (ant.png, cat, dog): recorded in the run's and the shards' classes.txt, records labelled 0 1 1 2"
else
    fail "image folder classes: $(tail -2 "$TMP/f3.log" "$TMP/fprep.log" 2>/dev/null) $(cat "$TMP/f3/classes.txt" 2>/dev/null)"
fi
