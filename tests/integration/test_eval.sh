#!/usr/bin/env bash
# Bits/dim end to end: training logs the strided bound every K steps
# (training.eval_every), `ddpm-eval bpd` reproduces the logged value from the
# checkpoint, the result does not depend on how images are spread over MPI ranks,
# a class-conditional model's bound given the labels (--labels),
# the CSV of per-timestep terms adds up, and bad input is refused with a message.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/eval"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
CFG=configs/tiny_fashion.yaml
RUN="$TMP/run"
EV=(training.eval_every=2 training.eval_images=3 training.eval_stride=250)
if build/ddpm-train $CFG training.steps=4 training.batch_size=4 training.checkpoint_every=0 \
        "${EV[@]}" output.dir="$RUN" >"$TMP/train.log" 2>&1; then
    ok "training with training.eval_every=2 ran"
else
    fail "training with eval: $(tail -3 "$TMP/train.log")"
fi
CKPT=$(ls "$RUN"/ckpt-*.ddpm 2>/dev/null | tail -1)
logged=$($PY - "$RUN/metrics.jsonl" <<'PY'
import json, math, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if '"eval_bpd"' in l]
ok = [e["step"] for e in ev] == [2, 4] and all(
    math.isfinite(e["eval_bpd"]) and e["eval_bpd"] > 0 and e["eval_bpd_stderr"] > 0
    and e["eval_images"] == 3 and e["eval_stride"] == 250 for e in ev)
print(("%.12g" % ev[-1]["eval_bpd"]) if ok and ev else "bad")
PY
)
if [ "$logged" != bad ] && [ -n "$logged" ]; then
    ok "metrics.jsonl has eval_bpd lines at steps 2 and 4 (last: $logged bits/dim)"
else
    fail "metrics.jsonl eval lines: $(grep eval_bpd "$RUN/metrics.jsonl")"
fi

# ddpm-eval reproduces the logged value (same EMA weights, images, seed and stride)
out=$(build/ddpm-eval bpd "$CKPT" --images 3 --stride 250 --seed 0 --batch 4 -q --out "$TMP/terms.csv" 2>"$TMP/bpd.log")
got=$(echo "$out" | awk '/^bpd /{print $2}')
if $PY -c "import sys; a, b = float('$got'), float('$logged'); sys.exit(abs(a - b) > 1e-6 * abs(b))" 2>/dev/null; then
    ok "ddpm-eval bpd reproduces the logged bound: $got vs $logged"
else
    fail "ddpm-eval bpd gave '$got', training logged '$logged': $(tail -2 "$TMP/bpd.log")"
fi
$PY - "$TMP/terms.csv" "$got" <<'PY' && ok "terms.csv: decoder + 4 KL rows x 3 images, prior, total; the weighted terms add up to the total" || fail "terms.csv: $(head -3 "$TMP/terms.csv")"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
dec = [r for r in rows if r["term"] == "decoder"]
kl = [r for r in rows if r["term"] == "kl"]
prior = [r for r in rows if r["term"] == "prior"][0]
total = [r for r in rows if r["term"] == "total"][0]
n = 3
assert len(dec) == 1 and int(dec[0]["images"]) == n
assert sum(int(r["images"]) for r in kl) == n * 4  # T 1000, stride 250: 4 KL terms per image
# unbiased estimate: total = decoder + prior + 250 * (sum over evaluated KL terms) / n
est = float(dec[0]["mean_bpd"]) + float(prior["mean_bpd"]) + 250 * sum(
    float(r["mean_bpd"]) * int(r["images"]) for r in kl) / n
assert abs(est - float(total["mean_bpd"])) <= 1e-8 * abs(est), (est, total)
assert abs(float(total["mean_bpd"]) - float(sys.argv[2])) <= 1e-6 * abs(est)
PY

# images spread over MPI ranks: the same result (batch 1, so every forward pass is the same)
build/ddpm-eval bpd "$CKPT" --images 3 --stride 250 --batch 1 -q --out "$TMP/one.csv" >"$TMP/one.out" 2>"$TMP/one.log"
mpirun --allow-run-as-root --oversubscribe -np 2 build/ddpm-eval bpd "$CKPT" --images 3 --stride 250 \
    --batch 1 -q --out "$TMP/two.csv" >"$TMP/two.out" 2>"$TMP/two.log"
