#!/usr/bin/env bash
# Distributed chaos: SIGKILL a random rank (coordinator, server shard or worker) of
# an mpirun job at random moments, and restart with --resume auto until the run
# completes. Kills land at start-up, mid-step, and inside checkpoint writes: the
# coordinator itself torn mid-write (DDPM_TEST_KILL_AT_BYTE=N, read by the writer),
# or any rank killed as soon as a checkpoint's temp file appears. After every kill:
# mpirun has ended the job with no rank left behind, and every ckpt-*.ddpm in the
# folder verifies. Variant A restarts on the same layout (coordinator + 2 shards +
# 2 workers = 4 ranks) and must end equal to an uninterrupted run bit for bit;
# variant B restarts on a different layout each time (1-2 shards, 1-3 workers, or a
# single process) and must end within the distributed test's tolerance.
#   CHAOS_SEED=S (default: random, printed, so a failure can be replayed),
#   CHAOS_KILLS=N kills per variant (default 3).
set -u
KILLS="${CHAOS_KILLS:-3}"
SEED="${CHAOS_SEED:-$(( $(date +%s) % 32768 ))}"
RANDOM=$SEED
if [ -n "${DDPM_TEST_TMP:-}" ]; then
    TMP="$DDPM_TEST_TMP/chaos_dist"
else
    TMP="$(mktemp -d /tmp/ddpm-chaos-dist.XXXXXX)"; trap 'rm -rf "$TMP"' EXIT
fi
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS
        -x CHAOS_TAG -x DDPM_TEST_KILL_AT_BYTE)
ok() { echo "ok - $*"; }
nfail=0
fail() { echo "not ok - $*"; nfail=$((nfail + 1)); }

# 512 Fashion-MNIST images cropped to 16x16: start-up reads a small file, and a
# step and a checkpoint take little time
DATA="$TMP/fashion512.gz"
$PY - "$DATA" <<'PYEOF' || { fail "cannot make the small dataset"; exit 1; }
import gzip, struct, sys
src = gzip.open("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").read()
n = 512
out = bytearray(struct.pack(">IIII", 0x803, n, 16, 16))
for i in range(n):
    img = src[16 + i * 784:16 + (i + 1) * 784]
    for y in range(6, 22):
        out += img[y * 28 + 6:y * 28 + 22]
with gzip.open(sys.argv[1], "wb") as f:
    f.write(bytes(out))
PYEOF
STEPS=10
# ch 64: two channels per GroupNorm group, so that only the attention key biases
# have a gradient that is zero in exact arithmetic (see test_distributed.sh)
ARGS=(configs/tiny_fashion.yaml data.path="$DATA" model.image_size=16 model.attn_resolutions=[8]
      model.ch=64 model.ch_mult=[1,1] model.num_res_blocks=1
      training.batch_size=4 training.steps=$STEPS training.log_every=1 training.checkpoint_every=2
      training.keep_checkpoints=3 training.warmup_steps=5 training.threads=1
      distributed.codec=fp32 distributed.timeout_s=10)
# sum of the learning rates over the 10 steps: warmup 5 (0, .2, .4, .6, .8) + 5 full
ZERO=('attn[._][0-9]*\.k\.bias' 0.0014)

