"""A model of lsun256 step time and scaling efficiency for ddpm-cluster's parameter
server, built from costs measured on this machine (docs/scaling.md explains it).

usage: /usr/bin/python3 bench/scaling_model.py [--core-gflops G] [--encode-gbs E]
           [--decode-gbs D] [--update-ns U] [--ratio R]
  --core-gflops  effective training GFLOP/s of one core (6 x forward MACs x images / s)
  --encode-gbs   bf16+zstd encode throughput of one core, GB of fp32 gradient per s
  --decode-gbs   decode-and-add throughput of one core, GB of fp32 gradient per s
  --update-ns    Adam + EMA per parameter on one core, ns
  --ratio        bf16+zstd size ratio against fp32 (measured on real gradients)

Fixed assumptions (the issue's): nodes of 64 cores, each as fast as this machine's
core; networks of 100 and 25 Gb/s per node; global batch 64 up to 64 nodes, then one
image per node (weak scaling). One worker rank per node uses all 64 cores for compute
and encoding; server shards run on S extra nodes, one rank each, with 64 cores for
decoding and the update."""
import argparse
import math

P = 113_673_219               # lsun256 parameters
FLOP_PER_IMAGE = 6 * 248.514e9  # training FLOP per image: 6 x the forward's 248.5 GMAC
CORES = 64


def unet_layers(image_size=256, ch=128, ch_mult=(1, 1, 2, 2, 4, 4), nrb=2, attn=(16,), cin=3):
    """(parameters, forward MACs per image) of each step of the forward, in the order
    the forward runs them and the parameter table lays them out (common/model/unet.c:
    timestep MLP, conv_in, down blocks, mid, up blocks, out)."""
    out = [(ch * 4 * ch + 4 * ch + 4 * ch * 4 * ch + 4 * ch, 0.0)]   # temb (negligible MACs)

    def conv(ci, co, k, hw):
        return ci * co * k * k + co, ci * co * k * k * hw

    def res(ci, co, r):
        p1, m1 = conv(ci, co, 3, r * r)
        p2, m2 = conv(co, co, 3, r * r)
        p = 2 * ci + p1 + 4 * ch * co + co + 2 * co + p2
        m = m1 + m2
        if ci != co:
            ps, ms = conv(ci, co, 1, r * r)
            p, m = p + ps, m + ms
        return p, m

    def attn_blk(c, r):
        hw = r * r
        return 2 * c + 4 * (c * c + c), 4 * c * c * hw + 2 * hw * hw * c

    r, cur, hs = image_size, ch, [ch]
    out.append(conv(cin, ch, 3, r * r))
    for lvl, mult in enumerate(ch_mult):
        for _ in range(nrb):
            out.append(res(cur, ch * mult, r))
            cur = ch * mult
            if r in attn:
                out.append(attn_blk(cur, r))
            hs.append(cur)
        if lvl != len(ch_mult) - 1:
            p, _ = conv(cur, cur, 3, 1)
            r = (r + 1) // 2
            out.append((p, cur * cur * 9 * r * r))
            hs.append(cur)
    out += [res(cur, cur, r), attn_blk(cur, r), res(cur, cur, r)]
    for lvl in reversed(range(len(ch_mult))):
        for _ in range(nrb + 1):
            out.append(res(cur + hs.pop(), ch * ch_mult[lvl], r))
            cur = ch * ch_mult[lvl]
            if r in attn:
                out.append(attn_blk(cur, r))
        if lvl != 0:
            r *= 2
            out.append(conv(cur, cur, 3, r * r))
    p, m = conv(cur, cin, 3, r * r)
    out.append((p + 2 * cur, m))
    return out


