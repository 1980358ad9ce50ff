#!/usr/bin/env bash
# Distributed training over Open MPI (ranks = server shards + workers): results do
# not depend on the layout, a checkpoint resumes on another layout, the codecs run
# and report their bytes, and a worker that hangs or dies ends the job with a
# message naming it.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/dist"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
export OMPI_MCA_btl_vader_single_copy_mechanism=none   # containers without CMA
CFG=configs/tiny_fashion.yaml
STEPS=20
# batch 5: uneven shares (3+2, 2+2+1) on purpose. ch 64 gives every GroupNorm two
# channels per group, so that only the attention key biases have a gradient that is
# zero in exact arithmetic (compare_runs.py checks those against Adam's step bound).
COMMON=(model.ch=64 model.ch_mult=[1,2] model.num_res_blocks=1 training.batch_size=5 training.steps=$STEPS
        training.log_every=1 training.checkpoint_every=10 training.warmup_steps=5
        distributed.codec=fp32 distributed.timeout_s=20)
# sum of the learning rates over the 20 steps: warmup 5 (0, .2, .4, .6, .8) + 15 full
ZERO=('attn[._][0-9]*\.k\.bias' 0.0034)
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
state() { build/tools/ckpt_state "$1" "$2" >/dev/null 2>&1; }
final() { ls "$1"/ckpt-*.ddpm 2>/dev/null | sort | tail -n 1; }

build/ddpm-train $CFG "${COMMON[@]}" output.dir="$TMP/single" >"$TMP/single.log" 2>&1 \
    || fail "single-process reference run: $(tail -2 "$TMP/single.log")"
state "$(final "$TMP/single")" "$TMP/single.tns"

for layout in "1 1" "2 1" "3 1" "2 2"; do
    set -- $layout; W=$1; S=$2; N=$((W + S)); name="w${W}s${S}"
    if timeout 300 "${MPIRUN[@]}" -np $N build/ddpm-train $CFG "${COMMON[@]}" distributed.servers=$S \
            output.dir="$TMP/$name" >"$TMP/$name.log" 2>&1 && state "$(final "$TMP/$name")" "$TMP/$name.tns"; then
        if $PY tests/ref/compare_runs.py "$TMP/$name.tns" "$TMP/single.tns" "$TMP/$name/metrics.jsonl" \
                "$TMP/single/metrics.jsonl" 1e-4 1e-5 "${ZERO[@]}" >"$TMP/$name.cmp" 2>&1; then
            ok "$W worker(s), $S shard(s) ($N ranks) equal the single process after $STEPS steps: $(grep -o 'worst.*' "$TMP/$name.cmp" | head -1 | cut -d, -f1); losses $(grep -o 'worst relative difference [^,]*' "$TMP/$name.cmp")"
        else
            fail "$W worker(s), $S shard(s) differ from the single process: $(grep 'not ok' "$TMP/$name.cmp" | head -3)"
        fi
    else
        fail "mpirun -np $N ($W workers, $S shards) failed: $(grep -v '^\[' "$TMP/$name.log" | tail -5)"
    fi
done

# resume on another layout: 10 steps on (2 workers, 2 shards), then 10 more on (1, 1)
"${MPIRUN[@]}" -np 4 build/ddpm-train $CFG "${COMMON[@]}" training.steps=10 distributed.servers=2 \
    output.dir="$TMP/relayout" >"$TMP/relayout1.log" 2>&1
"${MPIRUN[@]}" -np 2 build/ddpm-train $CFG "${COMMON[@]}" distributed.servers=1 \
    output.dir="$TMP/relayout" --resume auto >"$TMP/relayout2.log" 2>&1
if grep -q "resumed from .*ckpt-0000000010.ddpm at step 10 (written by 4 rank(s))" "$TMP/relayout2.log" \
   && state "$(final "$TMP/relayout")" "$TMP/relayout.tns" \
   && $PY tests/ref/compare_runs.py "$TMP/relayout.tns" "$TMP/single.tns" "$TMP/relayout/metrics.jsonl" \
        "$TMP/single/metrics.jsonl" 1e-4 1e-5 "${ZERO[@]}" >"$TMP/relayout.cmp" 2>&1; then
    ok "a checkpoint written by 2 workers + 2 shards resumes on 1 worker + 1 shard and ends equal to the single process"
else
    fail "resume on another layout: $(tail -3 "$TMP/relayout2.log") $(grep 'not ok' "$TMP/relayout.cmp" 2>/dev/null)"
fi

# compressed codecs run, log bytes per step and a compression ratio
for codec in fp32_zstd bf16_zstd; do
    if "${MPIRUN[@]}" -np 3 build/ddpm-train $CFG "${COMMON[@]}" training.steps=4 distributed.codec=$codec \
            output.dir="$TMP/$codec" >"$TMP/$codec.log" 2>&1 \
       && $PY -c "
