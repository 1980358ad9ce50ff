"""Formats the outputs of bench/run_bench.sh as markdown tables.
usage: report.py DIR name:batch..."""
import os
import sys


def load(path):
    d = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                d[parts[0]] = parts[1]
    return d


def main():
    out, cases = sys.argv[1], [c.split(":") for c in sys.argv[2:]]
    sg = load(os.path.join(out, "sgemm"))
    peak = float(sg["sgemm_gflops"])
    print("OpenBLAS kernel %s, %s threads, OpenMP wait (GOMP_SPINCOUNT) %s; "
          "SGEMM 2048^3 peak %.1f GFLOP/s (median)" %
          (sg["kernel"], sg["threads"], sg.get("omp_wait", "?"), peak))
    print()
    print("| config | batch | mode | C img/s | PyTorch img/s | C/PyTorch | C GFLOP/s | of SGEMM peak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    shares = []
    for name, batch in cases:
        for mode in ("train", "forward"):
            c = load(os.path.join(out, "c_%s_%s_%s" % (name, batch, mode)))
            t = load(os.path.join(out, "t_%s_%s_%s" % (name, batch, mode)))
            ci, ti = float(c["images_per_s"]), float(t["images_per_s"])
            gf = float(c["gflops"])
            print("| %s | %s | %s | %.2f | %.2f | %.2f | %.1f | %.1f%% |" %
                  (name, batch, "train step" if mode == "train" else "forward (sampling)",
                   ci, ti, ci / ti, gf, 100 * gf / peak))
            shares.append(("%s b%s %s" % (name, batch, mode), c))
    print()
    print("GFLOP/s: train 6 x forward MACs x images / s, forward 2 x MACs x images / s.")
    print()
    keys = ["conv_fwd", "conv_bwd", "groupnorm", "silu", "attention", "linear",
            "elementwise", "other", "unaccounted", "gemm", "outside_gemm"]
    print("C share of step time per op kind (profiled steps; gemm overlaps the kinds above it):")
    print()
    print("| run | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for label, c in shares:
        print("| %s | " % label + " | ".join(
            "%.1f%%" % (100 * float(c.get("share_" + k, "nan"))) for k in keys) + " |")


if __name__ == "__main__":
    main()
