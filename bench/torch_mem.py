"""PyTorch 1.13 counterpart of bench/mem_step.c: one training step (forward +
backward + Adam) of the same U-Net (export/ddpm_unet.py), float32, at one
micro-batch, in a fresh process; prints peak RSS (getrusage ru_maxrss) and seconds
per image as "key value" lines.

usage: torch_mem.py CONFIG.yaml MICRO [--threads T]"""
import argparse
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "export"))
from ddpm_unet import UNet  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("micro", type=int)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    with open(a.config) as f:
        mc = yaml.safe_load(f)["model"]
    net = UNet(mc["image_size"], mc["in_channels"], mc["ch"], mc["ch_mult"],
               mc["num_res_blocks"], mc["attn_resolutions"]).float()
    p = float(mc.get("dropout", 0.0))
    if p > 0:
        # dropout where the C model applies it: on conv2's input in every res block
        for name, mod in net.named_modules():
            if name.endswith("conv2"):
                mod.register_forward_pre_hook(lambda m, inp: (F.dropout(inp[0], p, True),))
    N, C, S = a.micro, mc["in_channels"], mc["image_size"]
    x = torch.randn(N, C, S, S)
    eps = torch.randn(N, C, S, S)
    t = torch.randint(0, 1000, (N,))
    opt = torch.optim.Adam(net.parameters(), lr=2e-5)
    # Steady state, as a worker after its first step and as the C program: gradients
    # and Adam's m and v exist before the step. Adam creates its state lazily, so a
    # first step alone would peak without it; an update with zero gradients creates
    # it and leaves the weights unchanged (m = v = 0).
    for q in net.parameters():
        q.grad = torch.zeros_like(q)
    opt.step()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=False)
    loss = F.mse_loss(net(x, t), eps)
    loss.backward()
    opt.step()
    s = time.perf_counter() - t0
    print("micro %d" % N)
    print("threads %d" % torch.get_num_threads())
    print("torch_version %s" % torch.__version__)
    print("step_s %.3f" % s)
    print("s_per_image %.3f" % (s / N))
    print("peak_rss_mib %.1f" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


if __name__ == "__main__":
    main()
