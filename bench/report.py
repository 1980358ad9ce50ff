"""Formats the outputs of bench/run_bench.sh as markdown tables: medians over
the rounds, each round's C and PyTorch numbers measured minutes apart.
usage: report.py DIR ROUNDS name:batch..."""
import os
import statistics
import sys


def load(path):
    d = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                d[parts[0]] = parts[1]
    return d


def rounds(out, stem, n):
    return [load(os.path.join(out, "%s.r%d" % (stem, r))) for r in range(1, n + 1)]


def med(rs, key):
    return statistics.median(float(r[key]) for r in rs)


def bf16_table(out, n, cases, shares):
    """The four modes side by side: C and PyTorch, fp32 and bf16 (autocast)."""
    if not os.path.exists(os.path.join(out, "c_%s_%s_train_bf16.r1" % tuple(cases[0]))):
        return
    print()
    print("| config | batch | mode | C fp32 | C bf16 | PyTorch fp32 | PyTorch bf16 autocast "
          "| C bf16 / PyTorch bf16 | per round | C bf16 / C fp32 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, batch in cases:
        for mode in ("train", "forward"):
            stem = "%s_%s_%s" % (name, batch, mode)
            c, t = rounds(out, "c_" + stem, n), rounds(out, "t_" + stem, n)
            cb, tb = rounds(out, "c_%s_bf16" % stem, n), rounds(out, "t_%s_bf16" % stem, n)
            ratios = [float(a["images_per_s"]) / float(b["images_per_s"]) for a, b in zip(cb, tb)]
            own = [float(a["images_per_s"]) / float(b["images_per_s"]) for a, b in zip(cb, c)]
            print("| %s | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %.2f |" %
                  (name, batch, "train step" if mode == "train" else "forward (sampling)",
                   med(c, "images_per_s"), med(cb, "images_per_s"), med(t, "images_per_s"),
                   med(tb, "images_per_s"), statistics.median(ratios),
                   " ".join("%.2f" % x for x in ratios), statistics.median(own)))
            shares.append(("%s b%s %s bf16" % (name, batch, mode), cb))
    print()
    print("images/s, medians over the rounds; C bf16 / C fp32 is the median of the rounds' "
          "ratios.")


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    cases = [c.split(":") for c in sys.argv[3:]]
    sg = rounds(out, "sgemm", n)
    peaks = [float(r["sgemm_gflops"]) for r in sg]
    peak = statistics.median(peaks)
    print("OpenBLAS kernel %s, %s threads, OpenMP wait (GOMP_SPINCOUNT) %s; "
          "SGEMM 2048^3 peak %.1f GFLOP/s (median of %d rounds: %s)" %
          (sg[0]["kernel"], sg[0]["threads"], sg[0].get("omp_wait", "?"), peak, n,
           ", ".join("%.1f" % p for p in peaks)))
    bpeaks = [float(r["bf16gemm_gflops"]) for r in sg if "bf16gemm_gflops" in r]
    if bpeaks:
        print("; oneDNN bf16 GEMM 2048^3 peak %.1f GFLOP/s (rounds: %s), %.2fx the SGEMM peak" %
              (statistics.median(bpeaks), ", ".join("%.1f" % p for p in bpeaks),
               statistics.median(bpeaks) / peak))
    print()
    print("| config | batch | mode | C img/s | PyTorch img/s | C/PyTorch | C/PyTorch per round "
          "| C GFLOP/s | of SGEMM peak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    shares = []
    for name, batch in cases:
        for mode in ("train", "forward"):
            c = rounds(out, "c_%s_%s_%s" % (name, batch, mode), n)
            t = rounds(out, "t_%s_%s_%s" % (name, batch, mode), n)
            ratios = [float(a["images_per_s"]) / float(b["images_per_s"]) for a, b in zip(c, t)]
            # effective rate against the same round's peak, then the median
            fracs = [float(a["gflops"]) / p for a, p in zip(c, peaks)]
            print("| %s | %s | %s | %.2f | %.2f | %.2f | %s | %.1f | %.1f%% |" %
                  (name, batch, "train step" if mode == "train" else "forward (sampling)",
                   med(c, "images_per_s"), med(t, "images_per_s"), statistics.median(ratios),
                   " ".join("%.2f" % x for x in ratios), med(c, "gflops"),
                   100 * statistics.median(fracs)))
            shares.append(("%s b%s %s" % (name, batch, mode), c))
    bf16_table(out, n, cases, shares)
    print()
    print("Medians over the rounds. GFLOP/s: train 6 x forward MACs x images / s, forward "
          "2 x MACs x images / s (the direct convolution's FLOPs: Winograd layers do fewer).")
    print()
    keys = ["conv_fwd", "conv_bwd", "groupnorm", "silu", "attention", "linear",
            "elementwise", "other", "unaccounted", "gemm", "outside_gemm"]
    print("C share of step time per op kind (profiled steps, median over the rounds; gemm "
          "overlaps the kinds above it):")
    print()
    print("| run | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for label, c in shares:
        print("| %s | " % label + " | ".join(
            "%.1f%%" % (100 * statistics.median(float(r.get("share_" + k, "nan")) for r in c))
            for k in keys) + " |")


if __name__ == "__main__":
    main()
