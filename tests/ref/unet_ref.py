"""Checks the C U-Net against the PyTorch reference on the same weights and inputs.

usage: unet_ref.py DUMP.tns [--perturb NAME]
Reads what tests/tools/unet_ref_dump wrote, rebuilds the model in PyTorch (float64),
loads the very same parameters and dropout masks, recomputes eps_theta(x_t, t),
L_simple = mean((eps_theta - noise)^2) and every parameter gradient, and compares
each tensor by max|C - ref| / max|ref| <= 1e-4. Prints one ok/not ok line per
tensor with its error. --perturb NAME adds a visible error to the C gradient of
NAME first (to show that the comparison can fail)."""
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/../../export")
import ddpm_unet as ddpm_torch  # noqa: E402  (the shipped module, export/ddpm_unet.py)
import tensor_file  # noqa: E402

TOL = 1e-4
# Some gradients are exactly zero in exact arithmetic: a bias (or the timestep
# projection) feeding a GroupNorm whose groups hold one channel, or the bias of k
# in attention (softmax is shift invariant). The float64 reference then holds only
# rounding noise (~1e-17) and max|C-ref|/max|ref| is 0/0. Such a tensor is
# recognised by max|ref| <= ZERO_REL * (largest reference gradient) and must
# satisfy max|C| <= ZERO_TOL * (largest reference gradient) instead.
ZERO_REL = 1e-9
ZERO_TOL = 1e-6


def run(d):
    """The reference model on a dump's parameters, masks and inputs: L_simple's
    forward and backward. Returns (out, loss, model with .grad set), or None when
    the parameter names differ (printed)."""
    model = ddpm_torch.from_meta(d["meta/model"]).double()
    sd = model.state_dict()
    c_names = sorted(k[6:] for k in d if k.startswith("param/"))
    missing = set(sd) ^ set(c_names)
    if missing:
        print(f"not ok - parameter names differ between C and PyTorch: {sorted(missing)[:10]}")
        return None
    with torch.no_grad():
        for k in sd:
            sd[k].copy_(torch.from_numpy(d["param/" + k].astype(np.float64)).reshape(sd[k].shape))
    for name, mod in model.named_modules():
        if isinstance(mod, ddpm_torch.ResBlock) and "mask/" + name in d:
            mod.mask = torch.from_numpy(d["mask/" + name].astype(np.float64))
    x = torch.from_numpy(d["x_t"].astype(np.float64))
    t = torch.from_numpy(d["t"].astype(np.int64))
    noise = torch.from_numpy(d["noise"].astype(np.float64))
    y = torch.from_numpy(d["y"].astype(np.int64)) if "y" in d else None
    out = model(x, t, y)
    loss = ((out - noise) ** 2).mean()
    loss.backward()
    return out, loss, model


def main():
    path = sys.argv[1]
    perturb = sys.argv[sys.argv.index("--perturb") + 1] if "--perturb" in sys.argv else None
    d = tensor_file.read(path)
    torch.set_num_threads(2)
    r = run(d)
    if r is None:
        return 1
    out, loss, model = r
    sd = model.state_dict()
    nmask = sum(1 for k in d if k.startswith("mask/"))

    results = []
    grads = dict(model.named_parameters())
    gscale = max(float(grads[k].grad.abs().max()) for k in sd)
    nzero = 0

    def compare(name, c, ref, zero_ok=False):
        nonlocal nzero
        ref = np.asarray(ref, dtype=np.float64).reshape(-1)
        c = np.asarray(c, dtype=np.float64).reshape(-1)
        if zero_ok and np.abs(ref).max() <= ZERO_REL * gscale:
            nzero += 1
            err = np.abs(c).max() / gscale
            ok = err <= ZERO_TOL and np.isfinite(err)
            results.append((err * TOL / ZERO_TOL, name))
            print(f"{'ok' if ok else 'not ok'} - {name}: zero in exact arithmetic; "
                  f"max|C|/max|all ref grads| = {err:.3e}")
            return ok
        denom = max(np.abs(ref).max(), 1e-30)
        err = np.abs(c - ref).max() / denom
        results.append((err, name))
        ok = err <= TOL and np.isfinite(err)
        print(f"{'ok' if ok else 'not ok'} - {name}: max|C-ref|/max|ref| = {err:.3e}")
        return ok

    compare("output eps_theta", d["out"], out.detach().numpy())
    compare("loss L_simple", d["loss"], [loss.item()])
    for k in sd:
        g = d["grad/" + k].astype(np.float64).copy()
        if perturb == k:
            g.reshape(-1)[g.size // 2] += 1e-3 * np.abs(g).max() + 1e-6
        compare("grad " + k, g, grads[k].grad.numpy(), zero_ok=True)
    worst = max(results)
    print(f"# {len(results)} tensors compared ({len(sd)} parameter gradients, {nmask} dropout masks "
          f"applied, {nzero} gradients zero in exact arithmetic); worst {worst[0]:.3e} at {worst[1]}")
    return 0 if all(e <= TOL for e, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
