#!/usr/bin/env bash
# Distributed training across emulated nodes (ops/netns-cluster.sh, docs/cluster.md):
# 5 network namespaces with their own hostnames, one rank per node, TCP only over
# shaped veth links (1 Gbit/s per direction). Checks: the ranks land on their nodes;
# coordinator + 2 shards + 2 workers equal the single process (the tolerance of
# test_distributed.sh); a checkpoint resumes on another layout; each codec runs; a
# worker's link taken down mid-step, a slow link and a killed node each end the job
# with a non-zero exit within a stated bound and a message naming the rank or node,
# no process is left on any node, and `--resume auto` then completes with every
# checkpoint verifying. Where network namespaces cannot be made (no CAP_NET_ADMIN),
# prints "skip - ..." lines and exits 0 (tests/run_tests.sh counts them as skipped).
set -u
cd "$(dirname "$0")/../.."
if [ -n "${DDPM_TEST_TMP:-}" ]; then
    TMP="$DDPM_TEST_TMP/cluster"
else
    TMP="$(mktemp -d /tmp/ddpm-cluster.XXXXXX)"; RM_TMP=1
fi
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
skip() { echo "skip - $*"; }
state() { build/tools/ckpt_state "$1" "$2" >/dev/null 2>&1; }
final() { ls "$1"/ckpt-*.ddpm 2>/dev/null | sort | tail -n 1; }

export NETNS_CLUSTER_ID=$(( $$ % 1000000 )) NETNS_CLUSTER_STATE="$TMP/netns"
export NETNS_CLUSTER_RATE=1gbit NETNS_CLUSTER_DELAY=0.2ms
. ops/netns-cluster.sh
trap 'nc_down; [ -n "${RM_TMP:-}" ] && rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
NODES=5
if [ "$(id -u)" -ne 0 ]; then
    skip "emulated cluster: needs root (network namespaces, CAP_NET_ADMIN); not run"; exit 0
fi
nc_up $NODES >"$TMP/up.log" 2>&1
rc=$?
if [ $rc -eq 3 ] && grep -q "cannot make a network namespace" "$TMP/up.log"; then
    skip "emulated cluster: $(cat "$TMP/up.log" | tr '\n' ' ')"; exit 0
elif [ $rc -ne 0 ]; then
    fail "emulated cluster: up $NODES: $(cat "$TMP/up.log" | tr '\n' ' ')"; exit 1
fi
echo "# $(nc_info | head -1)"

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# keepalives on mpirun's own connections (Open MPI's default: 300 s + 9 x 20 s), so
# that mpirun notices a node it cannot reach within seconds (docs/cluster.md)
KEEP=(--mca oob_tcp_keepalive_time 1 --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 2)
MPI=(timeout -k 5 90 ops/netns-cluster.sh mpirun "${KEEP[@]}" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS)
# in the background and waited for, so that a signal to this script runs its traps
# at once (nc_down kills mpirun and the ranks) rather than after the launch ends
mpi() {
    "${MPI[@]}" "$@" &
    wait $!
}
TRAIN="$PWD/build/ddpm-train"
CFG=configs/tiny_fashion.yaml
STEPS=10
# the model and batch of test_distributed.sh, 10 steps (batch 5: uneven shares)
COMMON=(model.ch=64 model.ch_mult=[1,2] model.num_res_blocks=1 training.batch_size=5 training.steps=$STEPS
        training.log_every=1 training.checkpoint_every=5 training.warmup_steps=5 training.threads=1
        distributed.codec=fp32 distributed.timeout_s=20)
# sum of the learning rates over the 10 steps: warmup 5 (0, .2, .4, .6, .8) + 5 full
ZERO=('attn[._][0-9]*\.k\.bias' 0.0014)
left_behind() {   # what: no process may stay on any node after mpirun ended
    local p left=""
    sleep 0.3
    for p in $(nc_pids); do left+=" $p:$(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null | cut -c1-60)"; done
    [ -z "$left" ] && return 0
    fail "$1: processes left on the nodes after mpirun ended:$left"
    nc_kill_all
    return 1
}

# the harness: rank i on node i, its own hostname and address, no other interface
if mpi -np $NODES sh -c 'echo "$OMPI_COMM_WORLD_RANK $(hostname) $(ip -o -4 addr show scope global | awk "{print \$2, \$4}")"' \
        >"$TMP/where.log" 2>&1 \
   && [ "$(sort -n "$TMP/where.log" | tr '\n' ';')" = "$(for i in $(seq 0 $((NODES - 1))); do printf '%s node%s eth0 %s/24;' $i $i "$(nc_ip $i)"; done)" ]; then
    ok "rank i runs on node i (hostname node<i>, eth0 $(nc_subnet).<i+1>/24, nothing else) for $NODES nodes"
else
    fail "placement of the ranks on the nodes: $(head -c 600 "$TMP/where.log")"
