#!/usr/bin/env bash
# Single-process training and sampling end to end on a tiny Fashion-MNIST model:
# bit-exact resume, every corrupt-checkpoint case, bad datasets, the override
# syntax, and the sampler's outputs and determinism across batch sizes.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/train"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
CFG=configs/tiny_fashion.yaml
# a smaller, faster model than tiny_fashion's default
SMALL=(model.ch_mult=[1,2] model.num_res_blocks=1 training.batch_size=4 training.log_every=1)
train() { build/ddpm-train $CFG "${SMALL[@]}" "$@"; }
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
expect_fail() {   # label, grep pattern for the message, command...
    local label="$1" pat="$2"; shift 2
    "$@" >"$TMP/out.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ] && grep -q -- "$pat" "$TMP/out.log"; then
        ok "$label (exit $rc: $(grep -m1 -- "$pat" "$TMP/out.log" | cut -c1-150))"
    else
        fail "$label: exit $rc, expected a message matching '$pat'; got: $(tail -2 "$TMP/out.log")"
    fi
}
losses() { sed 's/, "images_per_s".*//' "$1/metrics.jsonl"; }

# --- bit-exact resume: 6 steps straight == 3 steps, stop, resume, 3 more ---
train training.steps=6 training.checkpoint_every=3 output.dir="$TMP/straight" >"$TMP/a.log" 2>&1 \
    || fail "straight run failed: $(tail -2 "$TMP/a.log")"
train training.steps=3 training.checkpoint_every=3 output.dir="$TMP/split" >"$TMP/b.log" 2>&1 \
    || fail "first half failed: $(tail -2 "$TMP/b.log")"
train training.steps=6 training.checkpoint_every=3 output.dir="$TMP/split" --resume auto >"$TMP/c.log" 2>&1 \
    || fail "resumed half failed: $(tail -2 "$TMP/c.log")"
build/tools/ckpt_state "$TMP/straight/ckpt-0000000006.ddpm" "$TMP/straight.tns" \
    && build/tools/ckpt_state "$TMP/split/ckpt-0000000006.ddpm" "$TMP/split.tns"
if cmp -s "$TMP/straight.tns" "$TMP/split.tns" && [ -s "$TMP/split.tns" ]; then
    ok "resume is bit-exact: step, data cursor, params, EMA, Adam m and v at step 6 are identical bit for bit"
else
    fail "resumed run's step-6 checkpoint differs from the straight run's"
fi
if diff <(losses "$TMP/straight") <(losses "$TMP/split") >/dev/null; then
    ok "logged losses, quartile losses, grad and param norms are identical after resume ($(wc -l <"$TMP/straight/metrics.jsonl") steps)"
else
    fail "logged metrics differ after resume"
fi
grep -q "resumed from .*ckpt-0000000003.ddpm at step 3" "$TMP/c.log" && ok "the resume is logged with its checkpoint and step" || fail "resume not logged"
# metrics log has the promised keys
$PY - "$TMP/straight/metrics.jsonl" <<'PYEOF' && ok "metrics.jsonl has step, loss, q0..q3, grad_norm, param_norm, lr, images_per_s, elapsed" || fail "metrics.jsonl keys"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
need = {"step", "loss", "q0", "q1", "q2", "q3", "grad_norm", "param_norm", "lr", "images_per_s", "elapsed"}
assert len(rows) == 6 and all(need <= set(r) for r in rows), rows[0]
assert [r["step"] for r in rows] == list(range(1, 7))
PYEOF

# --- checkpoint handling and corruption ---
expect_fail "--resume none refuses an output.dir that holds checkpoints" "pass --resume auto" \
    train training.steps=6 output.dir="$TMP/split"
expect_fail "--resume with a missing file" "missing.ddpm" \
    train training.steps=6 output.dir="$TMP/x" --resume "$TMP/missing.ddpm"
mkdir -p "$TMP/empty"
train training.steps=1 output.dir="$TMP/empty" --resume auto >"$TMP/e.log" 2>&1 && grep -q "no checkpoint" "$TMP/e.log" \
    && ok "--resume auto on an empty directory starts fresh and says so" || fail "--resume auto on an empty dir: $(tail -2 "$TMP/e.log")"
