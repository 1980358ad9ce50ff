#!/usr/bin/env bash
# The run folder (issue #14): one run at a time owns output.dir (rows 7: the lock,
# released by the kernel on kill -9), and pruning never deletes a checkpoint that
# verifies in favour of one that does not (row 3: keep_checkpoints=1 with the
# newest corrupt). Tiny model, a few steps each.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/runfolder"
rm -rf "$TMP"; mkdir -p "$TMP"
CFG=configs/tiny_fashion.yaml
# the smallest model the config allows, on 32 random 8x8 images (no 60000-image load)
/usr/bin/python3 -c "
import struct, random
random.seed(1)
open('$TMP/tiny.idx', 'wb').write(struct.pack('>IIII', 0x803, 32, 8, 8) + bytes(random.randrange(256) for _ in range(32 * 64)))"
SMALL=(model.image_size=8 model.ch_mult=[1] model.attn_resolutions=[] model.num_res_blocks=1 diffusion.timesteps=50
       training.batch_size=2 training.log_every=1 training.threads=1 data.path="$TMP/tiny.idx")
train() { build/ddpm-train $CFG "${SMALL[@]}" "$@"; }
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
steps_of() { grep -o '"step": [0-9]*' "$1" | awk '{print $2}' | tr '\n' ' '; }
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done' EXIT

# --- row 7: a second run in the same folder is refused; the first goes on ---
D="$TMP/shared"
SLURM_JOB_ID=4711 build/ddpm-train $CFG "${SMALL[@]}" training.steps=100000 training.checkpoint_every=2 training.seed=1 \
    output.dir="$D" >"$TMP/a.log" 2>&1 &
A=$!; PIDS+=("$A")
for _ in $(seq 1 300); do   # until run A has logged 3 steps (at most 30 s)
    n=$(grep -c '"step"' "$D/metrics.jsonl" 2>/dev/null); [ "${n:-0}" -ge 3 ] && break
    sleep 0.1
done
train training.steps=5 training.seed=2 output.dir="$D" --resume auto >"$TMP/b.log" 2>&1
rc=$?
host=$(hostname)
if [ $rc -ne 0 ] && grep -q "in use by another run: pid $A on host $host, Slurm job 4711" "$TMP/b.log"; then
    ok "a second run in the same output.dir is refused, naming the holder's pid, host and Slurm job (exit $rc)"
else
    fail "second run: exit $rc: $(tail -2 "$TMP/b.log")"
fi
sleep 0.5   # run A goes on: more steps after the refusal
if kill -0 $A 2>/dev/null; then ok "the first run is unaffected (still training)"; else fail "run A died: $(tail -2 "$TMP/a.log")"; fi
kill -9 $A; wait $A 2>/dev/null
s=$(steps_of "$D/metrics.jsonl"); n=$(echo $s | wc -w)
if [ "$n" -ge 3 ] && [ "$s" = "$(seq 1 $n | tr '\n' ' ')" ]; then
    ok "metrics.jsonl holds run A's steps 1..$n in order, nothing from the refused run"
else
    fail "metrics.jsonl steps interleaved or missing: $s"
fi
grep -q "pid=$A" "$D/run.lock" && ok "the killed run's identity is still in run.lock" || fail "run.lock: $(cat "$D/run.lock")"

# --- kill -9 of the holder: the next run takes the folder at once ---
train training.steps=1 training.seed=1 output.dir="$D" --resume auto >"$TMP/c.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "pid $A on host $host, Slurm job 4711, which no longer holds the lock" "$TMP/c.log" \
   && grep -q "resumed from" "$TMP/c.log"; then
    ok "after kill -9 of the holder a new run takes the folder and resumes (the stale identity is logged)"
else
    fail "run after kill -9: exit $rc: $(grep -m3 'lock\|error\|resumed' "$TMP/c.log")"
fi

# --- a lock file left by a dead pid on this host, with another job id ---
E="$TMP/stale"; mkdir -p "$E"
sh -c 'exit 0' & dead=$!; wait $dead
printf 'pid=%s\nhost=%s\njob=99\nsince=2024-01-01T00:00:00Z\n' "$dead" "$host" >"$E/run.lock"
SLURM_JOB_ID=100 train training.steps=1 output.dir="$E" >"$TMP/e.log" 2>&1 \
    && grep -q "no longer holds the lock" "$TMP/e.log" \
    && ok "a lock file left by a dead pid on this host is taken over" \
    || fail "stale lock file: $(tail -2 "$TMP/e.log")"
# a requeued job (same SLURM_JOB_ID) whose predecessor ran on another node
printf 'pid=1\nhost=some-other-node\njob=4242\nsince=2024-01-01T00:00:00Z\n' >"$E/run.lock"
SLURM_JOB_ID=4242 train training.steps=2 output.dir="$E" --resume auto >"$TMP/f.log" 2>&1 \
    && ok "a requeued job (same SLURM_JOB_ID, predecessor on another node) starts" \
    || fail "same job id: $(tail -2 "$TMP/f.log")"
grep -q "state=released" "$E/run.lock" && ok "a finished run leaves run.lock marked released" \
    || fail "run.lock after a clean exit: $(cat "$E/run.lock")"

# --- row 3: keep_checkpoints=1, newest corrupt, --resume auto ---
R="$TMP/prune"
train training.steps=6 training.checkpoint_every=3 training.keep_checkpoints=2 output.dir="$R" >"$TMP/r1.log" 2>&1 \
    || fail "first run: $(tail -2 "$TMP/r1.log")"
f="$R/ckpt-0000000006.ddpm"; size=$(stat -c %s "$f")
printf '\xff' | dd of="$f" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
# resumes from 3, writes 4 and 5: each prune must keep a good one, never the corrupt 6
train training.steps=5 training.checkpoint_every=4 training.keep_checkpoints=1 output.dir="$R" --resume auto \
    >"$TMP/r2.log" 2>&1
rc=$?
left=$(cd "$R" && ls ckpt-* | tr '\n' ' ')
if [ $rc -eq 0 ] && grep -q "resumed from .*ckpt-0000000003.ddpm" "$TMP/r2.log" \
   && [ "$left" = "ckpt-0000000005.ddpm ckpt-0000000006.ddpm.corrupt " ] \
   && grep -q "ckpt-0000000006.ddpm does not verify; renamed to .*ckpt-0000000006.ddpm.corrupt" "$TMP/r2.log"; then
    ok "keep_checkpoints=1 with the newest corrupt: resumed from the good one, the corrupt one renamed aside and logged, the folder holds only verifying checkpoints ($left)"
else
    fail "row 3: exit $rc, folder: $left; $(grep -m3 'resumed\|verify\|prun' "$TMP/r2.log")"
fi
allgood=1
for c in "$R"/ckpt-*.ddpm; do build/tools/ckpt_state "$c" "$TMP/x.tns" >/dev/null 2>&1 || allgood=0; done
[ $allgood = 1 ] && ok "every ckpt-*.ddpm left verifies" || fail "a kept checkpoint does not verify"
train training.steps=6 training.keep_checkpoints=1 output.dir="$R" --resume auto >"$TMP/r3.log" 2>&1 \
    && grep -q "resumed from .*ckpt-0000000005.ddpm at step 5" "$TMP/r3.log" \
    && ok "a second start resumes from the kept checkpoint" || fail "second start: $(tail -2 "$TMP/r3.log")"