fi
left_behind "placement"

timeout -k 5 120 build/ddpm-train $CFG "${COMMON[@]}" output.dir="$TMP/single" >"$TMP/single.log" 2>&1 \
    || fail "single-process reference run: $(tail -2 "$TMP/single.log")"
state "$(final "$TMP/single")" "$TMP/single.tns"
compare() {   # run: equal to the single process within the distributed tolerance
    state "$(final "$TMP/$1")" "$TMP/$1.tns" \
        && $PY tests/ref/compare_runs.py "$TMP/$1.tns" "$TMP/single.tns" "$TMP/$1/metrics.jsonl" \
            "$TMP/single/metrics.jsonl" 1e-4 1e-5 "${ZERO[@]}" >"$TMP/$1.cmp" 2>&1
}

# (a) coordinator + shard 1 + 3 workers on 5 nodes
t0=$SECONDS
if mpi -np 5 "$TRAIN" $CFG "${COMMON[@]}" distributed.servers=2 output.dir="$TMP/eq" >"$TMP/eq.log" 2>&1 \
   && compare eq; then
    ok "5 nodes (coordinator + shard 0, shard 1, 3 workers) equal the single process after $STEPS steps ($((SECONDS - t0)) s): $(grep -o 'worst.*' "$TMP/eq.cmp" | head -1 | cut -d, -f1)"
else
    fail "5 nodes vs the single process: $(grep -v '^\[' "$TMP/eq.log" | tail -4) $(grep 'not ok' "$TMP/eq.cmp" 2>/dev/null | head -3)"
fi
left_behind "5-node run"

# (b) (a)'s checkpoint of step 5 (5 nodes: 2 shards, 3 workers) resumes on 3 nodes
# (1 shard, 2 workers) for the 5 steps left
mkdir -p "$TMP/relayout"
cp "$TMP/eq/ckpt-0000000005.ddpm" "$TMP/relayout/" 2>/dev/null
$PY -c "
import json, sys
with open('$TMP/relayout/metrics.jsonl', 'w') as out:
    out.writelines(l for l in open('$TMP/eq/metrics.jsonl') if json.loads(l)['step'] <= 5)" 2>/dev/null
mpi -np 3 "$TRAIN" $CFG "${COMMON[@]}" distributed.servers=1 \
    output.dir="$TMP/relayout" --resume auto >"$TMP/relayout.log" 2>&1
if grep -q "resumed from .*ckpt-0000000005.ddpm at step 5 (written by 5 rank(s))" "$TMP/relayout.log" \
   && compare relayout; then
    ok "the checkpoint of step 5 written on 5 nodes (2 shards, 3 workers) resumes on 3 nodes (1 shard, 2 workers) and ends equal to the single process"
else
    fail "resume on another layout: $(grep -v '^\[' "$TMP/relayout.log" | tail -3) $(grep 'not ok' "$TMP/relayout.cmp" 2>/dev/null)"
fi
left_behind "relayout"

# the default tiny model, batch 2, 4 nodes: rank 0 = coordinator + shard 0 (node0),
# rank 1 = shard 1 (node1), ranks 2, 3 = workers (node2, node3)
FAULT=($CFG training.batch_size=2 training.steps=6 training.checkpoint_every=2 training.log_every=1
       training.threads=1 distributed.servers=2 distributed.timeout_s=3)

# (c) every codec runs across nodes and logs its bytes (fp32 is (a)'s; the others on
# the smaller model, 3 steps)
for codec in fp32 fp32_zstd bf16_zstd; do
    run="$TMP/eq"
    if [ $codec != fp32 ]; then
        run="$TMP/$codec"
        mpi -np 4 "$TRAIN" "${FAULT[@]}" training.steps=3 distributed.codec=$codec \
            output.dir="$run" >"$TMP/$codec.log" 2>&1
    fi
    if $PY - "$run/metrics.jsonl" $codec >"$TMP/$codec.out" 2>&1 <<'PYEOF'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
least = 1.0 if sys.argv[2] != "fp32" else 0.999
assert len(r) >= 3 and all(x["bytes_per_step"] > 0 and x["compression"] > least for x in r), r[-1]
print(f"{len(r)} steps, {r[-1]['bytes_per_step']:.0f} bytes/step, {r[-1]['compression']:.2f}x")
PYEOF
    then
        ok "codec $codec across nodes: $(cat "$TMP/$codec.out")"
    else
        fail "codec $codec: $(grep -v '^\[' "$TMP/$codec.log" 2>/dev/null | tail -3) $(tail -2 "$TMP/$codec.out")"
    fi
    left_behind "codec $codec"
done

