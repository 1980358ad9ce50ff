"""The PyTorch 1.13 counterpart of bench_step: one training step (forward +
backward + Adam) or one forward pass (no_grad) of the same U-Net
(export/ddpm_unet.py), float32, random inputs, median seconds per step.
--bf16: under CPU autocast to bfloat16 (the one line a PyTorch user adds), with
GroupNorm kept in float32: PyTorch 1.13's CPU autocast has no fp32 rule for
group_norm (it would run in whatever dtype arrives), where its CUDA autocast
lists group_norm among the fp32 ops; this does what the GPU rule does.

usage: torch_step.py train|forward CONFIG.yaml BATCH [--threads T] [--steps S] [--warmup W]
       [--bf16]
Prints "key value" lines like bench_step."""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "export"))
from ddpm_unet import UNet  # noqa: E402


def gn_fp32(forward):
    """GroupNorm in float32 under autocast (see the module docstring)."""
    def run(x):
        with torch.autocast("cpu", enabled=False):
            return forward(x.float())
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "forward"])
    ap.add_argument("config")
    ap.add_argument("batch", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    with open(a.config) as f:
        mc = yaml.safe_load(f)["model"]
    net = UNet(mc["image_size"], mc["in_channels"], mc["ch"], mc["ch_mult"],
               mc["num_res_blocks"], mc["attn_resolutions"]).float()
    p = float(mc.get("dropout", 0.0))
    if a.mode == "train" and p > 0:
        # dropout at the same place as the C model: on conv2's input in every res block
        for name, mod in net.named_modules():
            if name.endswith("conv2"):
                mod.register_forward_pre_hook(lambda m, inp: (F.dropout(inp[0], p, True),))
    if a.bf16:
        for mod in net.modules():
            if isinstance(mod, torch.nn.GroupNorm):
                mod.forward = gn_fp32(mod.forward)
    N, C, S = a.batch, mc["in_channels"], mc["image_size"]
    x = torch.randn(N, C, S, S)
    eps = torch.randn(N, C, S, S)
    t = torch.randint(0, 1000, (N,))
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            if a.mode == "forward":
                with torch.no_grad():
                    net(x, t)
                return
            opt.zero_grad(set_to_none=False)
            loss = F.mse_loss(net(x, t).float(), eps)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    print("threads %d" % torch.get_num_threads())
    print("precision %s" % ("bf16_autocast" if a.bf16 else "fp32"))
    print("torch_version %s" % torch.__version__)
    print("params %d" % sum(q.numel() for q in net.parameters()))
    print("step_s %.5f" % s)
    print("step_min_s %.5f" % min(times))
    print("images_per_s %.3f" % (N / s))


if __name__ == "__main__":
    main()
