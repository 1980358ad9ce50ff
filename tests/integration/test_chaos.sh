#!/usr/bin/env bash
# Chaos: SIGKILL a single-process training run at many moments (start-up, resume,
# mid-step, mid-checkpoint) and restart it each time with --resume auto. Every
# other kill lands inside a checkpoint write on purpose (DDPM_TEST_KILL_AT_BYTE=N:
# the writer dies once the temp file holds N bytes). After every kill each
# ckpt-*.ddpm in the folder must verify completely (no torn file ever takes a
# checkpoint's name); every restart must resume from the newest one without
# skipping any; the final parameters must equal an uninterrupted run's bit for bit.
#   CHAOS_KILLS=N (default 6; `make chaos` runs 24), CHAOS_SEED=S (default: random,
#   printed, so a failure can be replayed).
set -u
KILLS="${CHAOS_KILLS:-6}"
SEED="${CHAOS_SEED:-$(( $(date +%s) % 32768 ))}"
RANDOM=$SEED
if [ -n "${DDPM_TEST_TMP:-}" ]; then
    TMP="$DDPM_TEST_TMP/chaos"
else
    TMP="$(mktemp -d /tmp/ddpm-chaos.XXXXXX)"; trap 'rm -rf "$TMP"' EXIT
fi
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
ok() { echo "ok - $*"; }
nfail=0
fail() { echo "not ok - $*"; nfail=$((nfail + 1)); }

STEPS=$(( 40 + 5 * KILLS ))
ARGS=(configs/tiny_fashion.yaml model.ch_mult=[1,2] model.num_res_blocks=1 training.batch_size=4
      training.log_every=1 training.steps=$STEPS training.checkpoint_every=3
      training.keep_checkpoints=3 training.threads=1)
RUN="$TMP/run"
ckpt_name() { printf 'ckpt-%010d.ddpm' "$1"; }
newest() { ls "$1"/ckpt-*.ddpm 2>/dev/null | sort | tail -n 1; }
tmp_files() { (cd "$RUN" 2>/dev/null && stat -c '%n %s' .ckpt-*.tmp 2>/dev/null); }
rand30() { echo $(( (RANDOM << 15) | RANDOM )); }

# the uninterrupted reference; its checkpoint sizes bound the mid-write kill offsets
build/ddpm-train "${ARGS[@]}" training.keep_checkpoints=1000 output.dir="$TMP/ref" >"$TMP/ref.log" 2>&1 \
    || { fail "reference run: $(tail -2 "$TMP/ref.log")"; exit 1; }
minsize=$(stat -c %s "$TMP"/ref/ckpt-*.ddpm | sort -n | head -1)
echo "# chaos: $KILLS kills, seed $SEED, $STEPS steps, checkpoints of $minsize+ bytes"

kills=0; midwrite=0; natural_mid=0; verified=0; bad=0; runs=0; j=0
for i in $(seq 1 "$KILLS"); do
    expect="$(newest "$RUN")"
    tmp_before="$(tmp_files)"
    log="$TMP/run$i.log"
    env=()
    if [ $((i % 2)) -eq 0 ]; then
        # mid-write: the head of the file (header records), its tail (footer), or anywhere
        case $((j % 3)) in
            0) at=$(( RANDOM % 4096 )) ;;
            1) at=$(( minsize - 1 - RANDOM % 4096 )) ;;
            *) at=$(( $(rand30) % minsize )) ;;
        esac
        j=$((j + 1))
        env=(DDPM_TEST_KILL_AT_BYTE=$at)
        # (braces + 2>/dev/null: no "Killed" notice from the shell)
        { env "${env[@]}" build/ddpm-train "${ARGS[@]}" output.dir="$RUN" --resume auto >"$log" 2>&1; } 2>/dev/null
        rc=$?
        how="mid-write at byte $at"
    else
        build/ddpm-train "${ARGS[@]}" output.dir="$RUN" --resume auto >"$log" 2>&1 &
        pid=$!
        delay=$(( 50 + RANDOM % 2450 ))
        sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
        kill -9 $pid 2>/dev/null
        { wait $pid; } 2>/dev/null
        rc=$?
        how="after ${delay} ms"
    fi
    runs=$((runs + 1))
    if [ $rc -ne 137 ]; then
        fail "kill $i ($how): expected death by SIGKILL (137), got exit $rc: $(tail -2 "$log")"
        bad=$((bad + 1)); continue
    fi
    kills=$((kills + 1))
    tmpf=$(ls -A "$RUN" 2>/dev/null | grep '^\.ckpt-.*\.tmp$' | head -1)
    if [ -n "${at:-}" ] && [ -n "${env[*]}" ]; then
        # the kill left exactly `at` bytes in the temp file, and nothing was renamed
        size=$( [ -n "$tmpf" ] && stat -c %s "$RUN/$tmpf" || echo none)
        tstep=$(echo "$tmpf" | sed -n 's/^\.ckpt-0*\([0-9][0-9]*\)\.tmp$/\1/p')
        if [ "$size" = "$at" ] && [ -n "$tstep" ] && [ ! -e "$RUN/$(ckpt_name "$tstep")" ]; then
            midwrite=$((midwrite + 1))
        else
            fail "kill $i ($how): expected a $at-byte temp file and no ckpt for its step; found '${tmpf:-none}' ($size bytes)"
            bad=$((bad + 1))
        fi
    elif [ "$(tmp_files)" != "$tmp_before" ] && [ -n "$tmpf" ]; then
        natural_mid=$((natural_mid + 1))   # a new (or grown) temp file: killed while writing
    fi
    unset at
    # every file that carries a checkpoint's name is a complete, verified checkpoint
    for f in "$RUN"/ckpt-*.ddpm; do
        [ -e "$f" ] || continue
        if ! build/tools/ckpt_state "$f" "$TMP/check.tns" >"$TMP/check.log" 2>&1; then
            fail "kill $i ($how): $(basename "$f") does not verify: $(cat "$TMP/check.log")"
            bad=$((bad + 1))
        fi
    done
    # the run resumed from the newest checkpoint that was there when it started
    if grep -q "skipping checkpoint" "$log"; then
        fail "kill $i: the restart skipped a checkpoint: $(grep -m1 'skipping' "$log")"; bad=$((bad + 1))
    elif [ -n "$expect" ] && grep -q "resumed from" "$log"; then
        if grep -q "resumed from $expect at step" "$log"; then verified=$((verified + 1))
        else fail "kill $i: resumed from $(grep -o 'resumed from [^ ]*' "$log"), expected $expect"; bad=$((bad + 1)); fi
    elif [ -z "$expect" ] && grep -q "starting fresh" "$log"; then
        verified=$((verified + 1))
    fi
    echo "# kill $i $how: $(grep -o 'resumed from [^ ]* at step [0-9]*\|starting fresh' "$log" | head -1 || true); newest now $(basename "$(newest "$RUN")" 2>/dev/null)${tmpf:+, temp file $tmpf left}"
