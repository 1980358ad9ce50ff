#!/usr/bin/env bash
# TensorBoard event files and the in-training sample grids, read back by an
# independent reader (tests/tools/tfevents_read.py: its own CRC-32C and protobuf
# decoder): framing and both CRCs, file_version, every scalar equal to
# metrics.jsonl, the config as a text summary, images that decode as PNG and equal
# samples/step-N.png, which equals what ddpm-sample draws from that step's
# checkpoint (same seed, DDIM, weights, scale) pixel for pixel; a flipped byte is
# detected; a resumed run writes a new file with a SessionLog START and
# metrics.jsonl loses the lines logged after the checkpoint; a distributed run
# (3 ranks: 2 server shards, so the EMA is gathered) draws the same grid.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/tensorboard"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
# a small model, T = 20 (the grid's DDIM then walks all 20 steps), 4 images a grid;
# no warm-up, a fast EMA: weights that move enough in 3 steps for a grid drawn from
# stale EMA chunks to differ (checked: without the gather, 8% of the pixels do)
RUN=(configs/tiny_fashion.yaml model.ch_mult=[1,2] model.num_res_blocks=1 diffusion.timesteps=20
     training.batch_size=4 training.log_every=1 training.threads=1 training.checkpoint_every=3
     training.sample_every=3 training.sample_images=4 training.warmup_steps=0 training.lr=0.001
     training.ema_decay=0.5)
train() { build/ddpm-train "${RUN[@]}" "$@"; }

train training.steps=6 output.dir="$TMP/a" >"$TMP/a.log" 2>&1 || fail "run a: $(tail -3 "$TMP/a.log")"

# --- the event file against metrics.jsonl, the config, the images ---
$PY - "$TMP/a" <<'PYEOF'
import io, json, os, sys
sys.path.insert(0, "tests/tools")
import numpy as np
from PIL import Image
import tfevents_read as tr
run = sys.argv[1]
def check(cond, msg):
    print(("ok - " if cond else "not ok - ") + msg)
files = tr.event_files(run)
check(len(files) == 1, f"one event file, named events.out.tfevents.<time>.<host>.<pid>.<n> ({[os.path.basename(f) for f in files]})")
evs = tr.read_file(files[0])
check(evs[0].get("file_version") == "brain.Event:2", "the first event carries file_version brain.Event:2; every record's length and data CRC-32C verify")
check(evs[1].get("session_log_status") == 1 and evs[1]["step"] == 1, "a SessionLog START at the run's first step (1)")
texts = [v for e in evs for v in e.get("values", []) if "tensor" in v]
ok_text = len(texts) == 1 and texts[0]["plugin_name"] == "text" and texts[0]["tensor"]["dtype"] == 7
body = texts[0]["tensor"]["string_val"][0].decode() if ok_text else ""
yaml_text = "\n".join(l[4:] for l in body.split("\n"))
check(ok_text and "sample_every: 3" in yaml_text and f'dir: "{run}"' in yaml_text,
      "the config once, as a DT_STRING tensor with the text plugin's metadata (plugin_name 'text')")
scal = {}
for e in evs:
    for v in e.get("values", []):
        if "simple_value" in v:
            scal[(e["step"], v["tag"])] = v["simple_value"]
n = bad = 0
for line in open(os.path.join(run, "metrics.jsonl")):
    r = json.loads(line)
    for k, val in r.items():
        if k == "step" or not isinstance(val, (int, float)):
            continue
        n += 1
        got = scal.pop((r["step"], k), None)
        if got is None or np.float32(val) != np.float32(got):
            bad += 1
check(n > 0 and bad == 0 and not scal,
      f"all {n} numeric metrics.jsonl fields are scalars of the same step and tag with the same float32 value ({bad} differ, {len(scal)} extra)")
imgs = [(e["step"], v) for e in evs for v in e.get("values", []) if "image" in v]
good = [s for s, v in imgs
        if v["tag"] == "samples" and np.array_equal(
            np.asarray(Image.open(io.BytesIO(v["image"]["png"]))),
            np.asarray(Image.open(os.path.join(run, "samples", f"step-{s}.png"))))
        and v["image"]["colorspace"] == 1 and v["image"]["width"] >= 512]
check([s for s, _ in imgs] == [3, 6] and good == [3, 6],
      f"image summaries at steps 3 and 6 decode as PNG, >= 512 px wide, equal to samples/step-N.png ({[s for s, _ in imgs]})")
PYEOF

# --- a flipped byte is detected ---
f=$(ls "$TMP"/a/events.out.tfevents.* | head -1)
cp "$f" "$TMP/flipped"
$PY -c "import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) // 2] ^= 0x10; open(sys.argv[1], 'wb').write(b)" "$TMP/flipped"
if out=$($PY -c "import sys; sys.path.insert(0, 'tests/tools'); import tfevents_read as t; t.read_file(sys.argv[1])" "$TMP/flipped" 2>&1); then
    fail "a flipped byte in the middle of the event file went unnoticed"