import json,sys
r=[json.loads(l) for l in open('$TMP/$codec/metrics.jsonl')]
assert len(r)==4 and all(x['bytes_per_step']>0 and x['compression']>1.0 for x in r), r[-1]
print(f\"{r[-1]['bytes_per_step']:.0f} bytes/step, {r[-1]['compression']:.2f}x\")" >"$TMP/$codec.out" 2>&1; then
        ok "codec $codec: 2 workers train and log $(cat "$TMP/$codec.out")"
    else
        fail "codec $codec: $(tail -3 "$TMP/$codec.log") $(cat "$TMP/$codec.out" 2>/dev/null)"
    fi
done

# a rank stopped (SIGSTOP, as a hung or suspended process) in any phase: the job
# ends non-zero within distributed.timeout_s + the 2 s liveness grace of that phase,
# and the message names the rank, its role, the phase and the step. 4 ranks: 0 =
# coordinator + shard 0, 1 = shard 1, 2 and 3 = workers; the default tiny model
# (a step is well below the 3 s timeout even with the cases run side by side).
# "rank phase step expected-message"
# (a worker stopped before taking its work is also named by shard 1 as missing
# from the gradient push: both name it. The broadcast after step 2's update is
# not waited for as a phase of its own: the next step's control, work and forward
# go on while it arrives, so a rank stopped before taking part in it is named by
# whichever of those waits for it first; a shard stopped before the pushes of step
# 2 has not finished sending its chunks of step 1's broadcast either)
HANGS=("3|broadcast|2|(parameter broadcast of step 2|work assignment of step 3|gradient push of step 3): rank 3 \(worker 1"
       "2|work|2|(work assignment|gradient push) of step 2: rank 2 \(worker 0"
       "1|push|2|(gradient push.* of step 2: rank 1 \(server shard 1; chunk|parameter broadcast of step 1: rank 1 \(server shard 1)"
       "1|gather|2|optimizer state gather for the checkpoint of step 2: rank 1 \(server shard 1; chunk"
       "0|broadcast|2|(parameter broadcast of step 2|step control from the coordinator of step 3): rank 0 \(coordinator and server shard 0\)")
for i in "${!HANGS[@]}"; do
    IFS='|' read -r r phase step msg <<<"${HANGS[$i]}"
    ( t0=$(date +%s)
      DDPM_TEST_HANG_RANK=$r DDPM_TEST_HANG_STEP=$step DDPM_TEST_HANG_PHASE=$phase timeout 120 "${MPIRUN[@]}" \
          -x DDPM_TEST_HANG_RANK -x DDPM_TEST_HANG_STEP -x DDPM_TEST_HANG_PHASE -np 4 build/ddpm-train $CFG \
          training.batch_size=2 training.steps=4 training.checkpoint_every=2 distributed.servers=2 \
          distributed.timeout_s=3 output.dir="$TMP/hang$r$phase" >"$TMP/hang$r$phase.log" 2>&1
      echo "$? $(( $(date +%s) - t0 ))" >"$TMP/hang$r$phase.rc" ) &
done
wait
for h in "${HANGS[@]}"; do
    IFS='|' read -r r phase step msg <<<"$h"
    read -r rc dt <"$TMP/hang$r$phase.rc"
    line=$(grep -m1 -E "^ddpm-train: rank [0-9]+: ($msg).*did not take part within 3\.[0-9] s .*stopped, dead or too slow" "$TMP/hang$r$phase.log")
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "stopping (SIGSTOP) at $phase, step $step" "$TMP/hang$r$phase.log" \
       && [ -n "$line" ] \
       && ! grep -E "^ddpm-train: rank [0-9]+: .*did not take part" "$TMP/hang$r$phase.log" | grep -vqE "rank $r \("; then
        ok "rank $r stopped at $phase of step $step: the job ends (exit $rc after ${dt} s, timeout 3 s) naming it: ${line#ddpm-train: }"
    else
        fail "rank $r stopped at $phase of step $step: exit $rc after ${dt} s: $(grep -v '^\[' "$TMP/hang$r$phase.log" | grep -v '^step' | tail -4)"
    fi
done
# a worker that dies
t0=$(date +%s)
DDPM_TEST_CRASH_RANK=1 DDPM_TEST_CRASH_STEP=2 timeout 120 "${MPIRUN[@]}" -x DDPM_TEST_CRASH_RANK -x DDPM_TEST_CRASH_STEP \
    -np 3 build/ddpm-train $CFG "${COMMON[@]}" distributed.timeout_s=3 output.dir="$TMP/crash" >"$TMP/crash.log" 2>&1
rc=$?; dt=$(( $(date +%s) - t0 ))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "process rank 1 .*exited on signal 9" "$TMP/crash.log"; then
    ok "a worker killed by SIGKILL ends the job (exit $rc after ${dt} s), the message names rank 1"
else
    fail "dying worker: exit $rc after ${dt} s: $(tail -4 "$TMP/crash.log")"
fi
# a worker whose loss statistics count more samples than its share is named
DDPM_TEST_BAD_STATS_RANK=2 timeout 120 "${MPIRUN[@]}" -x DDPM_TEST_BAD_STATS_RANK -np 3 build/ddpm-train $CFG \
    training.batch_size=3 training.steps=2 distributed.timeout_s=10 output.dir="$TMP/badstats" >"$TMP/badstats.log" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "gradient push from rank 2, step 1: loss statistics over 2 samples (its share is 1)" "$TMP/badstats.log" \
    && ok "a worker that misreports its sample count is named: $(grep -o 'gradient push from rank 2[^:]*' "$TMP/badstats.log" | head -1)" \
    || fail "misreported sample count: exit $rc: $(grep -v '^\[' "$TMP/badstats.log" | tail -3)"
# more servers than ranks allow
"${MPIRUN[@]}" -np 2 build/ddpm-train $CFG "${COMMON[@]}" distributed.servers=2 output.dir="$TMP/bad" >"$TMP/bad.log" 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "at least one worker" "$TMP/bad.log" && ok "servers >= ranks is refused with a message" \
    || fail "servers >= ranks: exit $rc: $(tail -2 "$TMP/bad.log")"