def bcast_exposed(t_bcast, t_forward, layers, arrived=0.0):
    """Seconds the forward waits for a broadcast that delivers the parameters in table
    order at a steady rate (P*4 bytes in t_bcast) while it runs each layer once the
    chunks (DIST_CHUNK_FLOATS, 2^18 floats) holding its parameters are in. The forward
    starts when the share `arrived` of the broadcast is in (0: at the same moment; on
    a real cluster the next step's control message and work take microseconds), and
    each layer takes its share of t_forward by its weight in layers: (parameters,
    MACs) from unet_layers, or (parameters, measured seconds)."""
    P = sum(p for p, _ in layers)
    M = sum(m for _, m in layers)
    chunk = 1 << 18
    t, end = 0.0, 0
    for p, m in layers:
        end += p
        ready = max(0.0, min(P, -(-end // chunk) * chunk) / P - arrived) * t_bcast
        t = max(t, ready) + t_forward * m / M
    return t - t_forward


def step_time(nodes, gbps, a, S):
    W = nodes
    images = 64 / W if W <= 64 else 1.0
    node_flops = CORES * a.core_gflops * 1e9
    t_compute = images * FLOP_PER_IMAGE / node_flops
    t_backward = t_compute * 2 / 3           # backward is about 2/3 of a step's FLOPs
    link = gbps * 1e9 / 8                     # bytes/s per node, each direction
    g_bytes = P * 4 / a.ratio                 # compressed gradient per worker per step
    # worker side: encode and send while backward runs (chunks are pushed as layers finish)
    t_encode = P * 4 / (a.encode_gbs * 1e9 * CORES)
    t_send = g_bytes / link
    exposed_push = max(0.0, max(t_encode, t_send) - t_backward) + (g_bytes / link) / 64  # last chunk
    # server side: each shard receives W/S of the pushes and decodes them while the
    # workers' backward runs; what does not fit under backward is exposed
    t_ingest = W * g_bytes / S / link
    t_decode = W * P * 4 / S / (a.decode_gbs * 1e9 * CORES)
    t_server = max(0.0, max(t_ingest, t_decode) - t_backward)
    t_update = P / S * a.update_ns * 1e-9 / CORES
    # parameter broadcast (chunks from their owners; large MPI broadcasts are
    # scatter + allgather): every worker receives the P*4 bytes of fp32 parameters once
    t_bcast = P * 4 / link
    total = t_compute + exposed_push + t_server + t_update + t_bcast
    ideal = t_compute
    return total, ideal, dict(compute=t_compute, push=exposed_push, server=t_server,
                              update=t_update, bcast=t_bcast)


def best_s(nodes, gbps, a):
    """The fewest shards whose exposed ingest, decode and update stay under 2% of compute."""
    for S in range(1, 1025):
        _, _, parts = step_time(nodes, gbps, a, S)
        if parts["server"] + parts["update"] <= 0.02 * parts["compute"]:
            return S
    return 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--core-gflops", type=float, required=True)
    ap.add_argument("--encode-gbs", type=float, required=True)
    ap.add_argument("--decode-gbs", type=float, required=True)
    ap.add_argument("--update-ns", type=float, required=True)
    ap.add_argument("--ratio", type=float, required=True)
    a = ap.parse_args()
    print(f"# inputs: {a.core_gflops:.1f} GFLOP/s per core, encode {a.encode_gbs:.2f} GB/s/core, "
          f"decode {a.decode_gbs:.2f} GB/s/core, Adam+EMA {a.update_ns:.2f} ns/param/core, "
          f"bf16+zstd {a.ratio:.2f}x")
    print("| nodes | network | images/node/step | S | step s | compute s | exposed push s | "
          "server s | update s | bcast s | efficiency | images/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for nodes in (8, 64, 256):
        for gbps in (100, 25):
            S = best_s(nodes, gbps, a)
            total, ideal, parts = step_time(nodes, gbps, a, S)
            images = 64 if nodes <= 64 else nodes
            print(f"| {nodes} | {gbps} Gb/s | {images / nodes:g} | {S} | {total:.3f} | "
                  f"{parts['compute']:.3f} | {parts['push']:.3f} | {parts['server']:.3f} | "
                  f"{parts['update']:.4f} | {parts['bcast']:.3f} | {ideal / total:.1%} | "
                  f"{images / total:.1f} |")


if __name__ == "__main__":
    main()
