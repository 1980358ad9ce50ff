#!/usr/bin/env bash
# ddpm-export / ddpm-import / ddpm-train --init-from on a tiny Fashion-MNIST model:
# import then export round-trips bit-exactly; the imported checkpoint holds the
# weights (params = EMA, Adam zero, step 0) and samples bit-identically to the
# original; F16/BF16 files are converted exactly; malformed files and files of
# another model are refused naming the file and the tensor or key; a run started
# with --init-from (from a safetensors file or a checkpoint) begins at step 0 from
# those weights with another batch size and seed, and a model change is refused.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/export"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
CFG=configs/tiny_fashion.yaml
SMALL=(model.ch_mult=[1,2] training.batch_size=4 training.log_every=1)
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
expect_fail() {   # label, grep pattern for the message, command...
    local label="$1" pat="$2"; shift 2
    "$@" >"$TMP/out.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ] && grep -q -- "$pat" "$TMP/out.log"; then
        ok "$label (exit $rc: $(grep -m1 -- "$pat" "$TMP/out.log" | cut -c1-170))"
    else
        fail "$label: exit $rc, expected a message matching '$pat'; got: $(tail -2 "$TMP/out.log")"
    fi
}
# the data area (everything after the 8-byte length and the header) of a safetensors file
data_of() { $PY -c "import sys; b=open(sys.argv[1],'rb').read(); n=int.from_bytes(b[:8],'little'); sys.stdout.buffer.write(b[8+n:])" "$1"; }

build/ddpm-train $CFG "${SMALL[@]}" training.steps=3 training.checkpoint_every=3 training.lr=0.002 \
    training.warmup_steps=0 output.dir="$TMP/run" >"$TMP/train.log" 2>&1 || fail "training failed: $(tail -2 "$TMP/train.log")"
A="$TMP/run/ckpt-0000000003.ddpm"

# --- round trip: export, import, export ---
build/ddpm-export "$A" --out "$TMP/s1.safetensors" 2>"$TMP/e1.log" \
  && build/ddpm-import "$TMP/s1.safetensors" $CFG "${SMALL[@]}" --out "$TMP/c1.ddpm" 2>"$TMP/i1.log" \
  && build/ddpm-export "$TMP/c1.ddpm" --out "$TMP/s2.safetensors" 2>>"$TMP/e1.log" \
  && build/ddpm-import "$TMP/s2.safetensors" $CFG "${SMALL[@]}" --out "$TMP/c2.ddpm" 2>>"$TMP/i1.log" \
  && build/ddpm-export "$TMP/c2.ddpm" --out "$TMP/s3.safetensors" 2>>"$TMP/e1.log" \
  && build/ddpm-export "$TMP/c1.ddpm" --weights params --out "$TMP/s1p.safetensors" 2>>"$TMP/e1.log" \
  || fail "export/import chain failed: $(tail -2 "$TMP/e1.log" "$TMP/i1.log")"
if cmp -s "$TMP/s2.safetensors" "$TMP/s3.safetensors" && cmp -s <(data_of "$TMP/s1.safetensors") <(data_of "$TMP/s2.safetensors") \
   && cmp -s <(data_of "$TMP/s1.safetensors") <(data_of "$TMP/s1p.safetensors") && [ -s "$TMP/s2.safetensors" ]; then
    ok "import then export round-trips bit-exactly (whole files equal after one import; every tensor byte equal to the original export, as EMA and as params)"
else
    fail "import/export round trip differs"
