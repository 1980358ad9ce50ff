#!/usr/bin/env bash
# Fixed short training runs whose final state (params, EMA, Adam m and v, step and
# data cursor, via build/tools/ckpt_state) two builds must reproduce bit for bit
# when a change is meant to keep behaviour (a refactor):
#   bash tests/tools/state_identity.sh TREE OUT
# runs TREE's build/ddpm-train (built, with build/tools/ckpt_state) single-process
# (2 threads) and under mpirun with 2 server shards + 2 workers (1 thread a rank,
# bf16_zstd codec), and writes OUT/{single,dist}-ckpt-*.tns. Compare two OUTs with
#   for f in A/*.tns; do cmp "$f" "B/$(basename "$f")"; done
set -u
T=$1; O=$2; rm -rf "$O"; mkdir -p "$O"; O=$(cd "$O" && pwd); cd "$T"
CFG=configs/tiny_fashion.yaml
COMMON=(model.ch=64 model.ch_mult=[1,2] model.num_res_blocks=1 training.batch_size=5 training.steps=12
        training.log_every=1 training.checkpoint_every=6 training.warmup_steps=5 distributed.timeout_s=60)
export OMPI_MCA_btl_vader_single_copy_mechanism=none
OMP_NUM_THREADS=2 build/ddpm-train $CFG "${COMMON[@]}" distributed.codec=fp32 output.dir="$O/single" \
    >"$O/single.log" 2>&1 || echo "single-process run failed: $O/single.log"
OMP_NUM_THREADS=1 timeout 300 mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS \
    -np 4 build/ddpm-train $CFG "${COMMON[@]}" distributed.servers=2 distributed.codec=bf16_zstd \
    output.dir="$O/dist" >"$O/dist.log" 2>&1 || echo "distributed run failed: $O/dist.log"
for r in single dist; do
    for c in "$O/$r"/ckpt-*.ddpm; do build/tools/ckpt_state "$c" "$O/$r-$(basename "$c" .ddpm).tns" >/dev/null; done
done
ls "$O"/*.tns
