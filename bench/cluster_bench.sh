#!/usr/bin/env bash
# make bench-cluster: lsun256's parameter count (113,673,219: its channels, levels
# and attention level at 32x32, so that one image's compute fits this machine)
# trained for a few steps over emulated nodes (ops/netns-cluster.sh: one rank per
# network namespace, TCP over tc-shaped veth links), W workers and S server shards,
# one image per worker, fp32 codec, at link speeds scaled so that the broadcast's
# share of a step matches a real cluster's (docs/scaling.md, "Measured on emulated
# nodes"). Prints, per run, the measured split of a step next to what
# bench/scaling_model.py predicts for the same links and the measured compute.
#   bash bench/cluster_bench.sh [STEPS]    (needs root, make all test-build build/bench/bench_step)
# Environment: BENCH_CLUSTER_RUNS ("W:S:RATE ...", RATE a tc rate like 2gbit),
# BENCH_CLUSTER_BIN (default build/ddpm-train; an older build to compare),
# BENCH_CLUSTER_TIMEOUT (seconds per run, default 900), BENCH_CLUSTER_MCA (extra
# mpirun arguments, default "--mca btl_tcp_progress_thread 1": Open MPI's TCP
# transport then moves data while the ranks compute, see docs/scaling.md).
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-4}"
RUNS="${BENCH_CLUSTER_RUNS:-2:1:4gbit 2:1:1gbit 4:1:1gbit 2:2:1gbit}"
BIN="${BENCH_CLUSTER_BIN:-build/ddpm-train}"
LIMIT="${BENCH_CLUSTER_TIMEOUT:-900}"
read -r -a MCA <<<"${BENCH_CLUSTER_MCA---mca btl_tcp_progress_thread 1}"
TMP="$(mktemp -d /tmp/ddpm-cluster-bench.XXXXXX)"
ID=$(( $$ % 900000 + 1000 ))
cleanup() { NETNS_CLUSTER_ID=$ID ops/netns-cluster.sh down >/dev/null 2>&1; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
build/tools/shard_tool make "$TMP/data" 256 32 3 128 1 >/dev/null || { echo "shard_tool failed (make test-build)"; exit 1; }
cat >"$TMP/lsun32.yaml" <<YAML
model:
  image_size: 32
  in_channels: 3
  ch: 128
  ch_mult: [1, 1, 2, 2, 4, 4]
  num_res_blocks: 2
  attn_resolutions: [2]    # level 4 (512 channels), as lsun256's 16x16
  dropout: 0.0
diffusion:
  timesteps: 1000
training:
  batch_size: 2            # set per run: one image per worker
  steps: 3
  micro_batch: 1
  lr: 0.00002
  log_every: 1
  checkpoint_every: 0
data:
  format: shards
  path: $TMP/data
distributed:
  codec: fp32
  timeout_s: 300
output:
  dir: $TMP/unused
YAML
echo "# cluster benchmark: $BIN ${MCA[*]}, $STEPS steps per run, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
# how the forward's time spreads over its layers (one thread, as a worker rank runs):
# the model's broadcast-under-forward prediction uses it (cluster_report.py)
OMP_NUM_THREADS=1 nice -n 5 build/bench/bench_step train "$TMP/lsun32.yaml" 1 --threads 1 --steps 1 \
    --warmup 1 --layer-profile "$TMP/layers.csv" >"$TMP/layers.log" 2>&1 ||
    echo "# bench_step --layer-profile failed ($(tail -1 "$TMP/layers.log")): layers spread by MACs"
for run in $RUNS; do
    IFS=: read -r W S RATE <<<"$run"
    K=$((W + S))
    out="$TMP/w${W}s${S}_$RATE"
    export NETNS_CLUSTER_ID=$ID NETNS_CLUSTER_RATE=$RATE
    ops/netns-cluster.sh up $K >/dev/null || { echo "cannot make the emulated cluster"; exit 3; }
    timeout -k 5 "$LIMIT" nice -n 5 ops/netns-cluster.sh mpirun "${MCA[@]}" -x OMP_NUM_THREADS=1 -np $K "$BIN" \
        "$TMP/lsun32.yaml" distributed.servers=$S training.batch_size=$W training.steps="$STEPS" \
        output.dir="$out" >"$out.log" 2>&1
    echo "$W $S $RATE $? $(cut -d' ' -f1 /proc/loadavg)" >>"$TMP/runs"
    ops/netns-cluster.sh down >/dev/null
done
/usr/bin/python3 bench/cluster_report.py "$TMP"
[ -z "${BENCH_CLUSTER_KEEP:-}" ] || cp -r "$TMP" "$BENCH_CLUSTER_KEEP"