fi
build/tools/ckpt_state "$TMP/c1.ddpm" "$TMP/c1.tns" && build/tools/ckpt_state "$A" "$TMP/a.tns" || fail "ckpt_state failed"
$PY - "$TMP/a.tns" "$TMP/c1.tns" "$TMP/s1.safetensors" <<'PYEOF' && ok "the imported checkpoint: step 0, params = EMA = the original's EMA bit for bit, Adam moments zero; the metadata names the step, weights and model" || fail "imported checkpoint contents"
import json, sys
import numpy as np
sys.path.insert(0, "tests/ref")
import tensor_file
a, c = tensor_file.read(sys.argv[1]), tensor_file.read(sys.argv[2])
assert c["meta"][0] == 0 and a["meta"][0] == 3, (c["meta"], a["meta"])
assert np.array_equal(c["ema"].view(np.uint32), a["ema"].view(np.uint32))
assert np.array_equal(c["params"].view(np.uint32), a["ema"].view(np.uint32))
assert not c["adam_m"].any() and not c["adam_v"].any()
assert not np.array_equal(a["ema"], a["params"])
b = open(sys.argv[3], "rb").read()
meta = json.loads(b[8:8 + int.from_bytes(b[:8], "little")])["__metadata__"]
assert meta["step"] == "3" and meta["weights"] == "ema" and meta["format"] == "ddpm-cluster-unet/1"
assert json.loads(meta["model"])["ch_mult"] == [1, 2]
PYEOF

# --- sampling from the imported checkpoint equals sampling from the original ---
S=(-n 4 -b 4 --steps 8 --seed 5 -q)
build/ddpm-sample "$A" "${S[@]}" --grid "$TMP/a.png" --npz "$TMP/a.npz" >"$TMP/sa.log" 2>&1 \
  && build/ddpm-sample "$TMP/c1.ddpm" "${S[@]}" --grid "$TMP/c.png" --npz "$TMP/c.npz" >"$TMP/sc.log" 2>&1 \
  || fail "sampling failed: $(tail -2 "$TMP/sa.log" "$TMP/sc.log")"
cmp -s "$TMP/a.npz" "$TMP/c.npz" && cmp -s "$TMP/a.png" "$TMP/c.png" && [ -s "$TMP/a.npz" ] \
    && ok "ddpm-sample on the imported checkpoint draws the same images as on the original (npz and PNG bit-identical)" \
    || fail "samples from the imported checkpoint differ"

# --- half precision in, converted exactly; malformed and foreign files ---
$PY - "$TMP" <<'PYEOF' || fail "could not write the test files"
import json, sys
import numpy as np
tmp = sys.argv[1]
b = open(f"{tmp}/s1.safetensors", "rb").read()
n = int.from_bytes(b[:8], "little")
hdr = json.loads(b[8:8 + n]); data = b[8 + n:]
meta = hdr.pop("__metadata__")
def write(name, header, blob, raw_len=None, meta=meta):
    h = dict(header)
    if meta is not None:
        h = {"__metadata__": meta, **h}
    j = json.dumps(h).encode()
    j += b" " * (-(8 + len(j)) % 8)
    open(f"{tmp}/{name}.safetensors", "wb").write((raw_len if raw_len is not None else len(j)).to_bytes(8, "little") + j + blob)
arrays = {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], "<f4") for k, v in hdr.items()}
def pack(conv, dtype, size):   # every tensor converted, offsets recomputed
    h, blob = {}, b""
    for k, v in hdr.items():
        raw = conv(arrays[k])
        h[k] = {"dtype": dtype, "shape": v["shape"], "data_offsets": [len(blob), len(blob) + raw.size * size]}
        blob += raw.tobytes()
    return h, blob
