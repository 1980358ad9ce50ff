#!/usr/bin/env bash
# Data pipeline throughput at LSUN scale (256x256) against what training consumes.
#   bash bench/data_pipeline.sh [N_IMAGES]      (default 400 per format)
# 1. ddpm-prep: decode (WebP, then JPEG) + BOX/BICUBIC resize + centre crop + zstd +
#    write, from a real LMDB of LSUN-like images (short side 256, long side 256..400,
#    WebP quality 75 / JPEG quality 90: the shapes and codecs of LSUN's exports), with 1
#    thread and with every core.
# 2. Shard reading in the training order (batch 64): pread + zstd decompression + crc,
#    through the prefetch thread and directly, with the page cache warm (and cold when
#    this user may drop caches).
# Wall-clock rates depend on what else runs on the machine; the per-CPU-second rate
# (images / (user + sys time)) is what one core sustains and is steadier.
# 3. What lsun256 training consumes: from the model's forward GMAC (ddpm-train
#    --summary) at an assumed effective rate (EFFECTIVE_GFLOPS, default 100 GFLOP/s a
#    node: about 127 measured for PyTorch's cifar10 step on 2 Zen 4 cores), training FLOPs being
#    6 x forward MACs per image.
set -eu
cd "$(dirname "$0")/.."
N=${1:-400}
GFLOPS=${EFFECTIVE_GFLOPS:-100}
PY=/usr/bin/python3
make -s build/ddpm-prep build/ddpm-train build/tools/lmdb_build build/tools/shard_tool
W=$(mktemp -d /tmp/ddpm-databench.XXXXXX)
trap 'rm -rf "$W"' EXIT
CORES=$(nproc)

$PY - "$W" "$N" <<'PYEOF'
import io, os, sys
import numpy as np
from PIL import Image
w, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for fmt in ("webp", "jpeg"):
    d = os.path.join(w, "src_" + fmt)
    os.makedirs(d)
    for i in range(n):
        long = int(rng.integers(256, 401))
        W_, H_ = (long, 256) if i % 3 else (256, long)
        # smooth structure + texture, so the codecs work as on photographs
        y, x = np.mgrid[0:H_, 0:W_].astype(np.float32)
        img = np.stack([128 + 90 * np.sin(x / (9 + 3 * c + i % 5) + c) * np.cos(y / (13 + c)) for c in range(3)], -1)
        img += rng.normal(0, 12, img.shape)
        arr = np.clip(img, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "WEBP" if fmt == "webp" else "JPEG", quality=75 if fmt == "webp" else 90)
        open(os.path.join(d, "%040x" % (i * 2654435761)), "wb").write(buf.getvalue())
PYEOF

secs() { date +%s.%N; }
rate() { $PY -c "import sys; print('%.1f' % (float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2]))))" "$@"; }
echo "data pipeline benchmark: $N images per format, $CORES core(s), $(date -u +%Y-%m-%d)"
echo
printf '%-44s %12s %16s\n' "stage" "images/s" "per CPU-second"
for fmt in webp jpeg; do
    build/tools/lmdb_build "$W/lmdb_$fmt" "$W/src_$fmt"/* >/dev/null
    mb=$(du -sm "$W/lmdb_$fmt" | cut -f1)
    for th in 1 $CORES; do
        rm -rf "$W/sh"
        t0=$(secs)
        # CPU time of the child from getrusage (no dependency on /usr/bin/time)
        cpu=$($PY -c "
import resource, subprocess, sys
subprocess.run(sys.argv[2:], check=True, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print('%.1f' % (int(sys.argv[1]) / max(r.ru_utime + r.ru_stime, 1e-3)))" $N \
            build/ddpm-prep --input "$W/lmdb_$fmt" --format lmdb --size 256 --out "$W/sh" --threads $th --quiet)
        t1=$(secs)
        printf '%-44s %12s %16s\n' "prep $fmt LMDB ($mb MB) -> 256 shards, $th thr" "$(rate $N $t0 $t1)" "$cpu"
    done
done
shmb=$(du -sm "$W/sh" | cut -f1)
echo "  (shards: $N records of 196,608 bytes in $shmb MB: $(( shmb * 1000000 / N / 1000 )) kB a record after zstd -3)"
STEPS=$(( (2 * N + 63) / 64 ))
for mode in prefetch direct; do
    arg=""; [ $mode = direct ] && arg=direct
    out=$(build/tools/shard_tool read "$W/sh" 256 3 $STEPS 64 $arg)
    ips=$(echo "$out" | sed 's/.*images_per_s \([0-9.]*\).*/\1/')
    rss=$(echo "$out" | sed 's/.*maxrss_kb \([0-9]*\).*/\1/')
    printf '%-44s %12s   (peak RSS %d MiB)\n' "read shards, training order, $mode (warm)" "$ips" $((rss / 1024))
done
if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    out=$(build/tools/shard_tool read "$W/sh" 256 3 $STEPS 64)
    printf '%-44s %12s\n' "read shards, training order, prefetch (cold)" "$(echo "$out" | sed 's/.*images_per_s \([0-9.]*\).*/\1/')"
else
    echo "  (cannot drop the page cache here: cold reads not measured)"
fi
GMAC=$(build/ddpm-train configs/lsun256.yaml --summary 2>/dev/null | sed -n 's/^forward: \([0-9.]*\) GMAC.*/\1/p')
need=$($PY -c "print('%.4f' % ($GFLOPS / (6 * $GMAC)))")
echo
printf '%-44s %12s\n' "lsun256 training consumes (estimate)" "$need"
echo "  = $GFLOPS GFLOP/s effective / (6 x $GMAC GMAC forward per image); assumption, not measured:"
echo "    set EFFECTIVE_GFLOPS to the rate bench/ measures on your nodes"
echo "  one node's data pipeline outpaces one node's training by the ratios above / $need;"
echo "  the prefetch thread reads step s+1 while step s computes, so reading is off the critical path"
