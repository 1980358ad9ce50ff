#!/usr/bin/env bash
# Distributed training benchmark on this machine: 1 coordinator/server with 1 and
# with 2 workers, for each wire codec, on configs/fashion_mnist.yaml (batch 64).
# Prints images/s (median over steps after the first), the coordinator's busy
# fraction, bytes per step and compression, the workers' split of step time
# (compute, encode, sending, parameter broadcast, waiting for work), and one step's
# timeline showing gradient pushes that start before backward ends.
#   bash bench/dist_bench.sh [STEPS]      (needs: make all)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-8}"
TMP="$(mktemp -d /tmp/ddpm-dist-bench.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
echo "# distributed benchmark: fashion_mnist, batch 64, $STEPS steps per run, $(nproc) cores"
for W in 1 2; do
    for codec in fp32 fp32_zstd bf16_zstd; do
        out="$TMP/w${W}_$codec"
        DDPM_TIMELINE="$out.timeline" "${MPIRUN[@]}" -x DDPM_TIMELINE -np $((W + 1)) \
            build/ddpm-train configs/fashion_mnist.yaml training.steps="$STEPS" training.log_every=1 \
            training.checkpoint_every=0 distributed.codec=$codec output.dir="$out" >"$out.log" 2>&1
    done
done
/usr/bin/python3 - "$TMP" <<'PY'
import glob, json, re, statistics, sys
t = sys.argv[1]
print(f"{'workers':>7} {'codec':>10} {'images/s':>9} {'coord busy':>10} {'MB/step':>8} {'ratio':>6} "
      f"{'compute s':>9} {'encode s':>8} {'send s':>7} {'bcast s':>8} {'wait s':>7} {'update s':>8}")
for w in (1, 2):
    for codec in ("fp32", "fp32_zstd", "bf16_zstd"):
        base = f"{t}/w{w}_{codec}"
        rows = [json.loads(l) for l in open(f"{base}/metrics.jsonl")]
        ips = statistics.median(r["images_per_s"] for r in rows[1:])
        mb = statistics.median(r["bytes_per_step"] for r in rows) / 1e6
        ratio = statistics.median(r["compression"] for r in rows)
        log = open(f"{base}.log").read()
        busy = float(re.search(r"coordinator rank 0: busy ([\d.]+)%", log).group(1))
        upd = float(re.search(r"update ([\d.]+) s", log).group(1))
        ws = re.findall(r"compute ([\d.]+) s, encode ([\d.]+) s, sending ([\d.]+) s, parameter broadcast(?: \(exposed[^)]*\))? ([\d.]+) s, waiting for work ([\d.]+) s", log)
        avg = [sum(float(x[i]) for x in ws) / len(ws) for i in range(5)]
        print(f"{w:>7} {codec:>10} {ips:>9.1f} {busy:>9.1f}% {mb:>8.2f} {ratio:>6.2f} "
              f"{avg[0]:>9.3f} {avg[1]:>8.3f} {avg[2]:>7.3f} {avg[3]:>8.3f} {avg[4]:>7.3f} {upd:>8.4f}")
# one step's timeline (2 workers, fp32): pushes before backward ends
ev = [json.loads(l) for f in sorted(glob.glob(f"{t}/w2_fp32.timeline.rank*")) for l in open(f)]
step = 3
print(f"# timeline of step {step}, 2 workers, fp32 (seconds from the worker's step start)")
for rank in sorted({e['rank'] for e in ev}):
    es = [e for e in ev if e["rank"] == rank and e["step"] == step]
    end = [e["t"] for e in es if e["event"] == "backward_end"][0]
    pushes = sorted((e["t"], e["chunk"]) for e in es if e["event"] == "push")
    early = sum(1 for p in pushes if p[0] < end)
    print(f"rank {rank}: backward ends at {end:.3f}; pushes " +
          ", ".join(f"chunk {c} at {tt:.3f}" for tt, c in pushes) +
          f"; {early} of {len(pushes)} pushes started before backward ended")
PY
