"""Checks the C U-Net in bf16 mixed precision against float64 PyTorch.

usage: unet_ref_bf16.py DUMP.tns [--exact KIND[,KIND]]
DUMP.tns: tests/tools/unet_ref_dump ... bf16. The reference runs twice on the
same parameters, masks and inputs (unet_ref.run): exactly, and with bf16
mixed precision emulated (bf16_emulate: every matmul's operands rounded to bf16
as the C model rounds them). An element-by-element match with the emulation is
not possible through a deep network: C's fp32 values differ from the float64
ones by ~1e-7, which moves a few operands across a bf16 rounding boundary
(a change of 2^-8 in each); the next layer's values then differ by more, moving
more operands across, and within a few layers the two runs round independently.
What stays comparable is the size of the error: the C run and the emulation are
two draws of the same rounding process, so for the output and for all
gradients together rms(C - exact) / rms(emulated - exact) must lie in
[1/2, 2], and per gradient tensor of at least 256 values in [1/3, 3] (fewer
values per draw: wider). A C model that skipped a rounding would fall low (an
fp32 path gives ~1e-5), one less accurate than bf16 high. Tensors whose
gradient is zero in exact arithmetic (unet_ref.py) hold only rounding noise in
both: rms(C) <= 3 rms(emulated) + 1e-6 max|all gradients| (unet_ref.py's
allowance for fp32 noise where the emulated reference is exactly zero). --exact KIND leaves that kind of matmul
exact in the emulation (the test that the comparison can fail)."""
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import bf16_emulate  # noqa: E402
import tensor_file  # noqa: E402
import unet_ref  # noqa: E402

ALL, TENSOR, MIN_N = 2.0, 3.0, 256


def rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def results(d, r):
    out, loss, model = r
    res = {"output": out.detach().numpy().ravel()}
    for k, p in model.named_parameters():
        res[k] = p.grad.numpy().ravel()
    return res


def main():
    d = tensor_file.read(sys.argv[1])
    if d.get("precision", [0])[0] != 1:
        print("not ok - the dump was not written with precision bf16")
        return 1
    torch.set_num_threads(2)
    ex = results(d, unet_ref.run(d))
    skip = sys.argv[sys.argv.index("--exact") + 1].split(",") if "--exact" in sys.argv else ()
    bf16_emulate.enable(skip)
    em = results(d, unet_ref.run(d))
    c = {"output": d["out"].astype(np.float64).ravel()}
    for k in ex:
        if k != "output":
            c[k] = d["grad/" + k].astype(np.float64).ravel()
    gscale = max(np.abs(ex[k]).max() for k in ex if k != "output")
    ok = True

    def ratio_check(name, rc, re, lo, hi, what):
        nonlocal ok
        q = rc / re if re > 0 else float("inf")
        good = lo <= q <= hi
        ok &= good
        print(f"{'ok' if good else 'not ok'} - {name}: {what} {q:.3f} in [{lo:.2f}, {hi:.2f}]")

    ratio_check("output eps_theta", rms(c["output"] - ex["output"]),
                rms(em["output"] - ex["output"]), 1 / ALL, ALL,
                f"rel rms error {rms(c['output'] - ex['output']) / rms(ex['output']):.2e}; "
                "rms(C - exact) / rms(emulated - exact)")
    names = [k for k in ex if k != "output"]
    live = [k for k in names if np.abs(ex[k]).max() > unet_ref.ZERO_REL * gscale]
    dc = np.concatenate([c[k] - ex[k] for k in live])
    de = np.concatenate([em[k] - ex[k] for k in live])
    dx = np.concatenate([ex[k] for k in live])
    ratio_check(f"all {len(live)} nonzero gradients", rms(dc), rms(de), 1 / ALL, ALL,
                f"rel rms error {rms(dc) / rms(dx):.2e}; rms(C - exact) / rms(emulated - exact)")
    for k in names:
        if k not in live:
            # fp32 noise (unet_ref.ZERO_TOL) is allowed where the emulation's is 0
            ratio_check("grad " + k, rms(c[k]), rms(em[k]) + unet_ref.ZERO_TOL * gscale, 0, TENSOR,
                        "zero in exact arithmetic; rms(C) / (rms(emulated) + 1e-6 max|grad|)")
        elif ex[k].size >= MIN_N:
            ratio_check("grad " + k, rms(c[k] - ex[k]), rms(em[k] - ex[k]), 1 / TENSOR, TENSOR,
                        "rms(C - exact) / rms(emulated - exact)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
