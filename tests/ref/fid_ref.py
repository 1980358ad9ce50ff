"""FID and Inception Score math of common/eval/fid.h against numpy/scipy, computed as
pytorch-fid (np.mean, np.cov, scipy.linalg.sqrtm of sigma1 @ sigma2) and Salimans et
al.'s inception_score.py (softmax, 10 splits) compute them.

usage: fid_ref.py TOOL DIR [--perturb]
Generates features here (float32, full-rank covariances of different shapes),
runs TOOL (tests/tools/fid_dump) and compares:
  mu, sigma: max|C - ref| / max|ref| <= 1e-12
  FID(a, b): relative error <= 1e-9; FID(a, a): |FID| <= 1e-9 * tr(sigma_a)
  IS (10 and 3 splits), mean and std: relative error <= 1e-9
--perturb shifts one feature of b by 1e-3 after the C side ran: FID must then fail."""
import os
import subprocess
import sys

import numpy as np
from scipy import linalg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tensor_file  # noqa: E402

failures = 0


def report(ok, msg):
    global failures
    print(("ok - " if ok else "not ok - ") + msg, flush=True)
    failures += not ok


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def fid_pytorch_fid(mu1, s1, mu2, s2):
    """pytorch-fid's calculate_frechet_distance (eps offset only when not finite)."""
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def inception_score(logits, splits):
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    n = p.shape[0]
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return np.mean(scores), np.std(scores)


def run(tool, d, label, dim, n1, n2, n, k, seed, perturb):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    a = (rng.standard_normal((n1, dim)) @ mix + 0.3).astype(np.float32)
    mix2 = mix + 0.3 * rng.standard_normal((dim, dim)) / np.sqrt(dim)
    b = (1.3 * rng.standard_normal((n2, dim)) @ mix2 - 0.1).astype(np.float32)
    logits = (3 * rng.standard_normal((n, k))).astype(np.float32)
    src, out = os.path.join(d, f"{label}.in.tns"), os.path.join(d, f"{label}.out.tns")
    tensor_file.write(src, {"dims": np.array([dim, n1, n2, n, k], np.float32), "a": a, "b": b,
                            "logits": logits})
    r = subprocess.run([tool, src, out], capture_output=True, text=True)
    if r.returncode != 0:
        report(False, f"{label}: {tool} failed: {r.stderr.strip()}")
        return
    c = tensor_file.read(out)
    g = {k_[:-3]: c[k_[:-3]].astype(np.float64) + c[k_].astype(np.float64)
         for k_ in c if k_.endswith(".lo")}
    if perturb:
        b = b.copy()
        b[0, 0] += 1e-3
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    mu_a, s_a = a64.mean(0), np.cov(a64, rowvar=False)
    mu_b, s_b = b64.mean(0), np.cov(b64, rowvar=False)
    e = max(rel(g["mu_a"], mu_a), rel(g["mu_b"], mu_b))
    report(e <= 1e-12, f"{label}: means vs numpy: rel err {e:.2e} (<= 1e-12)")
    e = max(rel(g["sigma_a"], s_a), rel(g["sigma_b"], s_b))
    report(e <= 1e-12, f"{label}: covariances vs np.cov: rel err {e:.2e} (<= 1e-12)")
    ref = fid_pytorch_fid(mu_a, s_a, mu_b, s_b)
    e = abs(g["fid_ab"][0] - ref) / abs(ref)
    report(e <= 1e-9, f"{label}: FID(a, b) {g['fid_ab'][0]:.9f} vs scipy.linalg.sqrtm "
           f"{ref:.9f}: rel err {e:.2e} (<= 1e-9)")
    tr = np.trace(s_a)
    report(abs(g["fid_aa"][0]) <= 1e-9 * tr, f"{label}: FID(a, a) = {g['fid_aa'][0]:.2e} "
           f"(|.| <= 1e-9 tr(sigma_a) = {1e-9 * tr:.1e})")
    for splits in (10, 3):
        m, s = inception_score(logits, splits)
        got = g[f"is{splits}"]
        e = max(abs(got[0] - m) / m, abs(got[1] - s) / s)
        report(e <= 1e-9, f"{label}: IS {splits} splits {got[0]:.6f} +- {got[1]:.6f} vs "
               f"{m:.6f} +- {s:.6f}: rel err {e:.2e} (<= 1e-9)")


def main():
    tool, d = sys.argv[1], sys.argv[2]
    perturb = "--perturb" in sys.argv
    os.makedirs(d, exist_ok=True)
    run(tool, d, "d64", 64, 300, 250, 100, 1008, 1, perturb)
    run(tool, d, "d256", 256, 700, 600, 53, 20, 2, perturb)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
