"""Checks the C bits/dim evaluation against an independent float64 PyTorch/numpy
implementation of the authors' formulas (hojonathanho/diffusion,
diffusion_utils_2.py: _vb_terms_bpd, _prior_bpd, calc_bpd_loop; utils.py:
normal_kl, approx_standard_normal_cdf, discretized_gaussian_log_likelihood).

usage: bpd_ref.py DUMP.tns BETA_START BETA_END [--perturb]
DUMP is what tests/tools/bpd_ref_dump wrote. Checks, each an ok/not ok line:
  1. the C U-Net output on every x_t against the PyTorch port (export/ddpm_unet.py)
     in float64: max|C-ref|/max|ref| <= 1e-4 (the U-Net reference test's bound);
  2. every term L_t (N x T), the prior and the total from the C eps, with x_t rebuilt
     here from x0 and the dumped noise: relative error <= 1e-9 (double arithmetic on
     both sides; only the summation order differs);
  3. the totals end to end from PyTorch's eps: relative error <= 1e-4;
  4. the strided estimates: the evaluated timesteps and the totals, recomputed here
     from the exact terms (trapezoid as numpy.interp over the grid, summed at every
     integer t; unbiased as K times the terms at 1 + r + jK): relative error <= 1e-6
     (the strided runs batch the network differently, so eps may differ in the last bit).
--perturb adds 1e-6 (relative) to one C term first: check 2 must then fail."""
import math
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/../../export")
import ddpm_unet as ddpm_torch  # noqa: E402  (the shipped module, export/ddpm_unet.py)
import tensor_file  # noqa: E402

failures = 0


def report(ok, msg):
    global failures
    print(("ok - " if ok else "not ok - ") + msg, flush=True)
    if not ok:
        failures += 1


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + np.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * np.exp(-logvar2))


def approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * np.power(x, 3))))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    centered_x = x - means
    inv_stdv = np.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    log_cdf_plus = np.log(np.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = np.log(np.maximum(1.0 - cdf_min, 1e-12))
    cdf_delta = cdf_plus - cdf_min
    return np.where(x < -0.999, log_cdf_plus,
                    np.where(x > 0.999, log_one_minus_cdf_min,
                             np.log(np.maximum(cdf_delta, 1e-12))))


class Diffusion:
    def __init__(self, betas):
        self.betas = betas
        self.T = len(betas)
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        acp = np.append(1.0, ac[:-1])
        self.ac = ac
        self.sqrt_ac = np.sqrt(ac)
        self.sqrt_1mac = np.sqrt(1.0 - ac)
        self.log_1mac = np.log(1.0 - ac)
        self.sqrt_recip_ac = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_ac = np.sqrt(1.0 / ac - 1)
        self.post_var = betas * (1.0 - acp) / (1.0 - ac)
        self.post_logvar_clipped = np.log(np.append(self.post_var[1], self.post_var[1:]))
        self.coef1 = betas * np.sqrt(acp) / (1.0 - ac)
        self.coef2 = (1.0 - acp) * np.sqrt(alphas) / (1.0 - ac)

    def model_logvar(self, kind):
        if kind == 0:  # 'fixedlarge'
            return np.log(np.append(self.post_var[1], self.betas[1:]))
        return self.post_logvar_clipped  # 'fixedsmall'

    def learned_logvar(self, t, v):
        """improved-diffusion's LEARNED_RANGE: frac = (v + 1) / 2 between
        log(beta_t) and posterior_log_variance_clipped[t]."""
        frac = (v + 1) / 2
        return frac * np.log(self.betas[t]) + (1 - frac) * self.post_logvar_clipped[t]

    def vb_term(self, x0, xt, eps, t, kind, clip, v=None):
        """_vb_terms_bpd for one image at index t, in bits/dim, and the x0 MSE; v: the
        output of a learned-variance model (then kind is unused)."""
        true_mean = self.coef1[t] * x0 + self.coef2[t] * xt
        true_logvar = self.post_logvar_clipped[t]
        pred = self.sqrt_recip_ac[t] * xt - self.sqrt_recipm1_ac[t] * eps
        if clip:
            pred = np.clip(pred, -1.0, 1.0)
        model_mean = self.coef1[t] * pred + self.coef2[t] * xt
        model_logvar = self.model_logvar(kind)[t] if v is None else self.learned_logvar(t, v)
        kl = np.mean(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / np.log(2.0)
        nll = -np.mean(discretized_gaussian_log_likelihood(
            x0, model_mean, 0.5 * model_logvar * np.ones_like(x0))) / np.log(2.0)
        return (nll if t == 0 else kl), float(np.mean((pred - x0) ** 2))

    def prior(self, x0):
        t = self.T - 1
        return np.mean(normal_kl(self.sqrt_ac[t] * x0, self.log_1mac[t], 0.0, 0.0)) / np.log(2.0)


def doubles(d, name):
    return d[name].astype(np.float64) + d[name + ".lo"].astype(np.float64)


def main():
    path, beta_start, beta_end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    perturb = "--perturb" in sys.argv
    d = tensor_file.read(path)
    T, _, _, kind, clip, stride = [int(round(v)) for v in d["meta/diffusion"]]
    diff = Diffusion(np.linspace(beta_start, beta_end, T, dtype=np.float64))
    x0 = d["x0"].astype(np.float64)
    N = x0.shape[0]
    D = x0[0].size
    noise = d["noise"].astype(np.float64)
    eps_c = d["eps"].astype(np.float64)
    terms_c, mse_c = doubles(d, "terms"), doubles(d, "mse")
    prior_c, total_c = doubles(d, "prior"), doubles(d, "total")
    if perturb:
        terms_c[0, 5] *= 1 + 1e-6
    model = ddpm_torch.from_meta(d["meta/model"]).double().eval()
    learned = model.conv_out.out_channels == 2 * x0.shape[1]
    sigma = "learned" if learned else "beta" if kind == 0 else "beta-tilde"
    # a class-conditional model: each image's terms are conditioned on its label
    labels = d["labels"].astype(np.int64) if "labels" in d else None
    label = f"T {T}, sigma^2 {sigma}, clip {clip}" + (
        f", {model.num_classes} classes, labels {labels.tolist()}" if labels is not None else "")

    torch.set_num_threads(2)
    sd = model.state_dict()
    with torch.no_grad():
        for k in sd:
            sd[k].copy_(torch.from_numpy(d["param/" + k].astype(np.float64)).reshape(sd[k].shape))

    t_all = np.arange(T)
    worst_eps = 0.0
    terms_py = np.zeros((N, T))
    terms_from_c = np.zeros((N, T))
    mse_from_c = np.zeros((N, T))
    prior_py = np.zeros(N)
    for n in range(N):
        a = x0[n].reshape(-1)
        # x_t as the C side computes it: double arithmetic, rounded to float32 once
        xt = (diff.sqrt_ac[:, None] * a[None, :] + diff.sqrt_1mac[:, None] * noise[n]).astype(
            np.float32).astype(np.float64)
        with torch.no_grad():
            y = None if labels is None else torch.full((T,), int(labels[n]), dtype=torch.int64)
            eps_ref = model(torch.from_numpy(xt.reshape((T,) + x0.shape[1:])),
                            torch.from_numpy(t_all), y).numpy().reshape(T, -1)
        worst_eps = max(worst_eps, rel(eps_c[n], eps_ref))
        # a learned-variance model's output per image: eps (D values), then v
        v_ref, v_c = (eps_ref[:, D:], eps_c[n][:, D:]) if learned else ([None] * T, [None] * T)
        for t in range(T):
            terms_py[n, t], _ = diff.vb_term(a, xt[t], eps_ref[t, :D], t, kind, clip, v_ref[t])
            terms_from_c[n, t], mse_from_c[n, t] = diff.vb_term(a, xt[t], eps_c[n, t, :D], t, kind,
                                                                 clip, v_c[t])
        prior_py[n] = diff.prior(a)

    report(worst_eps <= 1e-4, f"{label}: C U-Net eps on all {N}x{T} x_t vs PyTorch float64: "
           f"rel err {worst_eps:.2e} (<= 1e-4)")
    e_terms = float(np.max(np.abs(terms_c - terms_from_c) / np.abs(terms_from_c)))
    report(e_terms <= 1e-9, f"{label}: every term L_0..L_{T-1} from the C eps: max rel err "
           f"{e_terms:.2e} (<= 1e-9); decoder {terms_from_c[:, 0].mean():.4f}, "
           f"L_1 {terms_from_c[:, 1].mean():.4f}, L_{T-1} {terms_from_c[:, -1].mean():.4g} bits/dim")
    e_mse = float(np.max(np.abs(mse_c - mse_from_c) / np.abs(mse_from_c)))
    report(e_mse <= 1e-9, f"{label}: x0-prediction MSE per term: max rel err {e_mse:.2e} (<= 1e-9)")
    e_prior = rel(prior_c, prior_py)
    report(e_prior <= 1e-9, f"{label}: prior term: rel err {e_prior:.2e} (<= 1e-9), "
           f"{prior_py.mean():.6f} bits/dim")
    total_from_c = terms_from_c.sum(1) + prior_py
    e_total = rel(total_c, total_from_c)
    report(e_total <= 1e-9, f"{label}: total = sum of terms + prior: rel err {e_total:.2e} (<= 1e-9)")
    total_py = terms_py.sum(1) + prior_py
    e_e2e = rel(total_c, total_py)
    report(e_e2e <= 1e-4, f"{label}: total end to end vs PyTorch eps: {total_c.mean():.6f} vs "
           f"{total_py.mean():.6f} bits/dim, rel err {e_e2e:.2e} (<= 1e-4)")

    # strided estimates
    grid = sorted(set(list(range(1, T - 1, stride)) + [T - 1]))
    ev_tr = d["evaluated_trapezoid"]
    want = np.zeros((N, T))
    want[:, 0] = 1
    want[:, grid] = 1
    report(np.array_equal(ev_tr, want), f"{label}: trapezoid stride {stride} evaluates t = 0 and "
           f"the grid {grid[:3]}...{grid[-1]}")
    est_tr = np.array([prior_py[n] + terms_from_c[n, 0] + sum(
        np.interp(t, grid, terms_from_c[n, grid]) for t in range(1, T)) for n in range(N)])
    e_tr = rel(doubles(d, "total_trapezoid"), est_tr)
    report(e_tr <= 1e-6, f"{label}: trapezoid total (numpy.interp summed over t = 1..T-1): rel err "
           f"{e_tr:.2e} (<= 1e-6); {est_tr.mean():.6f} vs exact {total_from_c.mean():.6f}")
    ev_un = d["evaluated_unbiased"]
    ok_sets, est_un = True, np.zeros(N)
    for n in range(N):
        sel = [t for t in range(1, T) if ev_un[n, t] > 0]
        r = sel[0] - 1 if sel else -1
        ok_sets &= ev_un[n, 0] == 1 and 0 <= r < stride and sel == list(range(1 + r, T, stride))
        est_un[n] = prior_py[n] + terms_from_c[n, 0] + stride * terms_from_c[n, sel].sum()
    report(ok_sets, f"{label}: unbiased stride {stride} evaluates t = 0 and 1 + r + j*{stride}, "
           f"r in 0..{stride - 1}")
    e_un = rel(doubles(d, "total_unbiased"), est_un)
    report(e_un <= 1e-6, f"{label}: unbiased total ({stride} x the sampled terms): rel err "
           f"{e_un:.2e} (<= 1e-6)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
