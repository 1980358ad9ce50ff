#!/usr/bin/env bash
# Slurm on a real single-node cluster (Debian's munge, slurmctld and slurmd, started
# here by ops/slurm-local.sh under a temp dir and stopped at the end): a small
# training job submitted with ops/ddpm-submit is preempted twice mid-run, once with
# `scancel --signal=USR1 --batch` (checkpoint, exit 3, the script requeues) and once
# with `scontrol requeue` (SIGTERM to every process, Slurm requeues); it restarts by
# itself each time, resumes at the step where it stopped, and its final parameters,
# EMA and Adam state equal those of an uninterrupted run bit for bit. Done twice:
# 2 ranks under mpirun (1 CPU each), and one process launched directly (2 CPUs).
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/slurm"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
export OMPI_MCA_btl_vader_single_copy_mechanism=none   # containers without CMA

if [ "$(id -u)" -ne 0 ]; then fail "the Slurm test needs root (slurmd, munged)"; exit 0; fi
for b in build/ddpm-train build/tools/ckpt_state; do   # built by make test-build
    [ -x "$b" ] || { fail "$b is missing: run make test-build first"; exit 0; }
done
for b in munged slurmctld slurmd sbatch scontrol scancel; do
    command -v $b >/dev/null || { fail "$b is not installed (bash ops/install-deps.sh)"; exit 0; }
done

# munged runs as user munge, which must reach its socket: a world-traversable dir
CL="$(mktemp -d /tmp/ddpm-slurm.XXXXXX)"
cleanup() { bash ops/slurm-local.sh stop "$CL" >/dev/null 2>&1; rm -rf "$CL"; }
trap cleanup EXIT
if bash ops/slurm-local.sh start "$CL" >"$TMP/cluster.log" 2>&1; then
    ok "single-node cluster up: $(tail -1 "$TMP/cluster.log")"
else
    fail "cluster start: $(tail -3 "$TMP/cluster.log")"; exit 0
fi
export SLURM_CONF="$CL/slurm.conf"

STEPS=70
COMMON=(model.ch_mult=[1,2] model.num_res_blocks=1 training.batch_size=4 training.log_every=1
        training.steps=$STEPS training.checkpoint_every=30 distributed.codec=fp32)