# (d) network faults on those 4 nodes; the fault hits node3 (worker 1) once
# step 3 has been logged (checkpoint of step 2 written). timeout_s 3, liveness grace
# 2 s; a rank that answers liveness checks but does not take part is named after
# 4 x timeout_s (common/dist/dist.h, DIST_MAX_ROUNDS). Bounds, from the fault to
# mpirun's exit: timeout_s + grace + 6 s margin for a link down or a killed rank,
# 4 x timeout_s + grace + 6 s for a slow link. A run that completes despite the
# fault passes too (the fault then did not stop it), as long as --resume auto after
# it finds a checkpoint and completes.
verify_all() {   # dir: every ckpt-*.ddpm verifies
    local f bad=""
    for f in "$1"/ckpt-*.ddpm; do
        [ -e "$f" ] || continue
        build/tools/ckpt_state "$f" "$TMP/check.tns" >"$TMP/check.log" 2>&1 || bad+=" $(basename "$f"): $(head -c 200 "$TMP/check.log")"
    done
    [ -z "$bad" ] || { echo "$bad"; return 1; }
}
fault() {   # id name bound-s expected-message(ERE) inject-command...
    local id=$1 name=$2 bound=$3 msg=$4; shift 4
    local run="$TMP/$id" log="$TMP/$id.log" pid t_in dt rc i
    "${MPI[@]}" -np 4 "$TRAIN" "${FAULT[@]}" output.dir="$run" >"$log" 2>&1 &
    pid=$!
    for ((i = 0; i < 600; i++)); do
        grep -qs '"step": 3,' "$run/metrics.jsonl" && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.05
    done
    t_in=$(date +%s%N)
    "$@"
    wait $pid
    rc=$?
    dt=$(( ($(date +%s%N) - t_in) / 1000000 ))
    nc_link 3 up; nc_shape 3 "$NETNS_CLUSTER_RATE"
    local said; said=$(grep -m1 -E "$msg" "$log")
    if ! grep -qs '"step": 3,' "$run/metrics.jsonl"; then
        fail "$name: the run did not reach step 3 before the fault: exit $rc: $(grep -v '^\[' "$log" | tail -3)"
    elif [ $rc -eq 0 ] && [ "$(basename "$(final "$run")")" = ckpt-0000000006.ddpm ]; then
        ok "$name: the run completes anyway, $(printf '%d.%d' $((dt / 1000)) $((dt % 1000 / 100))) s after the fault"
    elif [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $dt -le $((bound * 1000)) ] && [ -n "$said" ]; then
        ok "$name: the job ends (exit $rc) $(printf '%d.%d' $((dt / 1000)) $((dt % 1000 / 100))) s after the fault (bound $bound s): ${said#ddpm-train: }"
    else
        fail "$name: exit $rc $(printf '%d.%d' $((dt / 1000)) $((dt % 1000 / 100))) s after the fault (bound $bound s); expected /$msg/: $(grep -v '^\[' "$log" | grep -v '^step' | tail -6 | tr '\n' ' ')"
    fi
    left_behind "$name"
    # the same 4 nodes, link restored: --resume auto completes, every checkpoint verifies
    mpi -np 4 "$TRAIN" "${FAULT[@]}" output.dir="$run" --resume auto >"$TMP/$id.resume.log" 2>&1
    rc=$?
    local from bad
    from=$(grep -o 'resumed from [^ ]* at step [0-9]*' "$TMP/$id.resume.log" | head -1)
    if [ $rc -eq 0 ] && [ -n "$from" ] && [ "$(basename "$(final "$run")")" = ckpt-0000000006.ddpm ] \
       && bad=$(verify_all "$run"); then
        ok "$name: --resume auto then completes (${from#resumed from $TMP/}), every checkpoint ($(ls "$run"/ckpt-*.ddpm | wc -l)) verifies"
    else
        fail "$name: --resume auto: exit $rc, ${from:-no resume}, newest $(basename "$(final "$run")") ${bad:-}: $(grep -v '^\[' "$TMP/$id.resume.log" | tail -3 | tr '\n' ' ')"
    fi
    left_behind "$name, resumed"
}
kill_rank() {   # node: SIGKILL the ddpm-train running there
    local p
    for p in $(nc_pids "$1"); do
        [ "$(readlink /proc/"$p"/exe 2>/dev/null)" = "$TRAIN" ] && kill -9 "$p"
    done
}
# who the job's end names: ddpm-train's deadline message, or mpirun's lost daemon /
# killed process on node3 (10.200.x.4)
N3="$(nc_ip 3 | sed 's/\./\\./g')"
fault down "link down" 11 "^ddpm-train: rank [0-9]+: .*rank 3 \(worker 1.*did not take part|Remote daemon: .* on node $N3" \
    nc_link 3 down
fault slow "slow link (1 Mbit/s)" 20 "^ddpm-train: rank [0-9]+: .*(did not take part|answer\(s\) liveness)|Remote daemon: .* on node $N3" \
    nc_shape 3 1mbit
fault kill "node killed" 11 "process rank 3 with PID [0-9]+ on node $N3 exited on signal 9" kill_rank 3