export CHAOS_TAG="" DDPM_TEST_KILL_AT_BYTE=""
# the processes of one launch (timeout, mpirun, the ranks), found by the tag in
# their environment; not this shell's other children, which inherit it too
tag_pids() {
    local p
    for p in $(grep -lsxz "CHAOS_TAG=$1" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
        case "$(readlink /proc/"$p"/exe 2>/dev/null)" in
            */ddpm-train|*/mpirun|*/orterun|*/orted|*/timeout) echo "$p" ;;
        esac
    done
}
rank_pid() {
    local p
    for p in $(tag_pids "$1"); do
        if [ "$2" = single ] || grep -qsxz "OMPI_COMM_WORLD_RANK=$2" /proc/"$p"/environ; then
            [ "$(readlink /proc/"$p"/exe 2>/dev/null)" = "$PWD/build/ddpm-train" ] && { echo "$p"; return; }
        fi
    done
}
# "ranks servers": a layout; "1 single": one process without mpirun
launch() {   # layout dir log; sets $pid
    set -- $1 "$2" "$3"
    if [ "$2" = single ]; then
        timeout -k 5 120 build/ddpm-train "${ARGS[@]}" output.dir="$3" --resume auto >"$4" 2>&1 &
    else
        timeout -k 5 120 "${MPIRUN[@]}" -np "$1" build/ddpm-train "${ARGS[@]}" distributed.servers="$2" \
            output.dir="$3" --resume auto >"$4" 2>&1 &
    fi
    pid=$!
}
verify_all() {   # dir what: every file with a checkpoint's name verifies
    local f bad=0
    for f in "$1"/ckpt-*.ddpm; do
        [ -e "$f" ] || continue
        if ! build/tools/ckpt_state "$f" "$TMP/check.tns" >"$TMP/check.log" 2>&1; then
            fail "$2: $(basename "$f") does not verify: $(cat "$TMP/check.log")"; bad=1
        fi
    done
    return $bad
}
final() { ls "$1"/ckpt-*.ddpm 2>/dev/null | sort | tail -n 1; }

CHAOS_TAG="ref-$$"
t_ref=$(date +%s%N)
launch "4 2" "$TMP/ref" "$TMP/ref.log"; wait $pid
rc=$?
# timed kills land within 80% of an uninterrupted run's time, so that they land
ref_ms=$(( ($(date +%s%N) - t_ref) / 1000000 * 8 / 10 ))
[ $ref_ms -lt 500 ] && ref_ms=500
[ $rc -eq 0 ] && build/tools/ckpt_state "$(final "$TMP/ref")" "$TMP/ref.tns" >/dev/null 2>&1 \
    || { fail "uninterrupted reference run (4 ranks): exit $rc: $(tail -3 "$TMP/ref.log")"; exit 1; }
minsize=$(stat -c %s "$TMP"/ref/ckpt-*.ddpm | sort -n | head -1)
echo "# chaos_dist: seed $SEED (CHAOS_SEED=$SEED replays it), $KILLS kills per variant, $STEPS steps, timed kills within $ref_ms ms"