CFG="$PWD/configs/tiny_fashion.yaml"
state() { build/tools/ckpt_state "$1" "$2" >/dev/null 2>&1; }
last_step() { tail -n 1 "$1/metrics.jsonl" 2>/dev/null | sed -n 's/^{"step": \([0-9]*\),.*/\1/p'; }
job_field() { scontrol show job "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -1 | cut -d= -f2; }
wait_for() {   # seconds, command...: polls until the command succeeds
    local n=$(( $1 * 2 )); shift
    for _ in $(seq 1 $n); do "$@" && return 0; sleep 0.5; done
    return 1
}
step_at_least() { local s; s=$(last_step "$1"); [ -n "$s" ] && [ "$s" -ge "$2" ]; }
log_has() { grep -q -- "$2" "$1" 2>/dev/null; }

# scenario NAME TASKS CPUS: reference run, then the preempted job
scenario() {
    local name=$1 tasks=$2 cpus=$3
    local ref="$TMP/$name-ref" out="$TMP/$name-run" log="$TMP/$name.log"
    local launch=(build/ddpm-train)
    [ "$tasks" -gt 1 ] && launch=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$tasks" build/ddpm-train)
    if ! "${launch[@]}" "$CFG" "${COMMON[@]}" training.threads=$cpus output.dir="$ref" >"$ref.log" 2>&1; then
        fail "$name: uninterrupted reference run: $(tail -3 "$ref.log")"; return
    fi
    local t0; t0=$(date +%s)
    local job
    job=$(ops/ddpm-submit -n "$tasks" -c "$cpus" -J "ddpm-$name" -o "$log" --grace 30 \
          "$CFG" "${COMMON[@]}" output.dir="$out" 2>"$TMP/$name.submit")
    if [ -z "$job" ]; then fail "$name: sbatch: $(cat "$TMP/$name.submit")"; return; fi
    local abort="scancel $job"

    # preemption 1: SIGUSR1 to the batch shell, as --signal=B:USR1@120 would send it
    if ! wait_for 120 step_at_least "$out" 12; then
        fail "$name: job $job did not reach step 12 ($(job_field "$job" JobState)): $(tail -3 "$log")"; $abort; return
    fi
    scancel --signal=USR1 --batch "$job"
    if ! wait_for 60 log_has "$log" "restart count 1,"; then
        fail "$name: no restart after SIGUSR1: $(grep -v '^step' "$log" | tail -4)"; $abort; return
    fi
    # "nothing new to checkpoint" when the signal met a periodic checkpoint's step
    local s1; s1=$(sed -n 's/.*stopped at step \([0-9]*\) on SIGUSR1; \(checkpoint written\|nothing new to checkpoint\); exit code 3.*/\1/p' "$log" | head -1)
    if [ -n "$s1" ] && grep -q "exited 3 (preempted): requeueing job $job" "$log" \
       && wait_for 60 log_has "$log" "resumed from .*ckpt-0*$s1.ddpm at step $s1 "; then
        ok "$name: scancel --signal=USR1 --batch at step $s1: checkpoint, exit 3, the script requeued job $job, restart 1 resumed at step $s1 (nothing lost)"
    else
        fail "$name: USR1 preemption: $(grep -E 'stopped|requeue|resumed|error' "$log" | tail -4 | tr '\n' ' ')"; $abort; return
    fi

    # preemption 2: scontrol requeue (SIGTERM to every process of the job, as preemption)
    if ! wait_for 120 step_at_least "$out" $((s1 + 12)); then
        fail "$name: the restarted job did not reach step $((s1 + 12)): $(tail -3 "$log")"; $abort; return
    fi
    scontrol requeue "$job"
    if ! wait_for 90 log_has "$log" "restart count 2,"; then
        fail "$name: no restart after scontrol requeue: $(grep -v '^step' "$log" | tail -4)"; $abort; return
    fi
    local s2; s2=$(sed -n 's/.*stopped at step \([0-9]*\) on [A-Z0-9+]*SIGTERM[A-Z0-9+]*; \(checkpoint written\|nothing new to checkpoint\); exit code 0.*/\1/p' "$log" | head -1)
    if [ -n "$s2" ] && [ "$s2" -gt "$s1" ] && wait_for 60 log_has "$log" "resumed from .*ckpt-0*$s2.ddpm at step $s2 "; then
        ok "$name: scontrol requeue at step $s2: SIGTERM reached ddpm-train, which stopped at the step boundary within the grace time ($(grep -o "step $s2 on [^;]*; [^;]*" "$log" | head -1 | cut -d';' -f2 | sed 's/^ //')), Slurm requeued, restart 2 resumed at step $s2 (nothing lost)"
    else
        fail "$name: scontrol requeue: $(grep -E 'stopped|requeue|resumed|error|warning' "$log" | tail -4 | tr '\n' ' ')"; $abort; return
    fi

    # let it finish
    job_done() { [ "$(job_field "$job" JobState)" = COMPLETED ]; }
    if ! wait_for 180 job_done; then
        fail "$name: job $job not COMPLETED ($(job_field "$job" JobState)): $(tail -3 "$log")"; $abort; return
    fi
    local restarts; restarts=$(job_field "$job" Restarts)
    local starts; starts=$(grep -c "ddpm.sbatch: job $job start" "$log")
    local final="$out/ckpt-$(printf %010d $STEPS).ddpm" reff="$ref/ckpt-$(printf %010d $STEPS).ddpm"
    if state "$final" "$TMP/$name-run.tns" && state "$reff" "$TMP/$name-ref.tns" \
       && cmp -s "$TMP/$name-run.tns" "$TMP/$name-ref.tns"; then
        ok "$name: job $job COMPLETED after $restarts restarts ($starts starts in one appended log, $(( $(date +%s) - t0 )) s): step $STEPS params, EMA, Adam m/v equal the uninterrupted run bit for bit"
    else
        fail "$name: final state differs from the uninterrupted run (or is missing): $(ls "$out")"
    fi
    # every step logged exactly once, with the reference's numbers
    if $PY tests/tools/metrics_same.py "$out/metrics.jsonl" "$ref/metrics.jsonl" $STEPS >"$TMP/$name.cmp" 2>&1
    then
        ok "$name: metrics.jsonl logs steps 1..$STEPS once each across the 3 starts, every loss and norm equal to the uninterrupted run's"
    else
        fail "$name: metrics across restarts: $(tail -2 "$TMP/$name.cmp")"
    fi
    if [ "$restarts" = 2 ] && grep -q "Slurm job $job, restart count 2," "$log"; then
        ok "$name: ddpm-train logged the Slurm restart count (0, 1, 2) at start-up"
    else
        fail "$name: restart count: Slurm says '$restarts'; log: $(grep 'restart count' "$log" | tail -3)"
    fi
}

scenario mpi2 2 1
scenario single 1 2
