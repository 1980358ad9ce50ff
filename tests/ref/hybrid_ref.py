"""Learned variances and the hybrid loss (improved DDPM, Nichol & Dhariwal 2021)
against an independent float64 implementation of improved-diffusion's formulas
(openai/improved-diffusion, gaussian_diffusion.py: p_mean_variance with
ModelVarType.LEARNED_RANGE, _vb_terms_bpd, training_losses with RESCALED_MSE;
losses.py: normal_kl, discretized_gaussian_log_likelihood).

usage: hybrid_ref.py TOOL SCRATCH SCHEDULE T SPACING [--perturb]
Writes fixed inputs (seeded) to SCRATCH/in.tns, runs TOOL (tests/tools/hybrid_dump)
and checks, each an ok/not ok line:
  1. x_t = q_sample(x0, eps, t)                                   rel <= 1e-6
  2. the learned log variance of every (t, v) on the (respaced) process,
     frac log(beta_t) + (1 - frac) log(beta-tilde_t), frac = (v + 1) / 2   rel <= 1e-12
  3. one ancestral step with it (x0 clipped), on the respaced process   rel <= 1e-6
  4. the loss per sample: mse + (T / 1000) vb, vb = KL (t > 0) or decoder NLL
     (t = 0) in bits/dim, x0 not clipped; and mse, vb on their own     rel <= 1e-9
  5. d loss / d output vs PyTorch autograd in float64 with improved-diffusion's
     stop-gradient (frozen_out: the mean from eps.detach()), eps and v parts
                                                                      rel <= 1e-5
  6. the same against central finite differences in float64 of this file's loss
     (v: of the whole loss, eps held fixed in the vb term; eps: of the mse)
                                                                      rel <= 1e-5
rel = max|C - ref| / max|ref| over the checked values. --perturb scales one C
gradient of v at a t = 0 sample by 1 + 1e-3 first: checks 5 and 6 must then fail."""
import math
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffusion_ref  # noqa: E402  (schedules, tables, respacing in float64)
import tensor_file  # noqa: E402

failures = 0
LABEL = ""


def report(ok, msg):
    global failures
    print(("ok - " if ok else "not ok - ") + LABEL + msg, flush=True)
    if not ok:
        failures += 1


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ------------------------------------------------ improved-diffusion, in numpy

def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + np.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * np.exp(-logvar2))


def approx_standard_normal_cdf(x, lib=np):
    return 0.5 * (1.0 + lib.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales, lib=np):
    centered_x = x - means
    inv_stdv = lib.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0), lib)
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0), lib)
    if lib is np:
        log_cdf_plus = np.log(np.maximum(cdf_plus, 1e-12))
        log_one_minus_cdf_min = np.log(np.maximum(1.0 - cdf_min, 1e-12))
        log_delta = np.log(np.maximum(cdf_plus - cdf_min, 1e-12))
    else:
        log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
        log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
        log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return lib.where(x < -0.999, log_cdf_plus,
                     lib.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def learned_logvar(tb, t, v):
    """LEARNED_RANGE: min_log = posterior_log_variance_clipped, max_log = log(betas)."""
    min_log = tb["posterior_log_variance_clipped"][t][:, None]
    max_log = np.log(tb["betas"])[t][:, None]
    frac = (v + 1) / 2
    return frac * max_log + (1 - frac) * min_log


def vb_terms(tb, x0, xt, eps_pred, v, t, lib=np):
    """_vb_terms_bpd(clip_denoised=False) per sample, bits/dim."""
    col = (lambda a: torch.from_numpy(a[t][:, None])) if lib is torch else (lambda a: a[t][:, None])
    c1, c2 = col(tb["posterior_mean_coef1"]), col(tb["posterior_mean_coef2"])
    true_mean = c1 * x0 + c2 * xt
    true_lv = col(tb["posterior_log_variance_clipped"])
    pred_x0 = col(tb["sqrt_recip_alphas_cumprod"]) * xt - col(tb["sqrt_recipm1_alphas_cumprod"]) * eps_pred
    model_mean = c1 * pred_x0 + c2 * xt
    min_log, max_log = true_lv, col(np.log(tb["betas"]))
    frac = (v + 1) / 2
    model_lv = frac * max_log + (1 - frac) * min_log
    kl = 0.5 * (-1.0 + model_lv - true_lv + lib.exp(true_lv - model_lv)
                + (true_mean - model_mean) ** 2 * lib.exp(-model_lv))
    kl = kl.mean(1) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_lv, lib).mean(1) / math.log(2.0)
    tt = torch.from_numpy(t) if lib is torch else t
    return lib.where(tt == 0, nll, kl)


