#!/usr/bin/env bash
# Slurm across emulated nodes (ops/slurm-local.sh start DIR 3, docs/cluster.md): 3
# network namespaces with their own hostnames (ops/netns-cluster.sh), one real
# slurmd in each, slurmctld on node0, munged on the host (its socket is a file that
# every namespace reaches). A job of ops/ddpm.sbatch on 3 nodes (sbatch -N 3 -n 3,
# through ops/ddpm-submit): mpirun launches the remote ranks through srun and Open
# MPI's orted, TCP only; rank 0 = coordinator + shard 0 on node0, shard 1 on node1,
# the worker on node2. Preempted twice, as test_slurm.sh does on one node:
# `scancel --signal=USR1 --batch` (checkpoint, exit 3, the script requeues) and
# `scontrol requeue` (SIGTERM to every process on every node; shard 1 on node1 must
# still hand rank 0 its optimizer state). Each restart resumes where the run stopped;
# the run completes, its final checkpoint verifies and equals an uninterrupted
# 3-rank run, and metrics.jsonl has every step once. Where network namespaces cannot
# be made or Slurm/munge are not installed, prints "skip - ..." and exits 0
# (tests/run_tests.sh counts it as skipped).
set -u
cd "$(dirname "$0")/../.." || exit 1
for b in build/ddpm-train build/tools/ckpt_state; do   # built by make test-build
    [ -x "$b" ] || { echo "not ok - $b is missing: run make test-build first"; exit 1; }
done
if [ -n "${DDPM_TEST_TMP:-}" ]; then
    TMP="$DDPM_TEST_TMP/slurm-multinode"
else
    TMP="$(mktemp -d /tmp/ddpm-slurmmn-test.XXXXXX)"; RM_TMP=1
fi
rm -rf "$TMP"; mkdir -p "$TMP"
trap '[ -n "${RM_TMP:-}" ] && rm -rf "$TMP"' EXIT
PY=/usr/bin/python3
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
skip() { echo "skip - $*"; }

if [ "$(id -u)" -ne 0 ]; then
    skip "Slurm on emulated nodes: needs root (slurmd, munged, network namespaces); not run"; exit 0
fi
for b in munged munge unmunge slurmctld slurmd sbatch scontrol scancel srun mpirun nsenter unshare ip; do
    command -v $b >/dev/null || { skip "Slurm on emulated nodes: $b is not installed (bash ops/install-deps.sh); not run"; exit 0; }
done

