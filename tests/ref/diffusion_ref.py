"""Independent float64 reference for common/diffusion (numpy only).

Usage: /usr/bin/python3 tests/ref/diffusion_ref.py DUMP_TOOL SCRATCH_DIR [LABEL]

Recomputes, from the formulas of the authors' code (hojonathanho/diffusion
diffusion_utils_2.py) and improved-diffusion (cosine schedule, space_timesteps,
SpacedDiffusion, ddim_sample), every table and step result that
tests/tools/diffusion_dump writes, on inputs generated here, and compares:
tables (double) to 1e-12 relative per element, float outputs to 1e-6 relative
(per sample: max |c - ref| / max |ref|). Prints "ok - ..." / "not ok - ..." per
item and exits 1 on any failure.

The cosine schedule uses math.cos (the platform libm, as improved-diffusion does):
its smallest betas are differences of ratios near 1, so a cos that differs by one
ulp would move them by ~5e-12 relative.
"""
import math
import os
import subprocess
import sys

import numpy as np

TABLES = [
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "large_variance", "large_log_variance",
]

TABLE_RTOL = 1e-12
FLOAT_RTOL = 1e-6

failures = 0
LABEL = ""


def report(ok, msg):
    global failures
    print(("ok - " if ok else "not ok - ") + LABEL + msg, flush=True)
    if not ok:
        failures += 1


# ---------------------------------------------------------------- reference math

def base_betas(schedule, T):
    if schedule == "linear":
        return np.linspace(1e-4, 0.02, T, dtype=np.float64)
    if schedule == "cosine":
        def abar(s):
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)],
                        dtype=np.float64)
    raise ValueError(schedule)


def tables_from_betas(betas):
    alphas = 1.0 - betas
    ac = np.cumprod(alphas, axis=0)
    acp = np.append(1.0, ac[:-1])
    pv = betas * (1.0 - acp) / (1.0 - ac)
    large = np.append(pv[1], betas[1:])
    return {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": acp,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": pv,
        "posterior_log_variance_clipped": np.log(np.append(pv[1], pv[1:])),
        "posterior_mean_coef1": betas * np.sqrt(acp) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - acp) * np.sqrt(alphas) / (1.0 - ac),
        "large_variance": large,
        "large_log_variance": np.log(large),
    }


def space_timesteps(T, spec):
    """improved-diffusion's rule: 'ddimN' = first integer stride giving N steps,
    else comma-separated counts over equal sections (first T % k one longer)."""
    if spec.startswith("ddim"):
        want = int(spec[4:])
        for stride in range(1, T):
            steps = list(range(0, T, stride))
            if len(steps) == want:
                return steps
        raise ValueError("no stride")
    counts = [int(c) for c in spec.split(",")]
    size_per, extra = divmod(T, len(counts))
    kept, start = [], 0
    for i, c in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        assert size >= c
        stride = 1 if c <= 1 else (size - 1) / (c - 1)
        pos = 0.0
        for _ in range(c):
            kept.append(start + round(pos))  # Python rounds half to even
            pos += stride
        start += size
    return sorted(set(kept))


def build(schedule, T, spacing):
    betas = base_betas(schedule, T)
    if spacing == "none":
        return tables_from_betas(betas), list(range(T))
    ac = np.cumprod(1.0 - betas)
    kept = space_timesteps(T, spacing)
    new_betas, last = [], 1.0
    for i in kept:
        new_betas.append(1 - ac[i] / last)
        last = ac[i]
    return tables_from_betas(np.array(new_betas, dtype=np.float64)), kept


def col(table, t):
    return table[t][:, None]


