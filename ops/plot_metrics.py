#!/usr/bin/env python3
"""A picture of a run without TensorBoard: RUN_DIR/metrics.jsonl -> RUN_DIR/loss.png.

    python3 ops/plot_metrics.py runs/fashion_mnist_demo [--out loss.png]

Four panels: the loss, its two terms mse and vb (model.learn_sigma), and the
per-quartile losses (q0 = t in the first quarter of [1, T], ..., log scale), the learning rate, the gradient norm before clipping (log
scale), and images/s. Needs matplotlib (Debian: python3-matplotlib) on the
machine that draws, not on the nodes that train. Lines an interrupted run logged
after its last checkpoint are already gone from metrics.jsonl (ddpm-train removes
them on resume); if a step still appears twice, the later line wins.
"""
import argparse
import json
import os
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
            if "loss" in r:  # training lines (evaluation lines have eval_* keys)
                rows[r["step"]] = r
    return [rows[s] for s in sorted(rows)]


def series(rows, key):
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", help="a run folder (output.dir) holding metrics.jsonl")
    ap.add_argument("--out", help="the PNG to write (default RUN_DIR/loss.png)")
    a = ap.parse_args()
    src = os.path.join(a.run_dir, "metrics.jsonl")
    if not os.path.isfile(src):
        sys.exit(f"{src}: no such file")
    rows = load(src)
    if not rows:
        sys.exit(f"{src}: no training lines")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    loss = ax[0][0]
    loss.plot(*series(rows, "loss"), color="black", lw=1.5, label="loss")
    for key, what in (("mse", "mse (L_simple)"), ("vb", "vb (lambda T L_t)")):  # model.learn_sigma
        if any(key in r for r in rows):
            loss.plot(*series(rows, key), lw=1.2, ls="--", label=what)
    for q in range(4):
        loss.plot(*series(rows, f"q{q}"), lw=0.8, alpha=0.8, label=f"q{q} (t in quarter {q + 1})")
    loss.set_yscale("log")
    loss.set_title("loss (mean squared error of the noise prediction)")
    loss.legend(fontsize=8)
    ax[0][1].plot(*series(rows, "lr"))
    ax[0][1].set_title("learning rate")
    ax[1][0].plot(*series(rows, "grad_norm"))
    ax[1][0].set_yscale("log")
    ax[1][0].set_title("gradient norm (before clipping)")
    ax[1][1].plot(*series(rows, "images_per_s"))
    ax[1][1].set_title("images/s")
    for a_ in ax[1]:
        a_.set_xlabel("step")
    for row in ax:
        for a_ in row:
            a_.grid(True, alpha=0.3)
    fig.suptitle(f"{os.path.abspath(a.run_dir)}: steps {rows[0]['step']}..{rows[-1]['step']}")
    fig.tight_layout()
    out = a.out or os.path.join(a.run_dir, "loss.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