expect_fail "a checkpoint of another model config is refused, naming the differing keys" "model.ch" \
    train model.ch=64 training.steps=6 output.dir="$TMP/split" --resume "$TMP/split/ckpt-0000000006.ddpm"
for kind in truncated flipped; do
    d="$TMP/$kind"; cp -r "$TMP/split" "$d"
    f="$d/ckpt-0000000006.ddpm"; size=$(stat -c %s "$f")
    if [ $kind = truncated ]; then truncate -s $((size / 2)) "$f"
    else printf '\xff' | dd of="$f" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null; fi
    expect_fail "--resume PATH on a $kind checkpoint is an error naming it" "ckpt-0000000006.ddpm" \
        train training.steps=7 output.dir="$d" --resume "$f"
    expect_fail "ddpm-sample on a $kind checkpoint is an error naming it" "ckpt-0000000006.ddpm" \
        build/ddpm-sample "$f" -n 1 --steps 2 --grid none --npz none
    train training.steps=7 training.checkpoint_every=3 output.dir="$d" --resume auto >"$TMP/$kind.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && grep -q "skipping checkpoint: .*ckpt-0000000006.ddpm" "$TMP/$kind.log" \
        && grep -q "resumed from .*ckpt-0000000003.ddpm" "$TMP/$kind.log"; then
        ok "a $kind latest checkpoint is reported and the previous one is used"
    else
        fail "$kind latest checkpoint: rc $rc: $(grep -m2 'skipping\|resumed\|error' "$TMP/$kind.log")"
    fi
done
d="$TMP/allbad"; mkdir -p "$d"; echo garbage >"$d/ckpt-0000000001.ddpm"
expect_fail "--resume auto with only corrupt checkpoints stops with an error" "none of the 1 checkpoint" \
    train training.steps=2 output.dir="$d" --resume auto

# --- overrides and bad inputs ---
expect_fail "override with a bad value names the key" "training.steps" train training.steps=abc output.dir="$TMP/o"
expect_fail "override of an unknown key names it" "model.chanels" train model.chanels=3 output.dir="$TMP/o"
expect_fail "override with an out-of-range value names the key" "model.dropout" train model.dropout=1.5 output.dir="$TMP/o"
train training.steps=2 training.lr=0.001 output.dir="$TMP/ovr" >"$TMP/ovr.log" 2>&1 && grep -q "lr 0.001" "$TMP/ovr.log" \
    && ok "a valid override (training.lr=0.001) takes effect" || fail "valid override: $(tail -2 "$TMP/ovr.log")"
expect_fail "a missing dataset file is an error naming it" "/nonexistent/images.gz" \
    train data.path=/nonexistent/images.gz output.dir="$TMP/o"
head -c 100000 /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz >"$TMP/cut.gz"
expect_fail "a truncated dataset is an error naming the file" "cut.gz" train data.path="$TMP/cut.gz" output.dir="$TMP/o"
expect_fail "a malformed config file is an error naming file and line" "bad.yaml:2" \
    bash -c "printf 'model:\n  ch: [\n' >'$TMP/bad.yaml'; build/ddpm-train '$TMP/bad.yaml'"

# --- sampler ---
CK="$TMP/straight/ckpt-0000000006.ddpm"
S=(build/ddpm-sample "$CK" -n 5 --steps 8 -q)
if "${S[@]}" -b 5 --grid "$TMP/g5.png" --npz "$TMP/b5.npz" --png-dir "$TMP/pngs" >"$TMP/s1.log" 2>&1 \
   && "${S[@]}" -b 2 --grid none --npz "$TMP/b2.npz" >"$TMP/s2.log" 2>&1 \
   && "${S[@]}" -b 1 --grid none --npz "$TMP/b1.npz" --first 3 -n 2 >"$TMP/s3.log" 2>&1; then
    $PY - "$TMP" <<'PYEOF' >"$TMP/s.out" 2>&1