def ref_ops(tb, inp):
    t, x0, eps, xt, ep, z = (inp[k] for k in ("t", "x0", "eps", "xt", "eps_pred", "z"))
    x0, eps, xt, ep, z = (a.astype(np.float64) for a in (x0, eps, xt, ep, z))
    out = {}
    out["q_sample"] = col(tb["sqrt_alphas_cumprod"], t) * x0 + \
        col(tb["sqrt_one_minus_alphas_cumprod"], t) * eps
    x0_pred = col(tb["sqrt_recip_alphas_cumprod"], t) * xt - \
        col(tb["sqrt_recipm1_alphas_cumprod"], t) * ep
    out["predict_x0"] = x0_pred
    c1, c2 = col(tb["posterior_mean_coef1"], t), col(tb["posterior_mean_coef2"], t)
    out["posterior_mean"] = c1 * x0 + c2 * xt
    x0c = np.clip(x0_pred, -1.0, 1.0)
    mean_c = c1 * x0c + c2 * xt
    mean_u = c1 * x0_pred + c2 * xt
    out["pmv_mean"] = mean_c
    out["pmv_x0"] = x0c
    out["pmv_mean_noclip"] = mean_u
    out["pmv_var"] = tb["large_variance"][t]
    out["pmv_logvar"] = tb["large_log_variance"][t]
    nonzero = (t > 0).astype(np.float64)[:, None]
    sd_large = np.exp(0.5 * col(tb["large_log_variance"], t))
    sd_small = np.exp(0.5 * col(tb["posterior_log_variance_clipped"], t))
    out["sample_beta"] = mean_c + nonzero * sd_large * z
    out["sample_beta_tilde"] = mean_c + nonzero * sd_small * z
    out["sample_beta_noclip"] = mean_u + nonzero * sd_large * z
    out["sample_inplace"] = out["sample_beta_tilde"]
    # DDIM (improved-diffusion ddim_sample): eps re-derived from the clipped x0.
    eps_c = (col(tb["sqrt_recip_alphas_cumprod"], t) * xt - x0c) / \
        col(tb["sqrt_recipm1_alphas_cumprod"], t)
    ab, abp = col(tb["alphas_cumprod"], t), col(tb["alphas_cumprod_prev"], t)
    for eta in (0.0, 1.0):
        sigma = eta * np.sqrt((1 - abp) / (1 - ab)) * np.sqrt(1 - ab / abp)
        mean_pred = x0c * np.sqrt(abp) + np.sqrt(np.maximum(1 - abp - sigma ** 2, 0.0)) * eps_c
        out["ddim_eta%d" % eta] = mean_pred + nonzero * sigma * z
    out["ddim_x0"] = x0c
    out["loss"] = np.mean((ep - eps) ** 2, axis=1)
    return out


# ---------------------------------------------------------------- comparators

def table_ok(got, want):
    """Per element |got - want| <= 1e-12 |want|; returns (ok, worst relative error)."""
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        return False, float("inf")
    err = np.abs(got - want)
    scale = np.abs(want)
    bad = err > TABLE_RTOL * scale
    worst = float(np.max(np.where(scale > 0, err / np.where(scale > 0, scale, 1), err)))
    return not bool(np.any(bad)), worst


def float_ok(got, want):
    """Per sample max |got - want| / max |want| <= 1e-6."""
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        return False, float("inf")
    worst = 0.0
    for g, w in zip(got.reshape(len(got), -1), want.reshape(len(want), -1)):
        scale = max(float(np.max(np.abs(w))), 1e-30)
        worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w))) / scale)
    return worst <= FLOAT_RTOL, worst


# ---------------------------------------------------------------- driver

def run_tool(tool, args):
    r = subprocess.run([tool] + args, capture_output=True, text=True)
    if r.returncode != 0:
        report(False, "%s %s failed (rc %d): %s" % (os.path.basename(tool), " ".join(args),
                                                     r.returncode, r.stderr.strip()))
        return False
    return True


def check_tables(tool, scratch, schedule, T, spacing):
    name = "%s T=%d spacing=%s" % (schedule, T, spacing)
    d = os.path.join(scratch, "tables_%s_%d_%s" % (schedule, T, spacing.replace(",", "_")))
    os.makedirs(d, exist_ok=True)
    if not run_tool(tool, ["tables", schedule, str(T), spacing, d]):
        return None
    ref, kept = build(schedule, T, spacing)
    n = len(kept)
    got = np.fromfile(os.path.join(d, "tables.f64"), dtype="<f8")
    gmap = np.fromfile(os.path.join(d, "map.i32"), dtype="<i4")
    report(gmap.tolist() == kept, "%s: timestep map (%d steps) equals space_timesteps" % (name, n))
    if got.size != len(TABLES) * n:
        report(False, "%s: tables.f64 has %d values, expected %d" % (name, got.size, len(TABLES) * n))
        return ref
    got = got.reshape(len(TABLES), n)
    worst_all, bad = 0.0, []
    for i, tname in enumerate(TABLES):
        ok, worst = table_ok(got[i], ref[tname])
        worst_all = max(worst_all, worst)
        if not ok:
            bad.append("%s (rel err %.3g)" % (tname, worst))
    report(not bad, "%s: %d tables within %g relative (worst %.3g)%s" % (
        name, len(TABLES), TABLE_RTOL, worst_all, ("; failing: " + ", ".join(bad)) if bad else ""))
    return ref


