"""The table of bench/cluster_bench.sh: per run (W workers, S shards, link RATE),
the measured split of a step (logs and metrics.jsonl of each run) next to what
bench/scaling_model.py predicts for the same links and the measured compute.
usage: /usr/bin/python3 bench/cluster_report.py TMPDIR"""
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scaling_model as sm  # noqa: E402

P = sm.P
LAYERS = sm.unet_layers(32, attn=(2,))   # (parameters, MACs) of each forward step


def measured_layers(path):
    """(parameters, seconds) of each forward step from bench_step's --layer-profile CSV
    (the offset each layer reads up to, its median time), or None without the file."""
    if not os.path.exists(path):
        return None
    rows = [l.split(",") for l in open(path).read().split()[1:]]
    out, prev = [], 0
    for ready, secs in rows:
        out.append((int(ready) - prev, float(secs)))
        prev = int(ready)
    return out
DECODE_GBS, UPDATE_NS = 0.986, 5.06   # the model's measured per-core inputs (docs/scaling.md)


def rate_bytes(rate):
    m = re.fullmatch(r"([\d.]+)([kmg]?)bit", rate)
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] / 8


def parse(base):
    log = open(base + ".log").read()
    rows = [json.loads(l) for l in open(os.path.join(base, "metrics.jsonl"))]
    el = [r["elapsed"] for r in rows]
    steps = [b - a for a, b in zip(el, el[1:])]   # steps 2.. (step 1 has no broadcast before it)
    wk = re.findall(r"compute ([\d.]+) s, encode ([\d.]+) s, sending ([\d.]+) s, parameter "
                    r"broadcast(?: \([^)]*\))? ([\d.]+) s, waiting for work ([\d.]+) s"
                    r"(?:; per broadcast: ([\d.]+) s from posting to the last chunk, ([\d.]+) s"
                    r"(?: of it exposed, ([\d.]+)% of its chunks in before the forward began)?)?", log)
    sv = re.findall(r"(coordinator|server shard) rank \d+: busy [\d.]+% of step time; per step: "
                    r"planning and sending work ([\d.]+) s, receiving and decoding pushes ([\d.]+) s "
                    r"\(decoding ([\d.]+) s of it\), update ([\d.]+) s, parameter broadcast ([\d.]+) s", log)
    avg = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    w = {k: avg([float(x[i]) for x in wk]) for i, k in enumerate(("compute", "encode", "send", "bcast", "wait"))}
    if wk and wk[0][5]:
        w["bcast_full"] = avg([float(x[5]) for x in wk])
        w["bcast"] = avg([float(x[6]) for x in wk])   # per broadcast waited for
        # the share that came in while the worker waited for its work (older builds: 0)
        w["arrived"] = avg([float(x[7]) / 100 if x[7] else 0.0 for x in wk])
    else:   # a build that waits for the whole broadcast: all of it is exposed
        w["bcast_full"] = w["bcast"]
    s = {k: avg([float(x[i]) for x in sv]) for i, k in ((3, "decode"), (4, "update"), (2, "recv"), (5, "bcast"))}
    ck = re.findall(r"checkpoint step \d+ -> \S+ \(([\d.]+) s\)", log)
    return dict(step=statistics.median(steps) if steps else float("nan"), ckpt=float(ck[-1]) if ck else float("nan"),
                bytes=statistics.median(r["bytes_per_step"] for r in rows), w=w, s=s)


def predict(W, S, link, C, E, U, push_bytes, overlapped, layers, arrived):
    back = C * 2 / 3
    per_worker = push_bytes / W
    chunk_t = (1 << 20) / link
    send = max(0.0, per_worker / link - back) + chunk_t
    ingest = W * per_worker / S / link
    decode = W * P * 4 / S / (DECODE_GBS * 1e9)
    server = max(0.0, max(ingest, decode) - back)
    # the update as measured, like compute and encode: a rank here gets a varying
    # fraction of a loaded core, so the model's whole-core 5.06 ns/parameter (0.58 s
    # at S = 1) is 3-10x off; the model is tested on what the network hides
    update = U
    bcast = P * 4 / link
    exposed = sm.bcast_exposed(bcast, C / 3, layers, arrived) if overlapped else bcast
    return dict(send=send + server, update=update, bcast_full=bcast, bcast=exposed,
                step=C + E + send + server + update + exposed)


