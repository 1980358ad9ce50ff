#!/usr/bin/env bash
# Inception-v3 (pytorch-fid's) in C against a PyTorch float64 build of the same
# structure (tests/ref/inception_torch.py) with the same random weights, converted by
# ops/convert_inception.py from a state dict with pytorch-fid's key names; the ops it
# uses against PyTorch; the FID/IS math against numpy/scipy; ddpm-eval's stats, fid
# and is commands; the converter's and the program's refusals. Few images: a 299x299
# forward is ~6 GFLOP, and the float64 reference takes seconds per image.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/inception"
mkdir -p "$TMP"
PY=/usr/bin/python3
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }

for b in build build-san; do
    if build/../$b/tools/eval_ops_dump "$TMP/ops_$b.tns" >"$TMP/ops.log" 2>&1; then
        $PY tests/ref/eval_ops_ref.py "$TMP/ops_$b.tns" | sed "s/^\(not \)\{0,1\}ok - /&$b: /"
    else
        fail "$b eval_ops_dump: $(cat "$TMP/ops.log")"
    fi
done
$PY tests/ref/eval_ops_ref.py "$TMP/ops_build.tns" --perturb >"$TMP/ops_p.log" 2>&1
if grep -q '^not ok - case00' "$TMP/ops_p.log"; then
    ok "a perturbed op output fails the comparison"
else
    fail "a perturbed op output passed the comparison"
fi

for b in build build-san; do
    $PY tests/ref/fid_ref.py $b/tools/fid_dump "$TMP/fid_$b" | sed "s/^\(not \)\{0,1\}ok - /&$b: /"
done
$PY tests/ref/fid_ref.py build/tools/fid_dump "$TMP/fid_p" --perturb >"$TMP/fid_p.log" 2>&1
if grep -q '^not ok - d64: FID(a, b)' "$TMP/fid_p.log"; then
    ok "a perturbed feature fails the FID comparison"
else
    fail "a perturbed feature passed the FID comparison"
fi

# random weights with pytorch-fid's key names -> converter -> C network
$PY tests/ref/inception_ref.py make 3 "$TMP/w.pth" "$TMP" >"$TMP/make.log" 2>&1 || fail "make: $(cat "$TMP/make.log")"
if $PY ops/convert_inception.py "$TMP/w.pth" "$TMP/w.tns" >"$TMP/conv.log" 2>&1; then
    ok "converter: $(cat "$TMP/conv.log") ($(grep '^#' "$TMP/make.log" | sed 's/^# //'))"
else
    fail "converter failed: $(cat "$TMP/conv.log")"
fi
$PY tests/ref/inception_ref.py converter "$TMP/w.pth" "$TMP"

export DDPM_INCEPTION_WEIGHTS="$TMP/w.tns"
build/ddpm-eval features "$TMP/rgb.npz" "$TMP/rgb.tns" -q 2>"$TMP/f.log" || fail "ddpm-eval features: $(cat "$TMP/f.log")"
$PY tests/ref/inception_ref.py check "$TMP/w.pth" "$TMP/rgb.tns" "$TMP/rgb.npz" "2 RGB 32x32 (np.savez)"
build-san/tools/inception_dump "$TMP/w.tns" "$TMP/grey.npz" "$TMP/grey.tns" >"$TMP/g.log" 2>&1 || fail "inception_dump (ASan): $(cat "$TMP/g.log")"
$PY tests/ref/inception_ref.py check "$TMP/w.pth" "$TMP/grey.tns" "$TMP/grey.npz" "1 grey 28x28 (np.savez_compressed), ASan+UBSan build"

# the program's commands on the same images
if build/ddpm-eval stats "$TMP/rgb.npz" "$TMP/rgb.stats" -q 2>"$TMP/s.log"; then
    fid_self=$(build/ddpm-eval fid "$TMP/rgb.npz" "$TMP/rgb.stats" -q 2>"$TMP/fs.log")
    is_line=$(build/ddpm-eval is "$TMP/rgb.npz" --splits 1 -q 2>"$TMP/is.log")
    fid_py=$(build/ddpm-eval fid "$TMP/rgb.npz" "$TMP/rgb.npz.refstats.npz" -q 2>"$TMP/fp.log")
    $PY tests/ref/inception_ref.py program "$TMP/rgb.npz.ref.npz" "$TMP/rgb.stats" "$fid_self" \
        "$is_line" "${fid_py:-error: $(cat "$TMP/fp.log")}"
else
    fail "ddpm-eval stats: $(cat "$TMP/s.log")"
fi

# refusals with clear messages
out=$(build/ddpm-eval fid "$TMP/rgb.npz" "$TMP/grey.npz" -q 2>&1)
[ $? -eq 1 ] && echo "$out" | grep -q 'grey.npz: fid: statistics need at least 2 images' \
    && ok "FID of a 1-image set is refused: $out" || fail "1-image FID: $out"
out=$(build/ddpm-eval is "$TMP/rgb.npz" --inception "$TMP/none.tns" 2>&1)
[ $? -eq 1 ] && echo "$out" | grep -q 'none.tns: cannot open' \
    && ok "missing weights file is named: $out" || fail "missing weights: $out"
head -c 100000 "$TMP/w.tns" >"$TMP/trunc.tns"
out=$(build/ddpm-eval is "$TMP/rgb.npz" --inception "$TMP/trunc.tns" 2>&1)
[ $? -eq 1 ] && echo "$out" | grep -q "trunc.tns: tensor 'Conv2d_2b_3x3.weight' (offset [0-9]*): its shape needs more data than the [0-9]* bytes left in the file" \
    && ok "truncated weights file: the first missing tensor is named" || fail "truncated weights: $out"
out=$(DDPM_INCEPTION_WEIGHTS= build/ddpm-eval is "$TMP/rgb.npz" 2>&1)
[ $? -eq 1 ] && echo "$out" | grep -q 'no Inception weights' && ok "no weights given: $out" || fail "no weights: $out"
head -c 3000 "$TMP/rgb.npz" >"$TMP/trunc.npz"
out=$(build/ddpm-eval is "$TMP/trunc.npz" 2>&1)
[ $? -eq 1 ] && echo "$out" | grep -q 'trunc.npz: not a zip archive' && ok "truncated .npz: $out" || fail "truncated npz: $out"