def make_inputs(rng, n_steps, N, D):
    t = [0, 1, n_steps - 1, n_steps // 2] + list(rng.integers(0, n_steps, N - 4))
    return {
        "t": np.array(t, dtype="<i4"),
        "x0": rng.uniform(-1, 1, (N, D)).astype("<f4"),
        "eps": rng.standard_normal((N, D)).astype("<f4"),
        # Wide enough that clipping to [-1, 1] is active for some samples, not all.
        "xt": (1.5 * rng.standard_normal((N, D))).astype("<f4"),
        "eps_pred": rng.standard_normal((N, D)).astype("<f4"),
        "z": rng.standard_normal((N, D)).astype("<f4"),
    }


def check_ops(tool, scratch, schedule, T, spacing, ref, seed):
    name = "%s T=%d spacing=%s" % (schedule, T, spacing)
    n_steps = len(ref["betas"])
    N, D = 8, 48
    rng = np.random.default_rng(seed)
    inp = make_inputs(rng, n_steps, N, D)
    ind = os.path.join(scratch, "in_%s_%d_%s" % (schedule, T, spacing.replace(",", "_")))
    outd = ind.replace("in_", "out_")
    os.makedirs(ind, exist_ok=True)
    os.makedirs(outd, exist_ok=True)
    for k, v in inp.items():
        v.tofile(os.path.join(ind, k + (".i32" if k == "t" else ".f32")))
    if not run_tool(tool, ["ops", schedule, str(T), spacing, str(N), str(D), ind, outd]):
        return
    want = ref_ops(ref, inp)
    for key, w in want.items():
        double = key in ("pmv_var", "pmv_logvar", "loss")
        path = os.path.join(outd, key + (".f64" if double else ".f32"))
        g = np.fromfile(path, dtype="<f8" if double else "<f4")
        if double:
            ok, worst = table_ok(g, w)
            tol = TABLE_RTOL
        else:
            ok, worst = float_ok(g.reshape(N, D), w)
            tol = FLOAT_RTOL
        report(ok, "%s: %s matches the float64 reference within %g (rel err %.3g)" % (
            name, key, tol, worst))
    q = np.fromfile(os.path.join(outd, "quartile.i32"), dtype="<i4")
    report(q.tolist() == (inp["t"] * 4 // n_steps).tolist(), "%s: t quartiles" % name)
    # The clip must have mattered somewhere, else the clipped checks prove little.
    x0p = want["predict_x0"]
    frac = float(np.mean(np.abs(x0p) > 1))
    report(0.05 < frac < 0.95, "%s: inputs exercise clipping (%.2f of x0 predictions clipped)" % (
        name, frac))


def self_check():
    """The comparators must reject small perturbations (else the test proves nothing)."""
    ref, _ = build("linear", 1000, "none")
    for tname in ("betas", "sqrt_recipm1_alphas_cumprod", "posterior_variance"):
        bad = ref[tname].copy()
        bad[7] *= 1 + 1e-11
        ok, worst = table_ok(bad, ref[tname])
        report(not ok, "self-check: %s perturbed by 1e-11 relative is rejected (rel err %.3g)" % (
            tname, worst))
    pv = ref["posterior_variance"].copy()
    pv[0] = 1e-300
    report(not table_ok(pv, ref["posterior_variance"])[0],
           "self-check: nonzero posterior_variance[0] is rejected")
    w = np.linspace(-2, 2, 2 * 50).reshape(2, 50)
    g = w.astype(np.float32)
    report(float_ok(g, w)[0], "self-check: float32 rounding of the reference passes")
    g2 = g.copy()
    g2[1, 3] += 5e-6
    report(not float_ok(g2, w)[0], "self-check: a float output off by 2.5e-6 relative is rejected")
    g3 = g.copy()
    g3[0, 0] = np.nan
    report(not float_ok(g3, w)[0], "self-check: NaN output is rejected")


def main():
    global LABEL
    if len(sys.argv) < 3:
        print("usage: diffusion_ref.py DUMP_TOOL SCRATCH_DIR [LABEL]", file=sys.stderr)
        return 2
    tool, scratch = sys.argv[1], sys.argv[2]
    LABEL = (sys.argv[3] + ": ") if len(sys.argv) > 3 else ""
    os.makedirs(scratch, exist_ok=True)
    self_check()
    configs = [
        ("linear", 1000, "none"), ("cosine", 1000, "none"),
        ("linear", 10, "none"), ("cosine", 10, "none"),
        ("linear", 1000, "100"), ("linear", 1000, "10"),
        ("cosine", 1000, "100"), ("cosine", 1000, "10"),
        ("linear", 1000, "ddim100"), ("linear", 1000, "ddim10"), ("cosine", 1000, "ddim50"),
        ("linear", 1000, "ddim7"), ("linear", 300, "10,15,20"), ("linear", 1000, "7,1,30"),
        ("linear", 10, "ddim5"),
    ]
    for seed, (schedule, T, spacing) in enumerate(configs):
        ref = check_tables(tool, scratch, schedule, T, spacing)
        if ref is not None:
            check_ops(tool, scratch, schedule, T, spacing, ref, seed)
    # Specs the tool must refuse with a message, not a crash.
    for spec in ("ddim999", "abc", "0", "2000", "100,", "1"):
        r = subprocess.run([tool, "tables", "linear", "1000", spec, scratch],
                           capture_output=True, text=True)
        report(r.returncode == 1 and spec in r.stderr,
               "respacing '%s' refused with a message naming it (rc %d: %s)" % (
                   spec, r.returncode, r.stderr.strip()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