def hybrid_loss(tb, T, x0, xt, eps, out, t):
    """training_losses, RESCALED_MSE: mse + vb * num_timesteps / 1000, per sample."""
    D = x0.shape[1]
    e, v = out[:, :D], out[:, D:]
    mse = ((eps - e) ** 2).mean(1)
    vb = vb_terms(tb, x0, xt, e, v, t)
    return mse + vb * T / 1000.0, mse, vb


def torch_grad(tb, T, x0, xt, eps, out, t, scale):
    D = x0.shape[1]
    o = torch.from_numpy(out.copy()).requires_grad_(True)
    e, v = o[:, :D], o[:, D:]
    frozen_e = e.detach()  # frozen_out = cat([model_output.detach(), model_var_values])
    x0t, xtt = torch.from_numpy(x0), torch.from_numpy(xt)
    vb = vb_terms(tb, x0t, xtt, frozen_e, v, t, lib=torch) * (T / 1000.0)
    mse = ((torch.from_numpy(eps) - e) ** 2).mean(1)
    ((mse + vb).sum() * scale).backward()
    return o.grad.numpy()


def fd_grad(tb, T, x0, xt, eps, out, t, h=1e-5):
    """Central differences: v entries of the whole loss (the vb term's eps fixed),
    eps entries of the mse (the vb term does not see them: stop-gradient)."""
    D = x0.shape[1]
    g = np.zeros_like(out)
    for i in range(2 * D):
        for sgn in (1, -1):
            o = out.copy()
            o[:, i] += sgn * h
            if i < D:
                f = ((eps - o[:, :D]) ** 2).mean(1)
            else:
                f, _, _ = hybrid_loss(tb, T, x0, xt, eps, np.concatenate([out[:, :D], o[:, D:]], 1), t)
            g[:, i] += sgn * f / (2 * h)
    return g