def main():
    t = sys.argv[1]
    timed = measured_layers(os.path.join(t, "layers.csv"))
    layers = timed or LAYERS
    print("| W | S | link | ratio* | step s | compute s | encode s | push MB/worker | push exposed s "
          "| decode s | update s | bcast MB/worker | bcast s (whole) | bcast exposed s | hidden "
          "| in before the forward | bcast exposed, MACs, from 0 s | final ckpt s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
          "| --- | --- | --- |")
    worst = []
    for line in open(os.path.join(t, "runs")):
        W, S, rate, rc, load = line.split()
        W, S = int(W), int(S)
        base = os.path.join(t, f"w{W}s{S}_{rate}")
        if rc != "0" or not os.path.exists(os.path.join(base, "metrics.jsonl")):
            print(f"| {W} | {S} | {rate} | run failed (exit {rc}): {base}.log |")
            continue
        m = parse(base)
        link = rate_bytes(rate)
        w, s = m["w"], m["s"]
        overlapped = "bcast_full" in w and w["bcast_full"] != w["bcast"]
        arrived = w.get("arrived", 0.0)
        p = predict(W, S, link, w["compute"], w["encode"], s["update"], m["bytes"], overlapped, layers,
                    arrived)
        by_macs = predict(W, S, link, w["compute"], w["encode"], s["update"], m["bytes"], overlapped,
                          LAYERS, 0.0)["bcast"]
        ratio = (P * 4 / link) / w["compute"]
        hidden = 1 - w["bcast"] / w["bcast_full"] if w["bcast_full"] > 0 else 0
        hp = 1 - p["bcast"] / p["bcast_full"]
        print(f"| {W} | {S} | {rate} | {ratio:.2f} | {m['step']:.1f} / {p['step']:.1f} | {w['compute']:.1f} "
              f"| {w['encode']:.2f} | {m['bytes'] / W / 1e6:.0f} | {w['send']:.2f} / {p['send']:.2f} "
              f"| {s['decode']:.2f} | {s['update']:.2f} | {P * 4 / 1e6:.0f} "
              f"| {w['bcast_full']:.2f} / {p['bcast_full']:.2f} | {w['bcast']:.2f} / {p['bcast']:.2f} "
              f"| {hidden:.0%} / {hp:.0%} | {arrived:.0%} | {by_macs:.2f} | {m['ckpt']:.1f} |")
        worst.append((abs(m["step"] / p["step"] - 1), W, S, rate))
    print("measured / predicted (per step, medians of steps 2.., worker and shard "
          "averages); ratio* = a whole broadcast at the link's rate / compute (lsun256 at 64 "
          "cores: 0.08 on 100 Gb/s, 0.31 on 25 Gb/s); compute, encode and update measured "
          "(inputs); bcast whole = from the worker posting its part to the last chunk, which "
          "includes waiting for the root's update; the predicted bcast exposed spreads the "
          "forward's time (compute / 3) over the layers " +
          ("by their measured times (bench_step --layer-profile, layers.csv)" if timed else
           "by MACs (no layers.csv)") + ", starting when the measured share of the broadcast "
          "that came in while the worker waited for its work ('in before the forward') is in; "
          "the column after it predicts as before: MACs, forward and broadcast starting together")
    for d, W, S, rate in worst:
        if d > 0.25:
            print(f"step time: W={W} S={S} {rate}: measured and predicted differ by {d:.0%}")


if __name__ == "__main__":
    main()