# one variant: kills, then runs to the end. $1: name, $2: "same" or "mixed"
chaos() {
    local name=$1 mode=$2 run="$TMP/$1" i=0 kills=0 problems=0 layouts=()
    while :; do
        i=$((i + 1))
        local layout="4 2"
        if [ "$mode" = mixed ]; then
            local all=("4 2" "3 1" "2 1" "5 2" "1 single")
            layout="${all[$((RANDOM % 5))]}"
        fi
        set -- $layout
        if [ "$2" = single ]; then layouts+=("single"); else layouts+=("$1r/$2s"); fi
 local np=$1 victim=$((RANDOM % $1)) how kind
        [ "$2" = single ] && victim=single
        CHAOS_TAG="$name-$i-$$"; DDPM_TEST_KILL_AT_BYTE=""
        local log="$TMP/$name.$i.log" last=0
        [ $kills -ge "$KILLS" ] && last=1
        kind=$((RANDOM % 3))
        if [ $last -eq 0 ] && [ $kind -eq 1 ]; then
            # the coordinator dies inside a checkpoint write, N bytes into its temp file
            victim=0; [ "$2" = single ] && victim=single
            DDPM_TEST_KILL_AT_BYTE=$(( ((RANDOM << 15) | RANDOM) % minsize ))
            how="rank $victim dies $DDPM_TEST_KILL_AT_BYTE bytes into a checkpoint write"
        fi
        local t0=$SECONDS
        launch "$layout" "$run" "$log"
        if [ $last -eq 0 ] && [ $kind -ne 1 ]; then
            local deadline=$((SECONDS + 60)) target=""
            # wait for the victim to exist (and, kind 2, for a checkpoint write to start)
            while [ -z "$target" ] && [ $SECONDS -lt $deadline ] && kill -0 $pid 2>/dev/null; do
                target=$(rank_pid "$CHAOS_TAG" "$victim")
                [ -z "$target" ] && sleep 0.05
            done
            if [ $kind -eq 2 ]; then
                local before; before=$(ls -A "$run" 2>/dev/null | grep '^\.ckpt-.*\.tmp$')
                while [ $SECONDS -lt $deadline ] && kill -0 $pid 2>/dev/null \
                      && [ "$(ls -A "$run" 2>/dev/null | grep '^\.ckpt-.*\.tmp$')" = "$before" ]; do
                    sleep 0.005
                done
                how="rank $victim killed during a checkpoint write"
            else
                # within the time the steps still to do would take
                local done_steps; done_steps=$(basename "$(final "$run")" .ddpm 2>/dev/null | sed 's/^ckpt-0*//')
                local bound=$(( ref_ms * (STEPS - ${done_steps:-0}) / STEPS ))
                [ $bound -lt 300 ] && bound=300
                local ms=$(( ((RANDOM << 15) | RANDOM) % bound ))
                sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
                how="rank $victim killed ${ms} ms after it started"
            fi
            [ -n "$target" ] && kill -9 "$target" 2>/dev/null
        fi
        { wait $pid; } 2>/dev/null
        rc=$?
        local dt=$((SECONDS - t0))
        [ $rc -eq 124 ] && { fail "$name run $i ($layout): still running after 120 s"; problems=$((problems + 1)); }
        # no process of this launch may outlive it
        local left; left=$(tag_pids "$CHAOS_TAG")
        if [ -n "$left" ]; then
            fail "$name run $i: processes left after mpirun ended: $left"; problems=$((problems + 1))
            kill -9 $left 2>/dev/null
        fi
        if [ $rc -eq 0 ]; then
            verify_all "$run" "$name, after the run completed" || problems=$((problems + 1))
            echo "# $name run $i ($layout): completed (${dt} s)"
            break
        fi
        if [ $last -eq 1 ]; then
            fail "$name run $i ($layout), no kill: exit $rc: $(grep -v '^\[' "$log" | tail -3)"
            problems=$((problems + 1)); break
        fi
        kills=$((kills + 1))
        verify_all "$run" "$name, after kill $kills ($how)" || problems=$((problems + 1))
        echo "# $name run $i ($layout): $how -> exit $rc after ${dt} s; $(grep -o 'resumed from [^ ]* at step [0-9]*\|starting fresh' "$log" | head -1); newest $(basename "$(final "$run")")"
        [ $i -gt $((KILLS + 3)) ] && { fail "$name: did not complete"; problems=$((problems + 1)); break; }
    done
    [ $problems -eq 0 ] && [ $kills -ge 1 ] \
        && ok "$name: $kills SIGKILLs of random ranks (seed $SEED), layouts (ranks/shards) ${layouts[*]}: no rank left behind, every ckpt-*.ddpm verified after every kill" \
        || fail "$name: $kills kills, $problems problems (seed $SEED)"
    build/tools/ckpt_state "$(final "$run")" "$TMP/$name.tns" >/dev/null 2>&1
}

chaos same same
if cmp -s "$TMP/same.tns" "$TMP/ref.tns"; then
    ok "same layout: after the kills the step-$STEPS params, EMA, Adam m/v and data cursor equal the uninterrupted run bit for bit"
else
    fail "same layout: the final state differs from the uninterrupted run (seed $SEED)"
fi

chaos mixed mixed
# steps done twice after a kill are logged twice: keep the last line of each step
$PY - "$TMP/mixed/metrics.jsonl" "$TMP/mixed.metrics" <<'PYEOF'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[r["step"]] = line
open(sys.argv[2], "w").writelines(rows[k] for k in sorted(rows))
PYEOF
if $PY tests/ref/compare_runs.py "$TMP/mixed.tns" "$TMP/ref.tns" "$TMP/mixed.metrics" "$TMP/ref/metrics.jsonl" \
        1e-4 1e-5 "${ZERO[@]}" >"$TMP/mixed.cmp" 2>&1; then
    ok "restarts on other layouts: the final state equals the uninterrupted run within the distributed tolerance: $(grep -o 'worst.*' "$TMP/mixed.cmp" | head -1 | cut -d, -f1)"
else
    fail "restarts on other layouts differ from the uninterrupted run (seed $SEED): $(grep 'not ok' "$TMP/mixed.cmp" | head -3)"
fi
[ $nfail -eq 0 ]