def make_inputs(rng, T, Tr, N, D):
    t = np.array([0, 0, 1, 2, T // 2, T - 1] + list(rng.integers(0, T, N - 6)))[:N]
    ts = np.array([0, 1, Tr - 1, Tr // 2] + list(rng.integers(0, Tr, N - 4)))[:N]
    x0 = rng.integers(0, 256, (N, D)) / 127.5 - 1.0
    x0[:, 0], x0[:, 1] = -1.0, 1.0  # the open-ended edge bins
    eps = rng.standard_normal((N, D))
    e_pred = eps + 0.5 * rng.standard_normal((N, D))
    v = rng.uniform(-1.3, 1.3, (N, D))  # a little beyond [-1, 1]: extrapolation
    out = np.concatenate([e_pred, v], 1)
    xs = rng.standard_normal((N, D))
    z = rng.standard_normal((N, D))
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    return {"t": f32(t), "ts": f32(ts), "x0": f32(x0), "eps": f32(eps), "out": f32(out),
            "xs": f32(xs), "z": f32(z)}


def doubles(d, name):
    return d[name].astype(np.float64) + d[name + ".lo"].astype(np.float64)


def main():
    global LABEL
    tool, scratch, schedule, T, spacing = sys.argv[1:6]
    T = int(T)
    perturb = "--perturb" in sys.argv
    LABEL = f"{schedule} T {T}, respacing {spacing}: "
    os.makedirs(scratch, exist_ok=True)
    tb, _ = diffusion_ref.build(schedule, T, "none")
    tbr, _ = diffusion_ref.build(schedule, T, spacing)
    Tr = len(tbr["betas"])
    N, C, S = 10, 2, 4
    D = C * S * S
    scale = 0.375
    rng = np.random.default_rng(20261206 + T)
    inp = make_inputs(rng, T, Tr, N, D)
    inp["meta"] = np.array([N, D, scale], np.float32)
    tensor_file.write(os.path.join(scratch, "in.tns"), inp)
    r = subprocess.run([tool, schedule, str(T), spacing, os.path.join(scratch, "in.tns"),
                        os.path.join(scratch, "out.tns")], capture_output=True, text=True)
    if r.returncode != 0:
        report(False, f"{tool} failed: {r.stderr.strip()}")
        return 1
    c = tensor_file.read(os.path.join(scratch, "out.tns"))
    x0, eps, out = (inp[k].astype(np.float64) for k in ("x0", "eps", "out"))
    t, ts = inp["t"].astype(np.int64), inp["ts"].astype(np.int64)

    xt_ref = tb["sqrt_alphas_cumprod"][t][:, None] * x0 + tb["sqrt_one_minus_alphas_cumprod"][t][:, None] * eps
    xt = c["xt"].reshape(N, D).astype(np.float64)  # the loss is checked on the C x_t
    report(rel(xt, xt_ref) <= 1e-6, f"q_sample: rel err {rel(xt, xt_ref):.1e} (<= 1e-6)")

    v = out[:, D:]
    lv_ref = learned_logvar(tbr, ts, v)
    e = rel(doubles(c, "logvar").reshape(N, D), lv_ref)
    report(e <= 1e-12, f"learned log variance frac log(beta_t) + (1-frac) log(beta-tilde_t) "
           f"at t = {sorted(set(ts.tolist()))[:4]}...: rel err {e:.1e} (<= 1e-12)")
    split_ok = np.array_equal(c["eps_split"].reshape(N, D), inp["out"][:, :D]) and \
        np.array_equal(c["v_split"].reshape(N, D), inp["out"][:, D:])
    report(split_ok, "the output splits into eps (first in_channels) and v (the rest)")

    xs, z = inp["xs"].astype(np.float64), inp["z"].astype(np.float64)
    col = lambda name: tbr[name][ts][:, None]  # noqa: E731
    px0 = np.clip(col("sqrt_recip_alphas_cumprod") * xs - col("sqrt_recipm1_alphas_cumprod") * out[:, :D], -1, 1)
    mean = col("posterior_mean_coef1") * px0 + col("posterior_mean_coef2") * xs
    xp_ref = mean + (ts > 0)[:, None] * np.exp(0.5 * lv_ref) * z
    e = rel(c["x_prev"].reshape(N, D), xp_ref)
    report(e <= 1e-6, f"ancestral step with the learned variance (x0 clipped, no noise at t = 0): "
           f"rel err {e:.1e} (<= 1e-6)")

    loss_ref, mse_ref, vb_ref = hybrid_loss(tb, T, x0, xt, eps, out, t)
    for name, want in (("loss", loss_ref), ("mse", mse_ref), ("vb", vb_ref)):
        e = rel(doubles(c, name), want)
        report(e <= 1e-9, f"hybrid loss, {name} per sample ({want.mean():.5g} on average; "
               f"vb weight T/1000 = {T / 1000:g}): rel err {e:.1e} (<= 1e-9)")

    dout = c["dout"].reshape(N, 2 * D).astype(np.float64)
    if perturb:
        dout[0, D + 3] *= 1 + 1e-3
    g_torch = torch_grad(tb, T, x0, xt, eps, out, t, scale)
    g_fd = fd_grad(tb, T, x0, xt, eps, out, t) * scale
    for name, g in (("PyTorch autograd (stop-gradient on the mean)", g_torch),
                    ("finite differences (float64)", g_fd)):
        parts = {"eps": (slice(None), slice(0, D)), "v at t = 0 (decoder)": (t == 0, slice(D, None)),
                 "v at t > 0 (KL)": (t > 0, slice(D, None))}
        for pname, (rows, cols) in parts.items():
            e = rel(dout[rows][:, cols], g[rows][:, cols])
            report(e <= 1e-5, f"d loss / d {pname} vs {name}: rel err {e:.1e} (<= 1e-5)")
    e = rel(g_fd, g_torch)
    report(e <= 1e-6, f"(sanity) finite differences vs autograd: rel err {e:.1e}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
