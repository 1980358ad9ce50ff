#!/usr/bin/env bash
# model.learn_sigma end to end on a tiny Fashion-MNIST model: the parameter table,
# bit-exact resume, the resume refusal when the key changes, 2 workers equal to the
# single process, ancestral / respaced / DDIM sampling with the learned variance
# (--variance ignored, logged), and bits/dim: the in-training evaluation and
# `ddpm-eval bpd` agree, with or without --variance.
set -u
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}/learn_sigma"
rm -rf "$TMP"; mkdir -p "$TMP"
PY=/usr/bin/python3
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
export OMPI_MCA_btl_vader_single_copy_mechanism=none   # containers without CMA
CFG=configs/tiny_fashion.yaml
# batch 5: uneven worker shares (3 + 2). ch 64: two channels per GroupNorm group, so
# that only the attention key biases have a gradient that is zero in exact
# arithmetic (see tests/integration/test_distributed.sh and compare_runs.py).
COMMON=(model.learn_sigma=true model.ch=64 model.ch_mult=[1,2] model.num_res_blocks=1
        training.batch_size=5 training.log_every=1 training.checkpoint_every=2
        training.warmup_steps=5 training.eval_every=4 training.eval_images=2
        training.eval_stride=250 distributed.timeout_s=30)
# learning rates summed over 4 steps of warm-up (0, .2, .4, .6) x 2e-4
ZERO=('attn[._][0-9]*\.k\.bias' 0.00024)
train() { build/ddpm-train $CFG "${COMMON[@]}" "$@"; }
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; }
state() { build/tools/ckpt_state "$1" "$2" >/dev/null 2>&1; }
# the logged values without the timings (eval_bpd lines included)
losses() { sed 's/, "images_per_s".*//; s/, "eval_seconds".*//' "$1/metrics.jsonl"; }

# --- the parameter table: only conv_out grows ---
build/ddpm-train $CFG model.learn_sigma=true --summary >"$TMP/sum1.txt" 2>&1
build/ddpm-train $CFG --summary >"$TMP/sum0.txt" 2>&1
if grep -q "learned variances" "$TMP/sum1.txt" && grep -Eq "conv_out.weight +2x" "$TMP/sum1.txt" \
   && [ "$(diff <(grep -v conv_out "$TMP/sum0.txt" | grep -E '^[0-9]+ ') \
                <(grep -v conv_out "$TMP/sum1.txt" | grep -E '^[0-9]+ ') | grep -c '^[<>]')" = 0 ]; then
    ok "--summary: conv_out has 2 outputs and every other tensor is unchanged ($(grep 'total parameters' "$TMP/sum0.txt" | cut -d' ' -f3) -> $(grep 'total parameters' "$TMP/sum1.txt" | cut -d' ' -f3))"
else
    fail "--summary with learn_sigma: $(grep -E 'conv_out|total' "$TMP/sum1.txt")"
fi

# --- bit-exact resume: 4 steps straight == 2 steps, stop, resume, 2 more ---
train training.steps=4 output.dir="$TMP/straight" >"$TMP/a.log" 2>&1 || fail "straight run: $(tail -2 "$TMP/a.log")"
train training.steps=2 output.dir="$TMP/split" >"$TMP/b.log" 2>&1 || fail "first half: $(tail -2 "$TMP/b.log")"
train training.steps=4 output.dir="$TMP/split" --resume auto >"$TMP/c.log" 2>&1 || fail "resumed half: $(tail -2 "$TMP/c.log")"
CK="$TMP/straight/ckpt-0000000004.ddpm"
if state "$CK" "$TMP/straight.tns" && state "$TMP/split/ckpt-0000000004.ddpm" "$TMP/split.tns" \
   && cmp -s "$TMP/straight.tns" "$TMP/split.tns" && diff <(losses "$TMP/straight") <(losses "$TMP/split") >/dev/null; then
    ok "learn_sigma: resume is bit-exact (params, EMA, Adam at step 4; every logged loss)"
else
    fail "learn_sigma: the resumed run differs from the straight one"
fi
if train training.steps=6 model.learn_sigma=false output.dir="$TMP/split" --resume auto >"$TMP/d.log" 2>&1; then
    fail "a resume with model.learn_sigma changed was accepted"
elif grep -q "differ from the config: model.learn_sigma" "$TMP/d.log"; then
    ok "a resume with model.learn_sigma changed is refused naming the key ($(grep -o 'differ from.*' "$TMP/d.log" | head -1))"
else
    fail "learn_sigma change refused for another reason: $(tail -2 "$TMP/d.log")"
fi

# --- metrics.jsonl: L_hybrid's two terms, mse and vb, beside the loss ---
# every line with a loss has finite mse > 0 and vb >= 0 (a KL, or the decoder's NLL)
# summing to it; a run without learn_sigma logs neither. Prints the lines checked.
# vb is lambda T L_t, which is L_t itself at T = 1000: a run at T = 250 tells them apart.
terms() { $PY -c "
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if '\"loss\"' in l]
assert lines, 'no loss lines'
for r in lines:
    if sys.argv[2] == 'absent':
        assert 'mse' not in r and 'vb' not in r, r
        continue
    m, v, l = r['mse'], r['vb'], r['loss']
    assert all(math.isfinite(x) for x in (m, v, l)) and m > 0 and v >= 0, r
    assert abs(m + v - l) <= 1e-6 * abs(l), ('mse + vb != loss', r)
print(len(lines))" "$1/metrics.jsonl" "$2"; }
train training.steps=2 model.learn_sigma=false training.eval_every=0 output.dir="$TMP/plain" \
    >"$TMP/plain.log" 2>&1 || fail "learn_sigma=false run: $(tail -2 "$TMP/plain.log")"