h16, b16 = pack(lambda a: a.astype("<f2"), "F16", 2)
write("f16", h16, b16, meta=None)
np.save(f"{tmp}/f16.npy", np.concatenate([a.astype("<f2").astype("<f4") for a in arrays.values()]))
hbf, bbf = pack(lambda a: (a.view("<u4") >> 16).astype("<u2"), "BF16", 2)
write("bf16", hbf, bbf, meta=None)
np.save(f"{tmp}/bf16.npy", np.concatenate([((a.view("<u4") >> 16) << 16).view("<f4") for a in arrays.values()]))
write("bad_header_length", hdr, data, raw_len=len(b) * 2)
h = json.loads(json.dumps(hdr)); h["conv_out.bias"]["data_offsets"] = [len(data) - 4, len(data) + 4]
write("bad_offsets", h, data)
h = json.loads(json.dumps(hdr)); h["conv_out.weight"]["shape"] = [1, 32, 3, 4]
write("bad_shape_size", h, data)
h = json.loads(json.dumps(hdr)); h["conv_out.weight"]["dtype"] = "F33"
write("bad_dtype", h, data)
h = json.loads(json.dumps(hdr)); h["conv_out.weight"]["dtype"] = "I32"
write("int_dtype", h, data)
# missing: drop the last tensor's entry and its bytes (it is last in the data area)
last = max(hdr, key=lambda k: hdr[k]["data_offsets"][0])
h = {k: v for k, v in hdr.items() if k != last}
write("missing", h, data[:hdr[last]["data_offsets"][0]], meta=None)
h = dict(hdr); h["extra.weight"] = {"dtype": "F32", "shape": [2], "data_offsets": [len(data), len(data) + 8]}
write("extra", h, data + b"\0" * 8, meta=None)
# the same tensors under a model with another conv_out shape: transposed (C_out, C_in swapped)
h = json.loads(json.dumps(hdr)); h["conv_out.weight"]["shape"] = [32, 1, 3, 3]
write("wrong_shape", h, data, meta=None)
PYEOF
for kind in f16 bf16; do
    if build/ddpm-import "$TMP/$kind.safetensors" $CFG "${SMALL[@]}" --out "$TMP/$kind.ddpm" 2>"$TMP/$kind.log" \
       && build/tools/ckpt_state "$TMP/$kind.ddpm" "$TMP/$kind.tns" \
       && $PY -c "
import sys, numpy as np; sys.path.insert(0, 'tests/ref'); import tensor_file
e = tensor_file.read(sys.argv[1])['ema']; want = np.load(sys.argv[2])
assert np.array_equal(e.view(np.uint32), want.view(np.uint32))" "$TMP/$kind.tns" "$TMP/$kind.npy"; then
        ok "a ${kind^^} file (no metadata, as PyTorch would write it) imports, every value converted exactly to float32"
    else
        fail "${kind^^} import: $(tail -2 "$TMP/$kind.log")"
    fi
done
imp() { build/ddpm-import "$TMP/$1.safetensors" $CFG "${SMALL[@]}" --out "$TMP/bad.ddpm"; }
expect_fail "a header length beyond the file is refused" "bad_header_length.safetensors: header length .* exceeds" imp bad_header_length
expect_fail "offsets outside the file are refused, naming the tensor" "bad_offsets.safetensors: tensor 'conv_out.bias': data_offsets .* outside" imp bad_offsets
expect_fail "a shape that does not match its byte size is refused, naming the tensor" "bad_shape_size.safetensors: tensor 'conv_out.weight': shape and dtype" imp bad_shape_size
expect_fail "an unknown dtype is refused, naming the tensor" "bad_dtype.safetensors: tensor 'conv_out.weight': unknown dtype 'F33'" imp bad_dtype
expect_fail "an integer dtype is refused, naming the tensor" "int_dtype.safetensors: tensor 'conv_out.weight': dtype I32 is not supported" imp int_dtype
expect_fail "a missing tensor is refused by name" "missing.safetensors: tensor '.*' is missing" imp missing
expect_fail "an extra tensor is refused by name" "extra.safetensors: tensor 'extra.weight' is not a parameter" imp extra
expect_fail "a tensor of another shape is refused with both shapes" "wrong_shape.safetensors: tensor 'conv_out.weight' has shape \[32, 1, 3, 3\]; the model of .* needs \[1, 32, 3, 3\]" imp wrong_shape
expect_fail "a file of another model (metadata) is refused naming the differing key" "its model section differs .*model.num_res_blocks" \
    build/ddpm-import "$TMP/s1.safetensors" $CFG "${SMALL[@]}" model.num_res_blocks=2 --out "$TMP/bad.ddpm"
[ ! -e "$TMP/bad.ddpm" ] && ok "no checkpoint is left behind by a refused import" || fail "a refused import left $TMP/bad.ddpm"