done

# the last run goes to the end
expect="$(newest "$RUN")"
build/ddpm-train "${ARGS[@]}" output.dir="$RUN" --resume auto >"$TMP/final.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && { [ -z "$expect" ] || grep -q "resumed from $expect at step" "$TMP/final.log"; } \
   && ! grep -q "skipping checkpoint" "$TMP/final.log"; then
    verified=$((verified + 1))
else
    fail "final run: exit $rc: $(grep -E 'resumed|skipping|error' "$TMP/final.log" | head -3)"; bad=$((bad + 1))
fi

[ $kills -ge "$KILLS" ] && [ $bad -eq 0 ] \
    && ok "$kills SIGKILLs survived ($midwrite placed mid-write with DDPM_TEST_KILL_AT_BYTE, $natural_mid more timed kills that also landed mid-write; seed $SEED): every ckpt-*.ddpm verified after every kill" \
    || fail "kills: $kills of $KILLS landed, $midwrite mid-write, $bad problems (seed $SEED)"
[ $midwrite -ge $(( KILLS / 2 )) ] && ok "every placed mid-write kill left a torn temp file of exactly N bytes that never took a checkpoint's name ($midwrite)" \
    || fail "placed mid-write kills: $midwrite of $(( KILLS / 2 ))"
[ -z "$(ls -A "$RUN" | grep '\.tmp$')" ] && ok "no temp file left once the run finished (stale ones are pruned)" \
    || fail "temp files left: $(ls -A "$RUN" | grep '\.tmp$')"
[ $verified -ge 1 ] && ok "$verified restarts checked: each resumed from the newest checkpoint (or started fresh when there was none), none skipped a corrupt one" \
    || fail "no restart could be checked"

final="$RUN/$(ckpt_name $STEPS)"; reff="$TMP/ref/$(ckpt_name $STEPS)"
if build/tools/ckpt_state "$final" "$TMP/run.tns" >/dev/null 2>&1 && build/tools/ckpt_state "$reff" "$TMP/ref.tns" >/dev/null 2>&1 \
   && cmp -s "$TMP/run.tns" "$TMP/ref.tns"; then
    ok "after $kills kills the step-$STEPS params, EMA, Adam m/v and data cursor equal the uninterrupted run bit for bit"
else
    fail "final state after $kills kills differs from the uninterrupted run (seed $SEED)"
fi
# every step logged once (a restart removes the lines logged after its checkpoint),
# with the uninterrupted run's numbers
if $PY - "$RUN/metrics.jsonl" "$TMP/ref/metrics.jsonl" "$STEPS" >"$TMP/metrics.cmp" 2>&1 <<'PYEOF'
import json, sys
drop = {"images_per_s", "elapsed"}
def rows(p):
    out = []
    for line in open(p):
        r = json.loads(line)
        out.append({k: v for k, v in r.items() if k not in drop})
    return out
run, ref = rows(sys.argv[1]), rows(sys.argv[2])
n = int(sys.argv[3])
by_step = {r["step"]: r for r in ref}
assert sorted(by_step) == list(range(1, n + 1))
assert {r["step"] for r in run} == set(by_step), "steps missing"
# each start removes the lines logged after its checkpoint (logged again)
assert len(run) == n, f"{len(run)} lines for {n} steps: a step logged twice"
for r in run:
    assert r == by_step[r["step"]], (r, by_step[r["step"]])
print(f"{len(run)} lines for {n} steps, each once")
PYEOF
then
    ok "metrics: $(tail -1 "$TMP/metrics.cmp"); every line equals the uninterrupted run's"
else
    fail "metrics after kills: $(tail -2 "$TMP/metrics.cmp")"
fi
[ $nfail -eq 0 ]   # the exit status `make chaos` acts on
