"""Independent float64 reference for the DPM-Solver++(2M) sampler (numpy only).

Usage: /usr/bin/python3 tests/ref/solver_ref.py SOLVER_DUMP SCRATCH_DIR [LABEL]

Written from Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", Algorithm 2 (DPM-Solver++(2M)), on the discrete
schedule (alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t),
lambda_t = log(alpha_t / sigma_t) at integer indices), with the rules
docs/diffusion.md states: n evaluations at n indices from T-1 down, then the clean
data (alpha 1, sigma 0); first step and last step (into the clean data) first
order; time-uniform indices round(linspace(T-1, 0, n)), logSNR-uniform the index
nearest to each of linspace(lambda_{T-1}, lambda_0, n), made strictly decreasing.

tests/tools/solver_dump runs the C sampler with a closed-form epsilon (the same
formula is below) and writes each state the sampler evaluated and its output;
this script solves the same ODE from the same x_T in float64 and compares the
whole trajectory, the indices, and the number of evaluations. The C sampler keeps
x and x0 in float32 between steps (each update is computed in double and rounded
once), so the trajectories agree to float32 rounding accumulated over the steps:
the tolerance is 5e-6 of max(1, max|x|) per state. The worst measured is 1.9e-6
(cosine, time spacing): epsilon reaches the solver rounded to float32, as the
network's output does, and x0 = (x - sigma eps) / alpha multiplies that rounding
by sigma/alpha, up to 1/sqrt(abar_{T-1}) at the noisiest index (158 for the
linear schedule, far more for the cosine one); the linear runs of 10 steps or
more stay below 6e-7, those of 1 and 2 steps (whose output is x0 predicted at
the noisiest index) below 1.5e-6.
It also checks DDIM through the same sampler loop, that image i does not depend
on the batch size (bit-identical), that a respacing list is refused for the
solver, and that its comparator rejects a first-order trajectory, a wrong step
ratio and the other spacing's indices.
"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusion_ref import base_betas, space_timesteps  # noqa: E402  (independent numpy tables)

DIM = 16
DEFAULT_STEPS, DEFAULT_SPACING = 20, "logsnr"  # docs/diffusion.md: measured the better
TOL = 5e-6
failures = 0
LABEL = ""


def report(ok, msg):
    global failures
    print(("ok - " if ok else "not ok - ") + LABEL + msg, flush=True)
    if not ok:
        failures += 1


def alphas_cumprod(schedule, T):
    return np.cumprod(1.0 - base_betas(schedule, T))


def closed_form_eps(x, t, ac):
    """The exact epsilon of data N(m, 0.25 I), m_j = 0.5 sin(j + 1), plus a
    nonlinear term; x is [N][16]."""
    T = len(ac)
    a, s = np.sqrt(ac[t]), np.sqrt(1.0 - ac[t])
    m = 0.5 * np.sin(np.arange(DIM) + 1.0)
    return s * (x - a * m) / (0.25 * a * a + s * s) + 0.05 * np.sin(3.0 * x) * (t + 1.0) / T


def lam(ac_t):
    return np.log(np.sqrt(ac_t) / np.sqrt(1.0 - ac_t))


def solver_timesteps(ac, n, spacing):
    T = len(ac)
    if spacing == "time":
        t = np.round(np.linspace(T - 1, 0, n)).astype(int)
    else:
        lams = lam(ac)
        targets = np.linspace(lams[T - 1], lams[0], n)
        t = np.array([int(np.argmin(np.abs(lams - v))) for v in targets])
    t = list(t)
    for i in range(1, n):          # strictly decreasing ...
        t[i] = min(t[i], t[i - 1] - 1)
    t[n - 1] = max(t[n - 1], 0)    # ... and not below 0
    for i in range(n - 2, -1, -1):
        t[i] = max(t[i], t[i + 1] + 1)
    return np.array(t)


def dpm_solver_2m(ac, ts, xT, clip, first_order=False, wrong_r=False, z=None):
    """Algorithm 2 of the paper; returns the states evaluated and the output.
    With z ([n-1] noise arrays): SDE-DPM-Solver++(2M) (the paper's section 5;
    diffusers' "sde-dpmsolver++", midpoint), the same time points and D, each step
    the exact solution of the SDE's linear part with D held, plus its noise:
        x' = sigma'/sigma e^{-h} x + alpha' (1 - e^{-2h}) D + sigma' sqrt(1 - e^{-2h}) z_i;
    the last step (into the clean data) is x0, without noise."""
    n = len(ts)
    alpha = np.append(np.sqrt(ac[ts]), 1.0)
    sigma = np.append(np.sqrt(1.0 - ac[ts]), 0.0)
    lamb = np.append(lam(ac[ts]), np.inf)
    x, prev, traj = xT.astype(np.float64), None, []
    for i in range(n):
        traj.append(x)
        x0 = (x - sigma[i] * closed_form_eps(x, ts[i], ac)) / alpha[i]
        if clip:
            x0 = np.clip(x0, -1.0, 1.0)
        if i == n - 1:            # lambda = +inf: e^{-h} = 0, sigma ratio 0, alpha 1
            x = x0
        else:
            h = lamb[i + 1] - lamb[i]
            if i == 0 or first_order:
                D = x0
            else:
                r = (lamb[i] - lamb[i - 1]) / h
                if wrong_r:
                    r = 1.0 / r
                D = (1.0 + 1.0 / (2.0 * r)) * x0 - 1.0 / (2.0 * r) * prev
            if z is None:
                x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * (np.exp(-h) - 1.0) * D
            else:
                x = (sigma[i + 1] / sigma[i] * np.exp(-h) * x
                     + alpha[i + 1] * (1.0 - np.exp(-2.0 * h)) * D
                     + sigma[i + 1] * np.sqrt(1.0 - np.exp(-2.0 * h)) * z[i])
        prev = x0
    return np.array(traj), x


def ddim(ac, kept, xT):
    """DDIM (eta 0, no clipping) over the kept indices, descending."""
    x, traj = xT.astype(np.float64), []
    ks = sorted(kept, reverse=True)
    for j, t in enumerate(ks):
        traj.append(x)
        e = closed_form_eps(x, t, ac)
        x0 = (x - np.sqrt(1.0 - ac[t]) * e) / np.sqrt(ac[t])
        ap = ac[ks[j + 1]] if j + 1 < len(ks) else 1.0
        x = np.sqrt(ap) * x0 + np.sqrt(1.0 - ap) * e
    return np.array(traj), x


def run_tool(tool, out, sampler, spacing, schedule, T, steps, N, batch, clip, seed=7):
    os.makedirs(out, exist_ok=True)
    p = subprocess.run([tool, sampler, spacing, schedule, str(T), steps, str(N), str(batch),
                        str(clip), str(seed), out], capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip()
    rd = lambda name, dt: np.fromfile(os.path.join(out, name), dtype=dt)
    t = rd("t.i32", "<i4")
    K = len(t)
    r = {"t": t, "calls": rd("calls.i32", "<i4"),
         "traj": rd("traj.f32", "<f4").reshape(K, N, DIM).astype(np.float64),
         "final": rd("final.f32", "<f4").reshape(N, DIM).astype(np.float64)}
    if sampler == "sde-dpm-solver++" and K > 1:
        r["z"] = rd("z.f32", "<f4").reshape(K - 1, N, DIM).astype(np.float64)
    return r, ""


def traj_err(c_traj, c_final, r_traj, r_final):
    """Worst over the states of max |c - ref| / max(1, max |ref|)."""
    errs = [np.abs(c - r).max() / max(1.0, np.abs(r).max()) for c, r in zip(c_traj, r_traj)]
    errs.append(np.abs(c_final - r_final).max() / max(1.0, np.abs(r_final).max()))
    return max(errs)


def check_solver(tool, scratch, schedule, T, n, spacing, clip=0, default=False,
                 self_test=False):
    name = f"dpm-solver++ {schedule} T={T} {n} steps {spacing}{' clip' if clip else ''}"
    if default:
        name = f"dpm-solver++ {schedule} T={T} default steps and spacing ({n}, {spacing})"
    ac = alphas_cumprod(schedule, T)
    N = 4
    c, err = run_tool(tool, os.path.join(scratch, name.replace(" ", "_")), "dpm-solver++",
                      "-" if default else spacing, schedule, T, "-" if default else str(n),
                      N, 3, clip)
    if c is None:
        report(False, f"{name}: solver_dump failed: {err}")
        return
    ts = solver_timesteps(ac, n, spacing)
    report(len(c["t"]) == n and (c["calls"] == n).all() and np.array_equal(c["t"], ts),
           f"{name}: {n} network evaluations per batch at the reference's indices "
           f"({', '.join(map(str, ts[:6]))}{', ...' if n > 6 else ''})")
    rt, rf = dpm_solver_2m(ac, ts, c["traj"][0], clip)
    e = traj_err(c["traj"], c["final"], rt, rf)
    report(e <= TOL, f"{name}: trajectory and output match float64 Algorithm 2 "
           f"(worst {e:.2e} <= {TOL:g} of max(1, |x|))")
    if self_test:
        for what, kw in (("first-order steps", {"first_order": True}),
                         ("step ratio inverted", {"wrong_r": True})):
            bt, bf = dpm_solver_2m(ac, ts, c["traj"][0], clip, **kw)
            eb = traj_err(c["traj"], c["final"], bt, bf)
            report(eb > 100 * TOL, f"{name}: comparator rejects a reference with {what} "
                   f"(differs by {eb:.2e})")
        other = solver_timesteps(ac, n, "time" if spacing == "logsnr" else "logsnr")
        report(not np.array_equal(c["t"], other),
               f"{name}: the other spacing's indices differ ({', '.join(map(str, other[:6]))}, ...)")


def check_sde(tool, scratch, n, spacing, clip, self_test=False):
    name = f"sde-dpm-solver++ linear T=1000 {n} steps {spacing}{' clip' if clip else ''}"
    ac = alphas_cumprod("linear", 1000)
    N = 4
    c, err = run_tool(tool, os.path.join(scratch, name.replace(" ", "_")), "sde-dpm-solver++",
                      spacing, "linear", 1000, str(n), N, 3, clip)
    if c is None:
        report(False, f"{name}: solver_dump failed: {err}")
        return
    ts = solver_timesteps(ac, n, spacing)
    report(len(c["t"]) == n and (c["calls"] == n).all() and np.array_equal(c["t"], ts),
           f"{name}: {n} network evaluations per batch at the ODE solver's indices")
    z = c["z"]
    zm, zs = z.mean(), z.std()
    report(abs(zm) < 0.1 and abs(zs - 1.0) < 0.1,
           f"{name}: the keyed noise is standard normal ({z.size} values: mean {zm:.3f}, "
           f"sd {zs:.3f}; 0 +- 0.1, 1 +- 0.1)")
    rt, rf = dpm_solver_2m(ac, ts, c["traj"][0], clip, z=z)
    e = traj_err(c["traj"], c["final"], rt, rf)
    report(e <= TOL, f"{name}: trajectory and output match the float64 SDE step with that "
           f"noise (worst {e:.2e} <= {TOL:g} of max(1, |x|))")
    if self_test:
        for what, ref in (("no noise (the ODE solver)", dpm_solver_2m(ac, ts, c["traj"][0], clip)),
                          ("the noise of another step", dpm_solver_2m(
                              ac, ts, c["traj"][0], clip, z=np.roll(z, 1, axis=0))),
                          ("first-order steps", dpm_solver_2m(
                              ac, ts, c["traj"][0], clip, first_order=True, z=z))):
            eb = traj_err(c["traj"], c["final"], *ref)
            report(eb > 100 * TOL, f"{name}: comparator rejects a reference with {what} "
                   f"(differs by {eb:.2e})")


def check_ddim(tool, scratch):
    name = "ddim linear T=1000 ddim10"
    ac = alphas_cumprod("linear", 1000)
    c, err = run_tool(tool, os.path.join(scratch, "ddim"), "ddim", "time", "linear", 1000,
                      "ddim10", 4, 4, 0)
    if c is None:
        report(False, f"{name}: solver_dump failed: {err}")
        return
    kept = space_timesteps(1000, "ddim10")
    rt, rf = ddim(ac, kept, c["traj"][0])
    e = traj_err(c["traj"], c["final"], rt, rf)
    report(len(c["t"]) == 10 and e <= TOL,
           f"{name} through the same sampler loop: trajectory matches float64 DDIM "
           f"(worst {e:.2e})")


def check_batch_independence(tool, scratch, kind="dpm-solver++"):
    runs = []
    for b in (1, 4):
        c, err = run_tool(tool, os.path.join(scratch, f"{kind}batch{b}"), kind, "logsnr",
                          "linear", 1000, "10", 5, b, 0)
        if c is None:
            report(False, f"batch {b}: solver_dump failed: {err}")
            return
        runs.append(c)
    a, b = runs
    same = np.array_equal(a["final"], b["final"]) and np.array_equal(a["traj"], b["traj"])
    report(same and (a["calls"] == 10).all() and (b["calls"] == 10).all(),
           f"{kind}: 5 images drawn in batches of 1 and of 4 are bit-identical "
           f"(x_T{' and each step' + chr(39) + 's noise' if kind.startswith('sde') else ''} "
           f"keyed on (seed, i))")


def check_refusals(tool, scratch):
    for steps, want in (("10,15,20", "respacing lists"), ("ddim10", "respacing lists"),
                        ("0", "1..1000"), ("1001", "1..1000")):
        c, err = run_tool(tool, os.path.join(scratch, "refuse"), "dpm-solver++", "time",
                          "linear", 1000, steps, 1, 1, 0)
        report(c is None and want in err,
               f"dpm-solver++ refuses --steps {steps} with a message ({err[:90]!r})")


def main():
    global LABEL
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    tool, scratch = sys.argv[1], sys.argv[2]
    LABEL = (sys.argv[3] + ": ") if len(sys.argv) > 3 else ""
    for sp in ("time", "logsnr"):
        for n in (10, 20):
            check_solver(tool, scratch, "linear", 1000, n, sp, self_test=(n == 10))
    check_solver(tool, scratch, "linear", 1000, DEFAULT_STEPS, DEFAULT_SPACING, default=True)
    check_solver(tool, scratch, "linear", 1000, 10, "logsnr", clip=1)
    check_solver(tool, scratch, "cosine", 1000, 15, "logsnr")
    check_solver(tool, scratch, "cosine", 1000, 15, "time")
    check_solver(tool, scratch, "linear", 1000, 200, "logsnr")  # nearest indices repeat
    check_solver(tool, scratch, "linear", 50, 50, "time")       # every index
    check_solver(tool, scratch, "linear", 1000, 1, "time")
    check_solver(tool, scratch, "linear", 1000, 2, "logsnr")
    check_ddim(tool, scratch)
    check_batch_independence(tool, scratch)
    check_sde(tool, scratch, 10, "time", 0, self_test=True)
    check_sde(tool, scratch, 20, "logsnr", 1)
    check_batch_independence(tool, scratch, "sde-dpm-solver++")
    check_refusals(tool, scratch)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
