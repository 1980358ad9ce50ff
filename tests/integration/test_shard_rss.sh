#!/usr/bin/env bash
# Memory of the shards dataset does not grow with the dataset: the same number of
# records read in the training order (batch_plan, prefetch thread) from a dataset and
# from one 10 times larger must peak within 10% of each other in resident memory
# (getrusage ru_maxrss of separate processes). The records are incompressible 64x64x3
# images, so the larger dataset is 118 MiB on disk; a reader that kept the images would
# peak over 100 MiB higher.
set -u
cd "$(dirname "$0")/../.."
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/rss"
rm -rf "$TMP"; mkdir -p "$TMP"
T=build/tools/shard_tool
[ -x $T ] || { echo "not ok - $T is missing (run make test-build)"; exit 1; }
N=1000 SIZE=64 STEPS=100 BATCH=32
$T make "$TMP/small" $N $SIZE 3 500 1 >/dev/null && $T make "$TMP/large" $((10 * N)) $SIZE 3 500 2 >/dev/null \
    || { echo "not ok - making the synthetic shards failed"; exit 1; }
small=$($T read "$TMP/small" $SIZE 3 $STEPS $BATCH) && large=$($T read "$TMP/large" $SIZE 3 $STEPS $BATCH) \
    || { echo "not ok - reading failed: $small $large"; exit 1; }
echo "# $N records:  $small"
echo "# $((10 * N)) records: $large"
rs=$(echo "$small" | sed 's/.*maxrss_kb \([0-9]*\).*/\1/')
rl=$(echo "$large" | sed 's/.*maxrss_kb \([0-9]*\).*/\1/')
disk=$(du -sk "$TMP/large" | cut -f1)
if [ $((rl * 10)) -le $((rs * 11)) ] && [ $((rs * 10)) -le $((rl * 11)) ]; then
    echo "ok - peak RSS reading $((STEPS * BATCH)) records in training order: $rs KiB ($N records) vs $rl KiB ($((10 * N)) records, $disk KiB on disk): within 10%"
else
    echo "not ok - peak RSS $rs KiB ($N records) vs $rl KiB ($((10 * N)) records): more than 10% apart"
fi
# every read was served by the prefetch thread
echo "$large" | grep -q "hits $((STEPS * BATCH)) misses 0" \
    && echo "ok - all $((STEPS * BATCH)) records came from the read-ahead thread" \
    || echo "not ok - prefetch statistics: $large"
# negative control: the same measurement notices a reader that keeps the images
cs=$($T read "$TMP/small" $SIZE 3 $STEPS $BATCH inmemory | sed 's/.*maxrss_kb \([0-9]*\).*/\1/')
cl=$($T read "$TMP/large" $SIZE 3 $STEPS $BATCH inmemory | sed 's/.*maxrss_kb \([0-9]*\).*/\1/')
[ $((cl * 10)) -gt $((cs * 11)) ] \
    && echo "ok - control: keeping the images in memory peaks at $cs KiB vs $cl KiB, which this test would reject" \
    || echo "not ok - control: an in-memory reader peaks at $cs vs $cl KiB; the test cannot tell"
