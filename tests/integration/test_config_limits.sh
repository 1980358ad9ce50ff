#!/usr/bin/env bash
# Hostile configs through the program (issue #14 rows 1, 5, 12): a model as deep as
# the config allows, an absurd one, an int key above INT_MAX, and the shipped tiny
# config, which must train. Each gives the documented behaviour or a clear error
# naming the key, never a signal.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/config_limits"
rm -rf "$TMP"; mkdir -p "$TMP"
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
run() { "$@" >"$TMP/out.log" 2>&1; }
printable() { ! LC_ALL=C grep -q '[^[:print:]]' "$TMP/out.log"; }

# Row 1: the issue's 5 levels x 64 blocks smashed the stack (int hs[256]); it is
# within the model's limits, so --summary prints the model.
run build/ddpm-train configs/tiny_fashion.yaml model.image_size=16 model.ch_mult=[1,1,1,1,1] \
    model.num_res_blocks=64 model.attn_resolutions=[] training.batch_size=1 --summary
rc=$?
if [ $rc -eq 0 ] && grep -q "total parameters: 18512225 " "$TMP/out.log"; then
    ok "row 1: 5 levels x 64 blocks builds ($(grep -m1 'total parameters' "$TMP/out.log"))"
else
    fail "row 1: 5 levels x 64 blocks: exit $rc: $(tail -2 "$TMP/out.log")"
fi
run build/ddpm-train configs/tiny_fashion.yaml model.ch=4096 model.ch_mult=[64,64] \
    model.num_res_blocks=64 --summary
rc=$?
if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q "<command line>: model.ch: the model would have .* parameters" "$TMP/out.log"; then
    ok "row 1: an absurd model is refused before allocating ($(tail -1 "$TMP/out.log" | cut -c1-120))"
else
    fail "row 1: absurd model: exit $rc: $(tail -2 "$TMP/out.log")"
fi

# Row 5: an int key above INT_MAX printed uninitialised memory.
run build/ddpm-train configs/tiny_fashion.yaml training.checkpoint_every=2147483648 --summary
rc=$?
if [ $rc -ne 0 ] && [ $rc -lt 128 ] && printable &&
   grep -q "<command line>: training.checkpoint_every: 2147483648 is out of range (must be 0..2147483647)" "$TMP/out.log"; then
    ok "row 5: checkpoint_every above INT_MAX refused with its range"
else
    fail "row 5: exit $rc: $(tail -2 "$TMP/out.log" | cat -v)"
fi

# Row 12: configs/tiny.yaml trains (on an 8x8 grey IDX file written here).
{ printf '\x00\x00\x08\x03\x00\x00\x00\x10\x00\x00\x00\x08\x00\x00\x00\x08'; head -c 1024 /dev/urandom; } >"$TMP/tiny.idx"
run build/ddpm-train configs/tiny.yaml data.path="$TMP/tiny.idx" output.dir="$TMP/run" training.steps=2 \
    training.checkpoint_every=0
rc=$?
if [ $rc -eq 0 ] && [ -f "$TMP/run/ckpt-0000000002.ddpm" ]; then
    ok "row 12: configs/tiny.yaml trains"
else
    fail "row 12: configs/tiny.yaml: exit $rc: $(tail -2 "$TMP/out.log")"
fi
run build/ddpm-train configs/tiny.yaml model.in_channels=3 data.path="$TMP/tiny.idx" output.dir="$TMP/run3" --summary
rc=$?
if [ $rc -ne 0 ] && grep -q "<command line>: model.in_channels: 3 does not fit data.format idx" "$TMP/out.log"; then
    ok "row 12: RGB with IDX data refused naming both keys"
else
    fail "row 12: in_channels 3 with idx: exit $rc: $(tail -2 "$TMP/out.log")"
fi
rm -rf "$TMP"
