#!/usr/bin/env bash
# ddpm-prep end to end: a real LMDB (liblmdb) of WebP and JPEG values with corrupt ones,
# packed with several threads, SIGKILLed part-way and resumed; the result must equal an
# uninterrupted single-thread run byte for byte and guided-diffusion's center_crop_arr
# run with PIL (tests/integration/prep_ref.py, an independent shard reader); then
# ddpm-train trains a tiny 32x32 model on it. Also: image folders, IDX, refusals.
set -u
cd "$(dirname "$0")/../.."
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/prep"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
PREP=build/ddpm-prep
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
for b in $PREP build/ddpm-train build/tools/lmdb_build build/tools/shard_tool build/tools/image_dump; do
    [ -x "$b" ] || { fail "$b is missing (run make test-build)"; exit 1; }
done
command -v zstd >/dev/null || { fail "the zstd command-line tool is needed by the reference reader"; exit 1; }
nshards() { local n; n=$(grep -c '^shard ' "$1/manifest.txt" 2>/dev/null); echo "${n:-0}"; }

$PY tests/integration/prep_ref.py gen "$TMP" >"$TMP/gen.log" 2>&1 || { fail "image generation: $(tail -2 "$TMP/gen.log")"; exit 1; }
build/tools/lmdb_build "$TMP/lmdb" "$TMP"/src/* >"$TMP/lmdb.log" 2>&1 || { fail "lmdb_build: $(cat "$TMP/lmdb.log")"; exit 1; }
[ -f "$TMP/lmdb/data.mdb" ] && ok "built a real LMDB with liblmdb: $(cat "$TMP/lmdb.log") (24 WebP/JPEG/PNG images, 4 corrupt values)"

COMMON=(--input "$TMP/lmdb" --format lmdb --size 32 --records-per-shard 4)

# --- uninterrupted single-thread reference ---
$PREP "${COMMON[@]}" --out "$TMP/straight" --threads 1 --quiet >"$TMP/straight.log" 2>&1 \
    && ok "ddpm-prep, 1 thread, uninterrupted: $(grep -o 'done: .*' "$TMP/straight.log" | cut -c1-90)" \
    || fail "ddpm-prep straight run: $(tail -3 "$TMP/straight.log")"

grep -q '^ddpm-shards 2$' "$TMP/straight/manifest.txt" && grep -Eq '^dataset_id [0-9a-f]{32}$' "$TMP/straight/manifest.txt" \
    && grep -Eq '^shard shard-00000.ddsh 4 [0-9]+ [0-9]+ [0-9a-f]{8}$' "$TMP/straight/manifest.txt" \
    && ok "ddpm-prep writes shard format 2: a dataset id, and each shard's size and header crc in the manifest" \
    || fail "ddpm-prep did not write format 2: $(head -3 "$TMP/straight/manifest.txt" | tr '\n' ' ')"

# --- 3 threads, killed with SIGKILL once two shards are on disk, then resumed ---
$PREP "${COMMON[@]}" --out "$TMP/killed" --threads 3 --test-delay-ms 200 >"$TMP/k1.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
    [ "$(nshards "$TMP/killed")" -ge 2 ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.05
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
done_shards=$(nshards "$TMP/killed")
if [ "$done_shards" -ge 2 ] && ! grep -q '^complete' "$TMP/killed/manifest.txt"; then
    ok "SIGKILL part-way: the manifest lists $done_shards complete shard(s) and no 'complete' line ($(ls "$TMP/killed" | tr '\n' ' '))"
else
    fail "the run was not caught part-way (shards $done_shards; $(tail -1 "$TMP/k1.log"))"
fi
$PREP "${COMMON[@]}" --out "$TMP/killed" --threads 2 >"$TMP/k2.log" 2>&1 \
    || fail "resumed run failed: $(tail -3 "$TMP/k2.log")"
if grep -q "resuming .*$done_shards shard(s) with $((done_shards * 4)) records done" "$TMP/k2.log"; then
    ok "the rerun resumes after the $done_shards listed shard(s) ($(grep -o 'continuing at input item [0-9]* of [0-9]*' "$TMP/k2.log"))"
else
    fail "the rerun did not resume where the manifest says: $(grep -m1 resum "$TMP/k2.log")"
fi
same=1
for f in "$TMP"/straight/*; do cmp -s "$f" "$TMP/killed/$(basename "$f")" || same=0; done
[ "$(ls "$TMP/straight" | wc -l)" = "$(ls "$TMP/killed" | wc -l)" ] || same=0
[ $same = 1 ] && ok "killed (3 threads) + resumed (2 threads) shards and manifest are byte-identical to the uninterrupted 1-thread run ($(ls "$TMP/straight" | wc -l) files)" \
    || fail "resumed output differs from the uninterrupted run: $(diff <(ls "$TMP/straight") <(ls "$TMP/killed") | head -3)"
grep -q "skipped" "$TMP/k2.log" && [ "$(grep -c '^skip ' "$TMP/killed/manifest.txt")" = 4 ] \
    && ok "bad records are reported and counted: $(grep -o 'done: .*' "$TMP/k2.log" | cut -c1-100)" \
    || fail "bad records not reported: $(tail -2 "$TMP/k2.log")"
$PREP "${COMMON[@]}" --out "$TMP/killed" --threads 2 >"$TMP/k3.log" 2>&1 && grep -q "already complete" "$TMP/k3.log" \
    && ok "a third run finds the folder complete and leaves it alone" || fail "third run: $(tail -2 "$TMP/k3.log")"

# --- the content against PIL, through an independent reader ---
$PY tests/integration/prep_ref.py check "$TMP/killed" "$TMP/src" 32 3 lmdb

# --- the training format reads the same records ---
build/tools/shard_tool dump "$TMP/killed" 32 3 "$TMP/dump.raw" >"$TMP/dump.log" 2>&1 \
    && ok "the shards dataset opens and reads all records ($(cat "$TMP/dump.log"))" || fail "shard_tool dump: $(cat "$TMP/dump.log")"

# --- ddpm-train on the shards ---
build/ddpm-train tests/configs/tiny_shards.yaml data.path="$TMP/killed" output.dir="$TMP/run" >"$TMP/train.log" 2>&1
rc=$?
if [ $rc = 0 ] && [ "$(wc -l <"$TMP/run/metrics.jsonl")" = 3 ] && grep -q "dataset $TMP/killed: 24 images" "$TMP/train.log"; then
    ok "ddpm-train runs 3 steps at 32x32 on the shards ($(grep -o 'prefetch: .*' "$TMP/train.log"))"
else
    fail "ddpm-train on shards: exit $rc: $(tail -3 "$TMP/train.log")"
fi
grep -q "prefetch: 12 records read ahead, 0 read on demand" "$TMP/train.log" \
    && ok "every record of the 3 steps came from the prefetch thread (12 of 12)" \
    || fail "prefetch statistics: $(grep prefetch "$TMP/train.log")"
# the same on 2 workers + 1 server over MPI: each worker reads only its share, read
# ahead, and the run ends equal to the single process (same losses)
mpirun --allow-run-as-root --oversubscribe --bind-to none -np 3 build/ddpm-train tests/configs/tiny_shards.yaml \
    data.path="$TMP/killed" output.dir="$TMP/run_mpi" distributed.timeout_s=30 >"$TMP/train_mpi.log" 2>&1
rc=$?
ahead=$(grep -o 'prefetch: [0-9]* records read ahead, [0-9]* read on demand' "$TMP/train_mpi.log" | awk '{a += $2; d += $6} END {print a, d}')
if [ $rc = 0 ] && [ "$ahead" = "12 0" ] && /usr/bin/python3 - "$TMP/run/metrics.jsonl" "$TMP/run_mpi/metrics.jsonl" <<'PYEOF'
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
assert len(a) == len(b) == 3 and all(abs(x - y) <= 1e-5 * abs(x) for x, y in zip(a, b)), (a, b)
PYEOF
then
    ok "2 MPI workers train on the shards: each worker's records come from its prefetch thread (12 of 12 over both), losses equal the single process"
else
    fail "distributed training on shards: exit $rc, prefetch '$ahead': $(grep -v '^\[' "$TMP/train_mpi.log" | tail -3)"
fi
build/ddpm-train tests/configs/tiny_shards.yaml data.path="$TMP/killed" model.image_size=16 output.dir="$TMP/run16" >"$TMP/t16.log" 2>&1
grep -q "the shards hold 3x32x32 images, the config asks for 3x16x16" "$TMP/t16.log" \
    && ok "ddpm-train refuses shards of another size: $(grep -o 'the shards hold.*' "$TMP/t16.log" | cut -c1-90)" \
    || fail "size mismatch not refused: $(tail -1 "$TMP/t16.log")"

# --- image folder, grey ---
$PREP --input "$TMP/folder" --format image_folder --size 24 --channels 1 --out "$TMP/folder_shards" --threads 2 --quiet >"$TMP/f.log" 2>&1 \
    && ok "image folder packed at 24x24 grey: $(grep -o 'done: .*' "$TMP/f.log" | cut -c1-80)" || fail "image folder: $(tail -2 "$TMP/f.log")"
$PY tests/integration/prep_ref.py check "$TMP/folder_shards" "$TMP/folder" 24 1 image_folder

# --- an image file over the 256 MiB limit (sparse: no disk used) is skipped unread ---
mkdir -p "$TMP/bigfolder" && cp "$TMP/folder/sub/img01.jpg" "$TMP/bigfolder/" && truncate -s 300M "$TMP/bigfolder/huge.png"
$PREP --input "$TMP/bigfolder" --format image_folder --size 16 --out "$TMP/big_shards" --quiet >"$TMP/big.log" 2>&1
grep -q "huge.png.*larger than any image file we decode (limit 268435456 bytes)" "$TMP/big.log" && grep -q "done: 1 records" "$TMP/big.log" \
    && ok "a 300 MB image file is skipped before it is read: $(grep -o 'skipping.*' "$TMP/big.log" | cut -c1-120)" \
    || fail "oversized image file: $(tail -2 "$TMP/big.log")"

# --- IDX (Fashion-MNIST test set) packs to the very bytes the idx dataset yields ---
FM=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
if [ -f $FM ]; then
    $PREP --input $FM --format idx --size 28 --channels 1 --out "$TMP/fm" --records-per-shard 3000 --quiet >"$TMP/fm.log" 2>&1
    build/tools/image_dump dataset idx $FM 28 1 "$TMP/fm_idx.raw" >/dev/null 2>&1
    build/tools/shard_tool dump "$TMP/fm" 28 1 "$TMP/fm_sh.raw" >/dev/null 2>&1
    cmp -s "$TMP/fm_idx.raw" "$TMP/fm_sh.raw" && [ -s "$TMP/fm_sh.raw" ] \
        && ok "Fashion-MNIST t10k: 10000 records in 4 shards equal the idx dataset byte for byte" \
        || fail "IDX packed records differ from the idx dataset"
fi

# --- refusals ---
expect_fail() {   # label, pattern, command...
    local label="$1" pat="$2"; shift 2
    "$@" >"$TMP/e.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ] && grep -q -- "$pat" "$TMP/e.log"; then ok "$label (exit $rc: $(grep -m1 -- "$pat" "$TMP/e.log" | cut -c1-140))"
    else fail "$label: exit $rc, expected '$pat': $(tail -2 "$TMP/e.log")"; fi
}
expect_fail "resuming with another --size is refused, naming the setting" "size 32 (now 64)" \
    $PREP --input "$TMP/lmdb" --format lmdb --size 64 --records-per-shard 4 --out "$TMP/killed"
mkdir -p "$TMP/v1part" && cp tests/data/shards_v1/*.ddsh "$TMP/v1part/" && grep -v '^complete' tests/data/shards_v1/manifest.txt >"$TMP/v1part/manifest.txt"
expect_fail "an unfinished format 1 preparation is not continued in format 2" "unfinished preparation in shard format 1" \
    $PREP "${COMMON[@]}" --out "$TMP/v1part" --quiet
expect_fail "a missing input is named" "$TMP/nothing" $PREP --input "$TMP/nothing" --format lmdb --size 32 --out "$TMP/x"
expect_fail "a folder that is not an LMDB is named" "no readable data.mdb" $PREP --input "$TMP/folder" --format lmdb --size 32 --out "$TMP/x2"
expect_fail "an unknown format is refused" "unknown input format 'tfrecord'" $PREP --input "$TMP/lmdb" --format tfrecord --size 32 --out "$TMP/x3"
build/tools/lmdb_build "$TMP/badonly" "$TMP/src/9badrandombytes" "$TMP/src/ebadtext" >/dev/null
expect_fail "an input with no usable image fails" "none of the 2 input items" \
    $PREP --input "$TMP/badonly" --format lmdb --size 32 --out "$TMP/x4" --quiet