if $PY - "$TMP/one.csv" "$TMP/two.csv" <<'PY'
import csv, sys
a, b = (list(csv.DictReader(open(p))) for p in sys.argv[1:3])
assert len(a) == len(b) and len(a) > 3
for x, y in zip(a, b):
    assert (x["term"], x["t"], x["images"]) == (y["term"], y["t"], y["images"]), (x, y)
    fx, fy = float(x["mean_bpd"]), float(y["mean_bpd"])
    assert abs(fx - fy) <= 1e-9 * abs(fx), (x, y)  # the CSV has 10 significant digits
PY
then
    ok "1 rank and 2 MPI ranks give the same terms and total ($(head -1 "$TMP/two.out"))"
else
    fail "1 rank vs 2 ranks differ: $(head -1 "$TMP/one.out") / $(head -1 "$TMP/two.out"); $(tail -2 "$TMP/two.log")"
fi

# a class-conditional model: --labels gives the bound of -log p(x | y), each image
# with its label; the same from a .npz with an IDX label file, over 1 or 2 ranks
LBL=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
if build/ddpm-train $CFG training.steps=2 training.batch_size=4 training.checkpoint_every=0 \
        model.num_classes=10 training.label_dropout=0.1 training.lr=0.01 training.warmup_steps=0 \
        data.labels_path=/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz \
        output.dir="$TMP/cond" >"$TMP/cond.log" 2>&1; then
    CC=$(ls "$TMP"/cond/ckpt-*.ddpm | tail -1)
    # the raw weights after two large steps: the output (zero at init) depends on the label
    BPD=(build/ddpm-eval bpd "$CC" --weights params --images 3 --stride 250 --batch 1 -q)
    c1=$("${BPD[@]}" --labels "$LBL" 2>"$TMP/c1.log" | awk '/^bpd /{print $2}')
    c0=$("${BPD[@]}" 2>"$TMP/c0.log" | awk '/^bpd /{print $2}')
    c2=$(mpirun --allow-run-as-root --oversubscribe -np 2 "${BPD[@]}" --labels "$LBL" 2>"$TMP/c2.log" | awk '/^bpd /{print $2}')
    $PY - "$TMP" "$LBL" <<'PY'
import gzip, struct, sys, numpy as np
d, lbl = sys.argv[1], sys.argv[2]
raw = gzip.open(lbl).read()
labels = np.frombuffer(raw[8:], np.uint8)
imgs = np.frombuffer(gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28, 1)
np.savez(d + "/first3.npz", arr_0=imgs[:3])
def idx(path, lab):
    open(path, "wb").write(struct.pack(">II", 0x801, len(lab)) + bytes(lab))
idx(d + "/first3-labels.idx", labels[:3])
idx(d + "/two-labels.idx", labels[:2])
bad = labels.copy(); bad[1] = 12
idx(d + "/bad-labels.idx", bad)
PY
    c3=$(build/ddpm-eval bpd "$CC" --weights params --data "$TMP/first3.npz" --labels "$TMP/first3-labels.idx" \
        --stride 250 --batch 1 -q 2>"$TMP/c3.log" | awk '/^bpd /{print $2}')
    if [ -n "$c1" ] && [ -n "$c0" ] && [ "$c1" = "$c2" ] && [ "$c1" = "$c3" ] && [ "$c1" != "$c0" ] &&
            grep -q "the bound of -log p(x | y)" "$TMP/c1.log"; then
        ok "class-conditional bound with --labels: $c1 bits/dim (null label: $c0); 2 ranks and a .npz with an IDX label file give the same"
    else
        fail "class-conditional bound: labels '$c1', null '$c0', 2 ranks '$c2', npz '$c3': $(tail -2 "$TMP/c1.log") $(tail -2 "$TMP/c3.log")"
    fi
    for spec in "a label out of range names the file and record|$TMP/bad-labels.idx: record 1: label 12 is out of range for model.num_classes 10|$TMP/bad-labels.idx" \
                "an IDX label file of another length|$TMP/two-labels.idx|$TMP/two-labels.idx" \
                "--labels set on IDX images (no labels of their own)|the set carries no labels|set"; do
        IFS='|' read -r label pat arg <<<"$spec"
        "${BPD[@]}" --labels "$arg" >"$TMP/f.log" 2>&1
        rc=$?
        if [ $rc -ne 0 ] && grep -q -- "$pat" "$TMP/f.log"; then
            ok "$label (exit $rc: $(grep -m1 -- "$pat" "$TMP/f.log" | cut -c1-150))"
        else
            fail "$label: exit $rc; got: $(tail -2 "$TMP/f.log")"
        fi
    done
    build/ddpm-eval bpd "$CC" --data "$TMP/first3.npz" --labels "$TMP/two-labels.idx" -q >"$TMP/f.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ] && grep -q "two-labels.idx: holds 2 labels, $TMP/first3.npz holds 3 images" "$TMP/f.log"; then
        ok "a .npz with a label file of another length is refused ($(grep -m1 holds "$TMP/f.log" | cut -c1-150))"
    else
        fail "npz label count mismatch: exit $rc: $(tail -2 "$TMP/f.log")"
    fi
    build/ddpm-eval bpd "$CKPT" --images 3 --labels "$LBL" -q >"$TMP/f.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ] && grep -q "is unconditional (model.num_classes 0): --labels needs a class-conditional checkpoint" "$TMP/f.log"; then
        ok "--labels on an unconditional checkpoint is refused"
    else
        fail "--labels on an unconditional checkpoint: exit $rc: $(tail -2 "$TMP/f.log")"
    fi