train training.steps=2 diffusion.timesteps=250 training.eval_every=0 output.dir="$TMP/t250" \
    >"$TMP/t250.log" 2>&1 || fail "learn_sigma run with T = 250: $(tail -2 "$TMP/t250.log")"
if n=$(terms "$TMP/straight" present 2>"$TMP/terms.err") && grep -q "loss [0-9.]* (mse [0-9.]* vb [0-9.]*)" "$TMP/a.log" \
   && n2=$(terms "$TMP/t250" present 2>>"$TMP/terms.err") \
   && n0=$(terms "$TMP/plain" absent 2>>"$TMP/terms.err") && ! grep -q "(mse " "$TMP/plain.log"; then
    ok "learn_sigma: $n + $n2 metrics lines (T = 1000, 250) log finite mse > 0 and vb >= 0 summing to the loss (and the progress line shows them); $n0 lines without learn_sigma have neither"
else
    fail "learn_sigma mse/vb in metrics.jsonl: $(tail -1 "$TMP/terms.err")"
fi

# --- 2 workers + 1 shard equal the single process ---
# (training.eval_every is single-process only: the comparison skips its line; the
# comparison covers mse and vb too, which both runs must log on every line)
grep -v '"eval_bpd"' "$TMP/straight/metrics.jsonl" >"$TMP/straight.jsonl"
if timeout 300 "${MPIRUN[@]}" -np 3 build/ddpm-train $CFG "${COMMON[@]}" training.steps=4 \
        training.eval_every=0 output.dir="$TMP/w2" >"$TMP/w2.log" 2>&1 \
   && state "$TMP/w2/ckpt-0000000004.ddpm" "$TMP/w2.tns"; then
    if $PY tests/ref/compare_runs.py "$TMP/w2.tns" "$TMP/straight.tns" "$TMP/w2/metrics.jsonl" \
            "$TMP/straight.jsonl" 1e-4 1e-5 "${ZERO[@]}" >"$TMP/w2.cmp" 2>&1; then
        ok "learn_sigma: 2 workers equal the single process after 4 steps: params $(grep -o 'worst ||delta||/||p|| = [^ ]*' "$TMP/w2.cmp" | head -1 | cut -d' ' -f4), losses $(grep -o 'worst relative difference [^,]*' "$TMP/w2.cmp" | cut -d' ' -f4 | paste -sd/) (loss/mse/vb)"
    else
        fail "learn_sigma: 2 workers differ from the single process: $(grep 'not ok' "$TMP/w2.cmp" | head -3)"
    fi
else
    fail "mpirun -np 3 with learn_sigma failed: $(grep -v '^\[' "$TMP/w2.log" | tail -3)"
fi

# --- sampling: ancestral (respaced) uses v; --variance is ignored and says so ---
S=(build/ddpm-sample "$CK" -n 2 -b 2 --grid none -q)
if "${S[@]}" --steps 10 --npz "$TMP/a.npz" >"$TMP/s1.log" 2>&1 \
   && "${S[@]}" --steps 10 --variance beta_tilde --npz "$TMP/b.npz" >"$TMP/s2.log" 2>&1 \
   && "${S[@]}" --steps ddim5 --ddim --npz "$TMP/c.npz" >"$TMP/s3.log" 2>&1 \
   && grep -q "learned sigma^2" "$TMP/s1.log" \
   && grep -q -- "--variance beta_tilde ignored: .* has learned variances (model.learn_sigma)" "$TMP/s2.log" \
   && $PY -c "
import numpy as np
a, b, c = (np.load('$TMP/%s.npz' % k)['arr_0'] for k in 'abc')
assert a.shape == (2, 28, 28, 1) and a.dtype == np.uint8 and c.shape == a.shape
assert (a == b).all(), 'variance flag changed a learned-variance sample'
assert a.std() > 1 and c.std() > 1" >"$TMP/s.out" 2>&1; then
    ok "learn_sigma: ancestral (10 respaced steps) and DDIM sampling run; --variance is ignored (identical images) with a log line"
else
    fail "learn_sigma sampling: $(tail -2 "$TMP"/s*.log) $(tail -2 "$TMP/s.out" 2>/dev/null)"
fi

# --- bits/dim: ddpm-eval reproduces the in-training evaluation; --variance ignored ---
logged=$($PY -c "
import json
ev = [json.loads(l) for l in open('$TMP/straight/metrics.jsonl') if '\"eval_bpd\"' in l]
print('%.12g' % ev[-1]['eval_bpd'] if ev and ev[-1]['step'] == 4 else 'bad')")
got=$(build/ddpm-eval bpd "$CK" --images 2 --stride 250 --seed 0 -q 2>"$TMP/e1.log" | awk '/^bpd /{print $2}')
got2=$(build/ddpm-eval bpd "$CK" --images 2 --stride 250 --seed 0 -q --variance beta_tilde 2>"$TMP/e2.log" | awk '/^bpd /{print $2}')
if [ "$logged" != bad ] && [ -n "$got" ] && [ "$got" = "$got2" ] \
   && grep -q -- "--variance beta_tilde ignored" "$TMP/e2.log" \
   && $PY -c "import sys; a, b = float('$got'), float('$logged'); sys.exit(not (abs(a - b) <= 1e-6 * abs(b)))"; then
    ok "learn_sigma: ddpm-eval bpd reproduces the logged bound ($got vs $logged bits/dim) and ignores --variance"
else
    fail "learn_sigma bits/dim: logged '$logged', ddpm-eval '$got', with --variance '$got2': $(tail -2 "$TMP/e2.log")"
fi
