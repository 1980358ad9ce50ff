"""Classifier-free guidance against a float64 numpy formula.

usage: guidance_ref.py DUMP.tns
Reads what tests/tools/guidance_dump wrote and checks that the sampler's guided
epsilon, from one batched forward over [conditional; null label] and from two
forwards, equals Ho & Salimans (2022) eq. 6,
    eps_guided = (1 + w) * eps(x, t, y) - w * eps(x, t, null),
computed here in float64 from the C model's conditional and null-label outputs,
within max|C - ref| / max|ref| <= 1e-5 (float32 rounding of the formula and of the
forwards over batches of different sizes). The comparison must be able to fail: the
same check against w + 0.01, and with the two predictions swapped, must not pass."""
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import tensor_file  # noqa: E402

TOL = 1e-5


def guided(ec, eu, w):
    return (1.0 + w) * ec - w * eu


def rel(c, ref):
    return float(np.abs(np.asarray(c, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def main():
    d = tensor_file.read(sys.argv[1])
    w = float(d["W"][0])
    ec = d["eps_cond"].astype(np.float64)
    eu = d["eps_null"].astype(np.float64)
    ref = guided(ec, eu, w)
    ok_all = True
    for key in ("guided", "guided_split"):
        err = rel(d[key], ref)
        ok = err <= TOL and np.isfinite(err)
        ok_all &= ok
        print(f"{'ok' if ok else 'not ok'} - {key} (w = {w:g}): max|C-ref|/max|ref| = {err:.3e}")
    # the labels matter: the conditional and null-label predictions differ
    sep = rel(ec, eu)
    ok = sep > 100 * TOL
    ok_all &= ok
    print(f"{'ok' if ok else 'not ok'} - eps(x, y) and eps(x, null) differ: {sep:.3e}")
    if w > 0:
        for what, wrong in (("w + 0.01", guided(ec, eu, w + 0.01)),
                            ("swapped predictions", guided(eu, ec, w))):
            err = rel(d["guided"], wrong)
            ok = err > TOL
            ok_all &= ok
            print(f"{'ok' if ok else 'not ok'} - a wrong formula ({what}) is refused: {err:.3e}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