# --- ddpm-train --init-from: a new run from the exported weights ---
# The runs' step-2 params against the files they started from: warmup makes step 1's
# update zero and step 2's at most ~lr = 2e-6 per weight, while the original run's
# EMA and raw params (s1 and ap) differ by ~1e-3 (3 steps at lr 0.002).
near() {   # CKPT, SAFETENSORS it started from, SAFETENSORS it did not
    build/tools/ckpt_state "$1" "$TMP/near.tns" && $PY - "$TMP/near.tns" "$2" "$3" <<'PYEOF'
import sys
import numpy as np
sys.path.insert(0, "tests/ref")
import tensor_file
p = tensor_file.read(sys.argv[1])["params"].astype(np.float64)
def data(path):
    b = open(path, "rb").read()
    return np.frombuffer(b[8 + int.from_bytes(b[:8], "little"):], "<f4").astype(np.float64)
d_from, d_other = np.abs(p - data(sys.argv[2])).max(), np.abs(p - data(sys.argv[3])).max()
print(f"max|params - start| {d_from:.1e}, against the other weights {d_other:.1e}")
assert d_from <= 1e-5 and d_other > 1e-4, (d_from, d_other)
PYEOF
}
INIT=(training.batch_size=6 training.seed=9 training.steps=2 training.checkpoint_every=2)
build/ddpm-export "$A" --weights params --out "$TMP/ap.safetensors" 2>/dev/null
build/ddpm-train $CFG "${SMALL[@]}" "${INIT[@]}" output.dir="$TMP/init" --init-from "$TMP/s1.safetensors" >"$TMP/init.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "initialised from .*s1.safetensors" "$TMP/init.log" && grep -q "from step 0 to 2, batch 6" "$TMP/init.log" \
   && near "$TMP/init/ckpt-0000000002.ddpm" "$TMP/s1.safetensors" "$TMP/ap.safetensors" >"$TMP/near1.log" 2>&1 \
   && $PY -c "import json,math,sys; r=[json.loads(l) for l in open(sys.argv[1])]; assert [x['step'] for x in r]==[1,2] and all(math.isfinite(x['loss']) for x in r)" "$TMP/init/metrics.jsonl"; then
    ok "--init-from a safetensors file: a new run (step 0, batch 6, seed 9) from the exported weights, finite losses ($(cat "$TMP/near1.log"))"
else
    fail "--init-from safetensors (exit $rc): $(tail -3 "$TMP/init.log" "$TMP/near1.log")"
fi
build/ddpm-train $CFG "${SMALL[@]}" "${INIT[@]}" output.dir="$TMP/initck" --init-from "$A" --init-weights params >"$TMP/initck.log" 2>&1 \
  && near "$TMP/initck/ckpt-0000000002.ddpm" "$TMP/ap.safetensors" "$TMP/s1.safetensors" >"$TMP/near2.log" 2>&1 \
  && ok "--init-from a checkpoint (--init-weights params) starts a new run from its raw weights ($(cat "$TMP/near2.log"))" \
  || fail "--init-from checkpoint: $(tail -3 "$TMP/initck.log" "$TMP/near2.log")"
build/ddpm-train $CFG "${SMALL[@]}" "${INIT[@]}" training.steps=3 output.dir="$TMP/init" --init-from "$TMP/s1.safetensors" --resume auto >"$TMP/again.log" 2>&1 \
  && grep -q "ignored: resuming" "$TMP/again.log" && grep -q "resumed from .*ckpt-0000000002" "$TMP/again.log" \
  && ok "--init-from with --resume auto resumes a run that has its own checkpoints (a requeued job)" \
  || fail "--init-from + --resume auto: $(tail -3 "$TMP/again.log")"
expect_fail "--init-from refuses a model change, naming the key (safetensors metadata)" "its model section differs .*model.dropout" \
    build/ddpm-train $CFG "${SMALL[@]}" "${INIT[@]}" model.dropout=0.2 output.dir="$TMP/x1" --init-from "$TMP/s1.safetensors"
expect_fail "--init-from refuses a model change, naming the key (checkpoint)" "its model section differs .*model.attn_resolutions" \
    build/ddpm-train $CFG "${SMALL[@]}" "${INIT[@]}" model.attn_resolutions=[] output.dir="$TMP/x2" --init-from "$A"
expect_fail "--init-from with --resume PATH is a usage error" "not with --resume PATH" \
    build/ddpm-train $CFG "${SMALL[@]}" output.dir="$TMP/x3" --init-from "$A" --resume "$A"