import sys, numpy as np
from PIL import Image
t = sys.argv[1]
a = np.load(f"{t}/b5.npz")["arr_0"]; b = np.load(f"{t}/b2.npz")["arr_0"]; c = np.load(f"{t}/b1.npz")["arr_0"]
assert a.shape == (5, 28, 28, 1) and a.dtype == np.uint8, a.shape
d1 = np.abs(a.astype(int) - b.astype(int)).max(); d2 = np.abs(a[3:5].astype(int) - c.astype(int)).max()
print(f"max diff batch 5 vs 2: {d1}, images 3-4 drawn alone vs in batch 5: {d2}")
assert d1 <= 1 and d2 <= 1
assert a.std() > 1, "samples are constant"
g = np.asarray(Image.open(f"{t}/g5.png")); assert g.shape[:2] == (2 + 3 * 30, 2 + 2 * 30) or g.shape[:2] == (62, 92), g.shape
p = np.asarray(Image.open(f"{t}/pngs/000004.png")); assert (p.reshape(28, 28) == a[4, :, :, 0]).all()
PYEOF
    if [ $? -eq 0 ]; then ok "sampler: npz (5,28,28,1) uint8, grid and per-image PNGs agree; image i is the same for batch 5, 2 and 1 and for --first ($(tail -1 "$TMP/s.out"))"
    else fail "sampler outputs: $(tail -3 "$TMP/s.out")"; fi
else
    fail "ddpm-sample failed: $(tail -2 "$TMP"/s*.log)"
fi
build/ddpm-sample "$CK" -n 2 -b 2 --steps ddim4 --ddim --eta 0 --grid none --npz "$TMP/d.npz" -q >"$TMP/d.log" 2>&1 \
    && ok "DDIM sampling (4 steps, eta 0) runs" || fail "DDIM sampling: $(tail -2 "$TMP/d.log")"
build/ddpm-sample "$CK" -n 2 -b 2 --steps ddim4 --sampler ddim --eta 0 --grid none --npz "$TMP/d2.npz" -q >"$TMP/d2.log" 2>&1 \
    && cmp -s "$TMP/d.npz" "$TMP/d2.npz" && ok "--ddim is --sampler ddim (identical images)" \
    || fail "--ddim vs --sampler ddim: $(tail -2 "$TMP/d2.log")"
# both solvers, the same checks: 4 steps, x0 clipped by default, and images 1-2 drawn
# alone with --first equal to the batch of 3 (x_T and, for the SDE form, each step's
# noise keyed on the image)
for kind in sde-dpm-solver++ dpm-solver++; do
    SV=(build/ddpm-sample "$CK" --sampler "$kind" --steps 4 --grid none -q)
    tag="${kind%%-*}"
    if "${SV[@]}" -n 3 -b 3 --npz "$TMP/$tag.3.npz" >"$TMP/$tag.3.log" 2>&1 \
       && "${SV[@]}" -n 2 -b 1 --first 1 --npz "$TMP/$tag.1.npz" >"$TMP/$tag.1.log" 2>&1 \
       && grep -q "; $kind over 4 of .* steps (logsnr spacing), x0 clipped" "$TMP/$tag.3.log" \
       && $PY -c "
import numpy as np
a = np.load('$TMP/$tag.3.npz')['arr_0'].astype(int); b = np.load('$TMP/$tag.1.npz')['arr_0'].astype(int)
assert a.shape == (3, 28, 28, 1), a.shape
assert np.abs(a[1:] - b).max() <= 1, np.abs(a[1:] - b).max()" >"$TMP/$tag.out" 2>&1; then
        ok "$kind (4 steps, x0 clipped by default) runs; images 1-2 drawn alone with --first match the batch of 3"
    else
        fail "$kind sampling: $(tail -2 "$TMP/$tag.3.log" "$TMP/$tag.1.log" "$TMP/$tag.out" 2>/dev/null)"
    fi
done
expect_fail "dpm-solver++ refuses a respacing list" "respacing lists such as '10,15,20'" \
    build/ddpm-sample "$CK" --sampler dpm-solver++ --steps 10,15,20 -n 1 --grid none --npz none
expect_fail "--spacing without dpm-solver++ is refused" "--spacing applies to" \
    build/ddpm-sample "$CK" --spacing time -n 1 --grid none --npz none
expect_fail "ddpm-sample on a missing checkpoint is an error naming it" "nope.ddpm" build/ddpm-sample "$TMP/nope.ddpm"
expect_fail "ddpm-sample rejects a bad option value" "invalid value" build/ddpm-sample "$CK" --eta 2
