"""Checks ddpm-train's optimizer path against PyTorch.

usage: optim_ref.py DUMP.tns LR WARMUP CLIP EMA_DECAY T STEPS
DUMP.tns is what `ddpm-train --dump-batches` wrote: the initial parameters, each
step's x0, t, eps and loss, and the final parameters and EMA. This script redoes
the same steps in PyTorch (float64): x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps with
the linear schedule, L_simple, global-norm clipping as the authors do it
(clip / max(norm, clip)), torch.optim.Adam(betas 0.9/0.999, eps 1e-8) with the
authors' warmup lr * min(step / warmup, 1), and the EMA. It compares each step's
loss and every final parameter and EMA tensor by max|C-ref|/max|ref| <= 1e-4.

Parameters whose gradient is zero in exact arithmetic (see unet_ref.py) receive,
in float32, Adam updates driven by rounding noise; for those the check is that C's
drift stays within Adam's step bound, sum of lr over the steps."""
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/../../export")
import ddpm_unet as ddpm_torch  # noqa: E402  (the shipped module, export/ddpm_unet.py)
import tensor_file  # noqa: E402

TOL = 1e-4
ZERO_REL = 1e-9


def main():
    path = sys.argv[1]
    lr, warmup, clip, decay = (float(v) for v in sys.argv[2:6])
    T, steps = int(sys.argv[6]), int(sys.argv[7])
    d = tensor_file.read(path)
    torch.set_num_threads(2)
    model = ddpm_torch.from_meta(d["meta/model"]).double()
    sd = model.state_dict()
    with torch.no_grad():
        for k in sd:
            sd[k].copy_(torch.from_numpy(d["init/" + k].astype(np.float64)).reshape(sd[k].shape))
    params = dict(model.named_parameters())
    names = list(params)
    ema = {k: params[k].detach().clone() for k in names}
    opt = torch.optim.Adam([params[k] for k in names], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    ok = True
    zero_grad = {k: True for k in names}
    lr_sum = 0.0
    for s in range(steps):
        x0 = torch.from_numpy(d[f"step{s}/x0"].astype(np.float64))
        t = d[f"step{s}/t"].astype(np.int64)
        eps = torch.from_numpy(d[f"step{s}/eps"].astype(np.float64))
        a = torch.from_numpy(np.sqrt(abar[t]))[:, None, None, None]
        b = torch.from_numpy(np.sqrt(1.0 - abar[t]))[:, None, None, None]
        xt = a * x0 + b * eps
        opt.zero_grad()
        pred = model(xt, torch.from_numpy(t))
        loss = ((pred - eps) ** 2).mean()
        loss.backward()
        c_loss = float(d[f"step{s}/loss"][0])
        err = abs(c_loss - loss.item()) / abs(loss.item())
        good = err <= TOL
        ok &= good
        print(f"{'ok' if good else 'not ok'} - step {s}: loss C {c_loss:.7f} ref {loss.item():.7f} "
              f"(rel {err:.2e})")
        gscale = max(float(params[k].grad.abs().max()) for k in names)
        for k in names:
            if float(params[k].grad.abs().max()) > ZERO_REL * gscale:
                zero_grad[k] = False
        norm = torch.sqrt(sum((params[k].grad ** 2).sum() for k in names))
        scale = clip / max(float(norm), clip) if clip > 0 else 1.0
        for k in names:
            params[k].grad.mul_(scale)
        step_lr = lr * min(s / warmup, 1.0) if warmup > 0 else lr
        lr_sum += step_lr
        for g in opt.param_groups:
            g["lr"] = step_lr
        opt.step()
        with torch.no_grad():
            for k in names:
                ema[k].mul_(decay).add_((1.0 - decay) * params[k])

    worst = (0.0, "")
    nzero = 0
    for prefix, ref in (("final", {k: params[k].detach() for k in names}), ("ema", ema)):
        for k in names:
            c = d[f"{prefix}/{k}"].astype(np.float64).reshape(-1)
            r = ref[k].numpy().reshape(-1)
            if zero_grad[k]:
                nzero += 1
                init = d["init/" + k].astype(np.float64).reshape(-1)
                drift = np.abs(c - init).max()
                good = drift <= lr_sum * (1 + 1e-6)
                ok &= good
                if not good:
                    print(f"not ok - {prefix} {k}: zero-gradient tensor drifted {drift:.3e} > {lr_sum:.3e}")
                continue
            err = np.abs(c - r).max() / max(np.abs(r).max(), 1e-30)
            if err > worst[0]:
                worst = (err, f"{prefix} {k}")
            good = err <= TOL
            ok &= good
            print(f"{'ok' if good else 'not ok'} - {prefix} {k}: max|C-ref|/max|ref| = {err:.3e}")
    print(f"# {steps} steps, {2 * len(names)} tensors compared ({nzero} of them zero-gradient "
          f"tensors checked against Adam's step bound); worst {worst[0]:.3e} at {worst[1]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