else
    ok "a flipped byte is detected: $(echo "$out" | tail -1 | cut -c1-120)"
fi

# --- the grid equals ddpm-sample on the same step's checkpoint ---
same_grid() {   # label, run dir, step, weights
    local png="$TMP/ref-$1.png"
    build/ddpm-sample "$2/ckpt-$(printf %010d "$3").ddpm" --ddim -n 4 -b 4 --seed 0 --weights "$4" \
        --grid-scale 9 --grid "$png" --npz none --threads 1 -q >"$TMP/sample-$1.log" 2>&1 \
        || { fail "$1: ddpm-sample: $(tail -2 "$TMP/sample-$1.log")"; return; }
    if $PY -c "
import sys; import numpy as np; from PIL import Image
a, b = (np.asarray(Image.open(p)) for p in sys.argv[1:3])
sys.exit(0 if a.shape == b.shape and np.array_equal(a, b) else 1)" "$2/samples/step-$3.png" "$png"; then
        ok "$1: samples/step-$3.png equals ddpm-sample --ddim -n 4 --seed 0 --weights $4 --grid-scale 9 on ckpt $3, pixel for pixel"
    else
        fail "$1: samples/step-$3.png differs from ddpm-sample's grid of the step-$3 checkpoint"
    fi
}
same_grid single "$TMP/a" 3 ema

# --- resume: a new file, SessionLog START, the interrupted run's extra lines gone ---
train training.steps=5 output.dir="$TMP/b" training.sample_weights=params >"$TMP/b1.log" 2>&1 \
    || fail "run b: $(tail -3 "$TMP/b1.log")"
rm -f "$TMP/b/ckpt-0000000005.ddpm"     # as if killed after logging steps 4 and 5
train training.steps=6 output.dir="$TMP/b" training.sample_weights=params --resume auto >"$TMP/b2.log" 2>&1 \
    || fail "run b resumed: $(tail -3 "$TMP/b2.log")"
same_grid params "$TMP/b" 3 params
$PY - "$TMP/a" "$TMP/b" <<'PYEOF'
import json, os, sys
sys.path.insert(0, "tests/tools")
import numpy as np
import tfevents_read as tr
a, b = sys.argv[1:3]
def check(cond, msg):
    print(("ok - " if cond else "not ok - ") + msg)
files = tr.event_files(b)
starts = [[e["step"] for e in tr.read_file(f) if e.get("session_log_status") == 1] for f in files]
check(len(files) == 2 and starts == [[1], [4]],
      f"the resumed run wrote a second event file starting with SessionLog START at step 4 ({starts})")
rows = [json.loads(l) for l in open(os.path.join(b, "metrics.jsonl"))]
ref = {json.loads(l)["step"]: json.loads(l) for l in open(os.path.join(a, "metrics.jsonl"))}
drop = {"images_per_s", "elapsed"}
same = all({k: v for k, v in r.items() if k not in drop} == {k: v for k, v in ref[r["step"]].items() if k not in drop} for r in rows)
check([r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and same,
      "metrics.jsonl after the resume: steps 1..6 once each (the lines of steps 4, 5 logged after the step-3 checkpoint removed), equal to the straight run's")
merged = tr.merged_scalars(b)
want = {(r["step"], k): np.float32(v) for r in rows for k, v in r.items() if k != "step" and isinstance(v, (int, float))}
check(set(merged) == set(want) and all(np.float32(merged[k]) == want[k] for k in want),
      f"the event files read as TensorBoard does (START drops steps >= 4 of the first file) equal metrics.jsonl ({len(want)} scalars)")
PYEOF

# --- distributed: 2 server shards and a worker; step 3 is the last, so its checkpoint
# comes after the grid and the grid's own gather brings shard 1's EMA chunks ---
if "${MPIRUN[@]}" -np 3 build/ddpm-train "${RUN[@]}" training.steps=3 distributed.servers=2 \
       training.checkpoint_every=0 \
       output.dir="$TMP/d" >"$TMP/d.log" 2>&1; then
    same_grid mpirun3 "$TMP/d" 3 ema
    n=$(ls "$TMP"/d/events.out.tfevents.* 2>/dev/null | wc -l)
    [ "$n" = 1 ] && ok "mpirun -np 3: rank 0 alone writes one event file" || fail "mpirun -np 3: $n event files"
else
    fail "mpirun -np 3 run: $(grep -v '^\[' "$TMP/d.log" | tail -3)"
fi

# --- output.tensorboard: false writes none ---
train training.steps=1 training.sample_every=0 output.tensorboard=false output.dir="$TMP/off" >"$TMP/off.log" 2>&1
[ -z "$(ls "$TMP"/off/events.out.tfevents.* 2>/dev/null)" ] && [ -s "$TMP/off/metrics.jsonl" ] \
    && ok "output.tensorboard=false: metrics.jsonl only, no event file" \
    || fail "output.tensorboard=false: $(ls "$TMP/off")"
