"""Compares two training runs: final state per tensor and logged losses.

usage: compare_runs.py A.tns B.tns A_metrics.jsonl B_metrics.jsonl PARAM_TOL LOSS_TOL
                       [ZERO_GRAD_REGEX LR_SUM]
A.tns/B.tns come from tests/tools/ckpt_state. Checks, for params and EMA,
||a - b|| / ||b|| <= PARAM_TOL per tensor, and |loss_a - loss_b| / |loss_b| <=
LOSS_TOL per logged step, and the same for the loss's two terms "mse" and "vb"
(model.learn_sigma) when either run logs them: then both must, on every line.
Prints one summary line per check (ok / not ok).

Tensors whose names match ZERO_GRAD_REGEX have a gradient that is zero in exact
arithmetic (the attention key bias: softmax is shift invariant). In float32 they
get Adam updates driven by rounding noise, different for every summation order, so
for them the check is Adam's step bound instead: each run moves them by at most
LR_SUM (the sum of the learning rates applied), so max|a - b| <= 2 LR_SUM."""
import json
import re
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import tensor_file  # noqa: E402


def main():
    a, b = tensor_file.read(sys.argv[1]), tensor_file.read(sys.argv[2])
    ma = [json.loads(l) for l in open(sys.argv[3])]
    mb = [json.loads(l) for l in open(sys.argv[4])]
    ptol, ltol = float(sys.argv[5]), float(sys.argv[6])
    zero_re = re.compile(sys.argv[7]) if len(sys.argv) > 8 else None
    lr_sum = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
    ok = True
    for section in ("params", "ema"):
        worst, wname = 0.0, ""
        nzero, zworst = 0, 0.0
        for k in a:
            if not k.startswith(section + "/"):
                continue
            x, y = a[k].astype(np.float64), b[k].astype(np.float64)
            if zero_re and zero_re.search(k):
                nzero += 1
                zworst = max(zworst, np.abs(x - y).max())
                continue
            d = np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30)
            if d > worst:
                worst, wname = d, k
        good = worst <= ptol
        ok &= good
        print(f"{'ok' if good else 'not ok'} - {section}: worst ||delta||/||p|| = {worst:.2e} ({wname}), bar {ptol:g}")
        if nzero:
            good = zworst <= 2 * lr_sum
            ok &= good
            print(f"{'ok' if good else 'not ok'} - {section}: {nzero} zero-gradient tensors within Adam's "
                  f"step bound: max|delta| {zworst:.2e} <= {2 * lr_sum:.2e}")
    # the loss, and with model.learn_sigma its two terms (mse, vb) on every line of both
    for key, what in (("loss", "losses"), ("mse", "mse"), ("vb", "vb")):
        la = {r["step"]: r[key] for r in ma if key in r}
        lb = {r["step"]: r[key] for r in mb if key in r}
        if key != "loss" and not la and not lb:
            continue
        if len(la) != len(ma) or len(lb) != len(mb):
            print(f"not ok - {key} logged on {len(la)} of {len(ma)} and {len(lb)} of {len(mb)} lines")
            return 1
        steps = sorted(set(la) & set(lb))
        if len(steps) != len(lb):
            print(f"not ok - logged steps differ: {sorted(la)} vs {sorted(lb)}")
            return 1
        worst = max(abs(la[s] - lb[s]) / abs(lb[s]) for s in steps)
        good = worst <= ltol
        ok &= good
        print(f"{'ok' if good else 'not ok'} - {what} of {len(steps)} steps: worst relative difference {worst:.2e}, bar {ltol:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