else
    fail "class-conditional training: $(tail -3 "$TMP/cond.log")"
fi

# the exact bound (all 1000 terms) of one image, and the trapezoid estimate
exact=$(build/ddpm-eval bpd "$CKPT" --images 1 -q 2>"$TMP/exact.log" | awk '/^bpd /{print $2}')
trap_=$(build/ddpm-eval bpd "$CKPT" --images 1 --stride 250 --estimate trapezoid -q 2>/dev/null | awk '/^bpd /{print $2}')
if [ -n "$exact" ] && [ -n "$trap_" ]; then
    ok "exact bound of image 0 (1000 terms): $exact bits/dim; trapezoid stride 250: $trap_"
else
    fail "exact/trapezoid runs: $(tail -2 "$TMP/exact.log")"
fi

# refusals
check_fail() {   # label pattern command...
    local label="$1" pat="$2"; shift 2
    "$@" >"$TMP/f.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ] && grep -q -- "$pat" "$TMP/f.log"; then
        ok "$label (exit $rc: $(grep -m1 -- "$pat" "$TMP/f.log" | cut -c1-140))"
    else
        fail "$label: exit $rc; got: $(tail -2 "$TMP/f.log")"
    fi
}
check_fail "bpd of a missing checkpoint" "nonexistent.ddpm" build/ddpm-eval bpd "$TMP/nonexistent.ddpm" -q
check_fail "more images than the set holds" "holds 10000 images; asked for 20000" \
    build/ddpm-eval bpd "$CKPT" --images 20000 -q
$PY -c "import numpy as np; np.savez('$TMP/rgb.npz', arr_0=np.zeros((2, 32, 32, 3), np.uint8))"
check_fail "a .npz of the wrong image size" "arr_0 must be uint8 images \[N\]\[28\]\[28\]\[1\]" \
    build/ddpm-eval bpd "$CKPT" --data "$TMP/rgb.npz" -q
check_fail "bad --stride" "invalid value '0' for --stride" build/ddpm-eval bpd "$CKPT" --stride 0
check_fail "eval_every without data.eval_path" "training.eval_every: 2 needs a held-out set in data.eval_path" \
    build/ddpm-train $CFG training.eval_every=2 data.eval_path= output.dir="$TMP/x"

# hostile .npz and statistics files (issue #14 rows 2, 10, 11): a clear error naming
# the file, a non-zero exit, never a crash or a negative FID. No Inception weights
# are needed: the files are refused before the network would be loaded.
$PY - "$TMP" <<'PY'
import struct, sys, zipfile
import numpy as np
d = sys.argv[1]
def npy(descr, shape, data):
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    total = (10 + len(h) + 1 + 63) // 64 * 64
    return b'\x93NUMPY\x01\x00' + struct.pack('<H', total - 10) + h.encode() + b' ' * (total - 11 - len(h)) + b'\n' + data
with zipfile.ZipFile(d + '/row2.npz', 'w') as z:   # 248 bytes: shape (2^53, 1, 1)
    z.writestr('arr_0.npy', npy('|u1', '(9007199254740992, 1, 1)', bytes(4)))
with zipfile.ZipFile(d + '/row11.npz', 'w') as z:  # N = 10^12 in the header
    z.writestr('arr_0.npy', npy('|u1', '(1000000000000, 32, 32, 3)', bytes(3072)))