NODES=3
# munged runs as user munge, which must reach its socket: a world-traversable dir
CL="$(mktemp -d /tmp/ddpm-slurmmn.XXXXXX)"
export NETNS_CLUSTER_ID=$(( $$ % 1000000 ))
cleanup() {
    timeout -k 5 60 bash ops/slurm-local.sh stop "$CL" >>"$TMP/stop.log" 2>&1
    rm -rf "$CL"; [ -n "${RM_TMP:-}" ] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
t_all=$(date +%s)
timeout -k 5 90 bash ops/slurm-local.sh start "$CL" $NODES >"$TMP/cluster.log" 2>&1
rc=$?
# 3: the harness could not make the nodes (no network namespace, or no CAP_NET_ADMIN
# for the bridge and links)
if [ $rc -eq 3 ] && grep -q "netns-cluster: cannot make" "$TMP/cluster.log"; then
    skip "Slurm on emulated nodes: $(tr '\n' ' ' <"$TMP/cluster.log")"; exit 0
elif [ $rc -ne 0 ]; then
    fail "cluster of $NODES emulated nodes: start exited $rc: $(tail -4 "$TMP/cluster.log" | tr '\n' ' ')"; exit 1
fi
export SLURM_CONF="$CL/slurm.conf" NETNS_CLUSTER_STATE="$CL/netns"
. ops/netns-cluster.sh     # nc_pids, nc_ns, nc_ip for the checks (the same id and state)
echo "# cluster id $NETNS_CLUSTER_ID: $(tail -1 "$TMP/cluster.log")"
R=(timeout -k 5 30 bash ops/slurm-local.sh run "$CL")   # Slurm's commands, on node0

# every slurmd runs in its own node's namespace, with that node's hostname, and the
# controller sees the nodes idle at their addresses
where=""
for ((i = 0; i < NODES; i++)); do
    p=$(cat "$CL/slurmd-node$i.pid" 2>/dev/null)
    if [ -n "$p" ] && nc_pids $i | grep -qx "$p"; then
        where+="node$i:$(nsenter --uts --target "$p" hostname) "
    else
        where+="node$i:slurmd-not-in-namespace "
    fi
done
nodes_seen=$("${R[@]}" sinfo -h -N -o '%N %o %T' 2>&1 | sort | tr '\n' ';')
want=""; want_host=""
for ((i = 0; i < NODES; i++)); do want+="node$i $(nc_ip $i) idle;"; want_host+="node$i:node$i "; done
if [ "$where" = "$want_host" ] && [ "$nodes_seen" = "$want" ]; then
    ok "$NODES slurmd, each in its node's namespace under its hostname; sinfo: $nodes_seen"
else
    fail "slurmd placement: $where; sinfo: $nodes_seen (expected $want)"
fi

STEPS=60
COMMON=(model.ch_mult=[1,2] model.num_res_blocks=1 training.batch_size=4 training.log_every=1
        "training.steps=$STEPS" training.checkpoint_every=25 training.threads=1
        distributed.servers=2 distributed.codec=fp32)
CFG="$PWD/configs/tiny_fashion.yaml"
TRAIN="$PWD/build/ddpm-train"
REF="$TMP/ref" OUT="$TMP/run" LOG="$TMP/job.log"
state() { build/tools/ckpt_state "$1" "$2" >/dev/null 2>&1; }
last_step() { tail -n 1 "$1/metrics.jsonl" 2>/dev/null | sed -n 's/^{"step": \([0-9]*\),.*/\1/p'; }
job_field() { "${R[@]}" scontrol show job "$1" 2>/dev/null | grep -oE "(^| )$2=[^ ]*" | head -1 | cut -d= -f2; }
wait_for() {   # seconds, command...: polls until the command succeeds
    local n=$(( $1 * 4 )); shift
    for _ in $(seq 1 $n); do "$@" && return 0; sleep 0.25; done
    return 1
}
step_at_least() { local s; s=$(last_step "$1"); [ -n "$s" ] && [ "$s" -ge "$2" ]; }
log_has() { grep -q -- "$2" "$1" 2>/dev/null; }
train_on() {   # node: a ddpm-train runs in its namespace
    local p
    for p in $(nc_pids "$1"); do [ "$(readlink /proc/"$p"/exe 2>/dev/null)" = "$TRAIN" ] && return 0; done
    return 1
}

# the uninterrupted reference: the same 3 ranks on this machine, no Slurm
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
if ! timeout -k 5 120 mpirun --allow-run-as-root --oversubscribe --bind-to none -np $NODES --mca btl tcp,self \
        "$TRAIN" "$CFG" "${COMMON[@]}" output.dir="$REF" >"$REF.log" 2>&1; then
    fail "uninterrupted reference run (3 ranks): $(tail -3 "$REF.log")"; exit 1
fi

# TCP only between the nodes (the sbatch leaves the transport to DDPM_MPIRUN_ARGS)
export DDPM_MPIRUN_ARGS="--mca btl tcp,self"
t0=$(date +%s)
job=$("${R[@]}" ops/ddpm-submit -N $NODES -n $NODES -c 1 -J ddpm-multinode -o "$LOG" --grace 30 \
      "$CFG" "${COMMON[@]}" output.dir="$OUT" 2>"$TMP/submit.err")
if [ -z "$job" ]; then fail "sbatch -N $NODES: $(cat "$TMP/submit.err")"; exit 1; fi
abort() { "${R[@]}" scancel "$job" >/dev/null 2>&1; exit 1; }

# placement: one rank on each node, launched by Slurm
if ! wait_for 60 step_at_least "$OUT" 2; then
    fail "job $job did not reach step 2 ($(job_field "$job" JobState)): $(tail -5 "$LOG" | tr '\n' ' ')"; abort
fi
placed=""; for ((i = 0; i < NODES; i++)); do train_on $i && placed+="node$i "; done
nodelist=$(job_field "$job" NodeList)
if [ "$placed" = "node0 node1 node2 " ] && [ "$nodelist" = "node[0-2]" ] \
   && grep -q "job $job start 1 (restart count 0) on node0: $NODES task(s)" "$LOG"; then
    ok "sbatch -N $NODES: job $job on $nodelist, batch script on node0, a ddpm-train rank in each node's namespace (remote ones through srun + orted)"
else
    fail "placement: job NodeList '$nodelist', ddpm-train found on: ${placed:-none}; $(grep ddpm.sbatch "$LOG" | head -2 | tr '\n' ' ')"
fi

# preemption 1: SIGUSR1 to the batch shell, as --signal=B:USR1@120 would send it
if ! wait_for 60 step_at_least "$OUT" 10; then
    fail "job $job did not reach step 10: $(tail -3 "$LOG" | tr '\n' ' ')"; abort
fi
"${R[@]}" scancel --signal=USR1 --batch "$job"
if ! wait_for 60 log_has "$LOG" "restart count 1,"; then
    fail "no restart after SIGUSR1: $(grep -v '^step' "$LOG" | tail -5 | tr '\n' ' ')"; abort
fi
s1=$(sed -n 's/.*stopped at step \([0-9]*\) on SIGUSR1; \(checkpoint written\|nothing new to checkpoint\); exit code 3.*/\1/p' "$LOG" | head -1)
if [ -n "$s1" ] && grep -q "exited 3 (preempted): requeueing job $job" "$LOG" \
   && wait_for 60 log_has "$LOG" "resumed from .*ckpt-0*$s1.ddpm at step $s1 "; then
    ok "scancel --signal=USR1 --batch at step $s1: mpirun forwarded it to the ranks on all $NODES nodes, checkpoint, exit 3, the script requeued job $job, restart 1 resumed at step $s1"
else
    fail "USR1 preemption: $(grep -E 'stopped|requeue|resumed|error|lost' "$LOG" | tail -5 | tr '\n' ' ')"; abort
fi

# preemption 2: scontrol requeue (SIGTERM to every process of the job on every node:
# the batch shell, mpirun, srun, the orteds and the ranks)
if ! wait_for 60 step_at_least "$OUT" $((s1 + 10)); then
    fail "the restarted job did not reach step $((s1 + 10)): $(tail -3 "$LOG" | tr '\n' ' ')"; abort
fi
"${R[@]}" scontrol requeue "$job"
if ! wait_for 60 log_has "$LOG" "restart count 2,"; then
    fail "no restart after scontrol requeue: $(grep -v '^step' "$LOG" | tail -5 | tr '\n' ' ')"; abort
fi
# "nothing new to checkpoint" when the signal met a periodic checkpoint's step (whose
# gather is logged all the same)
s2=$(sed -n 's/.*stopped at step \([0-9]*\) on [A-Z0-9+]*SIGTERM[A-Z0-9+]*; \(checkpoint written\|nothing new to checkpoint\); exit code 0.*/\1/p' "$LOG" | head -1)
if [ -n "$s2" ] && [ "$s2" -gt "$s1" ] \
   && grep -q "checkpoint of step $s2: optimizer state of shards 1..1 gathered" "$LOG" \
   && ! grep -q "lost communication" "$LOG" \
   && sed -n '/restart count 1,/,/restart count 2,/p' "$LOG" | grep -q 'ddpm.sbatch: ddpm-train exited with status 0' \
   && wait_for 60 log_has "$LOG" "resumed from .*ckpt-0*$s2.ddpm at step $s2 "; then
    ok "scontrol requeue at step $s2: SIGTERM on every node, shard 1 on node1 sent rank 0 its optimizer state, checkpoint on disk, mpirun exited 0 (no daemon lost), Slurm requeued, restart 2 resumed at step $s2"
else
    fail "scontrol requeue: $(grep -E 'stopped|gathered|requeue|resumed|exited|error|lost' "$LOG" | tail -6 | tr '\n' ' ')"; abort
fi

job_done() { [ "$(job_field "$job" JobState)" = COMPLETED ]; }
if ! wait_for 90 job_done; then
    fail "job $job not COMPLETED ($(job_field "$job" JobState)): $(tail -3 "$LOG" | tr '\n' ' ')"; abort
fi
restarts=$(job_field "$job" Restarts)
final="$OUT/ckpt-$(printf %010d $STEPS).ddpm" reff="$REF/ckpt-$(printf %010d $STEPS).ddpm"
if [ "$restarts" = 2 ] && state "$final" "$TMP/run.tns" && state "$reff" "$TMP/ref.tns" \
   && cmp -s "$TMP/run.tns" "$TMP/ref.tns"; then
    ok "job $job COMPLETED after $restarts restarts ($(( $(date +%s) - t0 )) s): the checkpoint of step $STEPS verifies; params, EMA, Adam m/v equal the uninterrupted 3-rank run bit for bit"
else
    fail "final state: restarts '$restarts'; $(basename "$final") $(state "$final" "$TMP/run.tns" && echo verifies || echo 'missing or does not verify'); $(cmp "$TMP/run.tns" "$TMP/ref.tns" 2>&1 | head -1)"
fi
if $PY tests/tools/metrics_same.py "$OUT/metrics.jsonl" "$REF/metrics.jsonl" $STEPS >"$TMP/metrics.cmp" 2>&1
then
    ok "metrics.jsonl logs steps 1..$STEPS once each across the 3 starts, every loss and norm equal to the uninterrupted run's"
else
    fail "metrics across restarts: $(tail -2 "$TMP/metrics.cmp")"
fi
echo "# $(( $(date +%s) - t_all )) s in all"