D = 2048  # what ddpm-eval read before (so these inputs reproduce the rows)
np.savez_compressed(d + '/npsd.npz', mu=np.zeros(D), sigma=-np.eye(D))
a = np.eye(D) + 3000 * np.tril(np.ones((D, D)), -1)
np.savez_compressed(d + '/asym.npz', mu=np.zeros(D), sigma=a)
n = np.eye(D); n[5, 7] = n[7, 5] = np.nan
np.savez_compressed(d + '/nan.npz', mu=np.zeros(D), sigma=n)
r = np.random.default_rng(0)
x = r.normal(size=(40, 6))
np.savez(d + '/s6a.npz', mu=x.mean(0), sigma=np.cov(x, rowvar=False))
y = r.normal(size=(40, 6)) + 0.5
np.savez_compressed(d + '/s6b.npz', mu=y.mean(0), sigma=np.cov(y, rowvar=False))
np.savez(d + '/s5.npz', mu=np.zeros(5), sigma=np.eye(5))
PY
[ "$(stat -c %s "$TMP/row2.npz")" = 248 ] || fail "row 2 input is not 248 bytes"
check_fail "row 2: stats of a 248-byte .npz of shape (2^53, 1, 1)" \
    "$TMP/row2.npz: entry arr_0.npy: its header's shape (9007199254740992, 1, 1) needs 9007199254740992 data bytes, the entry holds 4" \
    build/ddpm-eval stats "$TMP/row2.npz" "$TMP/o.npz" -q --inception "$TMP/none.tns"
check_fail "row 2: fid of the same file" "$TMP/row2.npz: entry arr_0.npy: its header's shape" \
    build/ddpm-eval fid "$TMP/row2.npz" "$TMP/s6a.npz" -q --inception "$TMP/none.tns"
check_fail "row 11: an .npz header declaring N = 10^12" \
    "$TMP/row11.npz: entry arr_0.npy: its header's shape (1000000000000, 32, 32, 3) needs" \
    build/ddpm-eval stats "$TMP/row11.npz" "$TMP/o.npz" -q --inception "$TMP/none.tns"
check_fail "row 10: a non-positive-semi-definite sigma" "$TMP/npsd.npz: 'sigma' is not positive semi-definite" \
    build/ddpm-eval fid "$TMP/npsd.npz" "$TMP/npsd.npz"
grep -q "^FID" "$TMP/f.log" && fail "row 10: a FID was printed for a non-PSD sigma: $(grep FID "$TMP/f.log")"
check_fail "row 10: an asymmetric sigma" "$TMP/asym.npz: 'sigma' is not symmetric" \
    build/ddpm-eval fid "$TMP/asym.npz" "$TMP/asym.npz"
check_fail "row 10: a NaN in sigma (no LAPACK message)" "$TMP/nan.npz: 'sigma' holds nan" \
    build/ddpm-eval fid "$TMP/nan.npz" "$TMP/nan.npz"
grep -qi "lapack\|parameter number" "$TMP/f.log" && fail "row 10: LAPACK printed: $(cat "$TMP/f.log")"
check_fail "statistics of different dimensions" "$TMP/s6a.npz has 6-dimensional statistics, $TMP/s5.npz has 5" \
    build/ddpm-eval fid "$TMP/s6a.npz" "$TMP/s5.npz"
# valid small statistics: the distance matches scipy's, itself reads 0
fid_ab=$(build/ddpm-eval fid "$TMP/s6a.npz" "$TMP/s6b.npz" 2>"$TMP/f.log" | awk '/^FID/{print $2}')
fid_aa=$(build/ddpm-eval fid "$TMP/s6a.npz" "$TMP/s6a.npz" 2>>"$TMP/f.log" | awk '/^FID/{print $2}')
if $PY - "$TMP" "$fid_ab" "$fid_aa" <<'PY'
import sys, numpy as np
from scipy import linalg
d, ab, aa = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
a, b = np.load(d + '/s6a.npz'), np.load(d + '/s6b.npz')
c = linalg.sqrtm(a['sigma'] @ b['sigma']).real
ref = ((a['mu'] - b['mu'])**2).sum() + np.trace(a['sigma']) + np.trace(b['sigma']) - 2 * np.trace(c)
assert abs(ab - ref) <= 1e-8 * ref, (ab, ref)
assert 0 <= aa < 1e-9, aa
PY
then
    ok "fid of 6-dimensional statistics files: $fid_ab (scipy agrees), of one with itself: $fid_aa"
else
    fail "fid of statistics files: '$fid_ab' / '$fid_aa': $(tail -2 "$TMP/f.log")"
fi
