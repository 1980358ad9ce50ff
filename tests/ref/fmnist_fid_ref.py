"""bench/fmnist_fid.py (the Fashion-MNIST feature network's FID) against independent
float64 formulas, and its training and `fid` code paths on a tiny subset.

usage: fmnist_fid_ref.py TMPDIR
  - stats: mu and the N - 1 covariance against an explicit sum of outer products,
    1e-12 relative;
  - FID on synthetic full-rank features (d 16 and 64, different covariances) against
    pytorch-fid's formula (scipy.linalg.sqrtm of S1 S2) and against numpy's
    eigenvalues of the non-symmetric S1 S2, 1e-9 relative; against the closed form
    |mu1 - mu2|^2 + sum (sqrt a_i - sqrt b_i)^2 for diagonal covariances, 1e-12;
    FID of a rank-deficient set (n < d) with itself within 1e-9 tr(S); a feature
    moved by 1e-3 must break the 1e-9 agreement (the comparison can fail);
  - `train` on the first 1,024 training images (2 epochs, seed 3, one thread) twice:
    bit-identical weights, the stated test accuracy recomputed from the saved
    weights, above chance; --min-acc above it refuses and writes nothing;
  - `fid` from the command line on .npz files as ddpm-sample writes them (uint8
    NHWC arr_0, stored and compressed), once as a program: equal to the in-process value, a set against
    itself 0, and bad arrays refused with the file named."""
import contextlib
import io
import os
import subprocess
import sys

import numpy as np
from scipy import linalg

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "bench", "fmnist_fid.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
import fmnist_fid as ff  # noqa: E402

failures = 0


def report(ok, msg):
    global failures
    print(("ok - " if ok else "not ok - ") + msg, flush=True)
    failures += not ok


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def fid_scipy(mu1, s1, mu2, s2):
    """pytorch-fid's calculate_frechet_distance."""
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    d = mu1 - mu2
    return d.dot(d) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def fid_eig(mu1, s1, mu2, s2):
    """tr sqrt(S1 S2) as the sum of square roots of the eigenvalues of the
    non-symmetric product (real and non-negative for PSD S1, S2)."""
    lam = np.linalg.eigvals(s1 @ s2).real
    d = mu1 - mu2
    return d.dot(d) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(lam, 0, None)).sum()


def features(rng, n, d, scale):
    a = rng.normal(size=(d, d)) * scale / np.sqrt(d)
    return rng.normal(size=(n, d)) @ a + rng.normal(size=d)


def check_math():
    rng = np.random.default_rng(7)
    x = features(rng, 50, 8, 1.0)
    mu, s = ff.stats(x)
    mu_ref = x.sum(0) / len(x)
    s_ref = sum(np.outer(r - mu_ref, r - mu_ref) for r in x) / (len(x) - 1)
    report(np.abs(mu - mu_ref).max() <= 1e-12 * np.abs(mu_ref).max()
           and np.abs(s - s_ref).max() <= 1e-12 * np.abs(s_ref).max(),
           "stats: mu and the N - 1 covariance match an explicit sum, 1e-12")
    for d, n1, n2 in [(16, 300, 200), (64, 400, 500)]:
        a, b = features(rng, n1, d, 1.0), features(rng, n2, d, 1.7)
        st_a, st_b = ff.stats(a), ff.stats(b)
        got = ff.fid_from_features(a, b)
        r1, r2 = fid_scipy(*st_a, *st_b), fid_eig(*st_a, *st_b)
        report(rel(got, r1) <= 1e-9 and rel(got, r2) <= 1e-9,
               f"d {d}: FID {got:.9f} = scipy sqrtm {r1:.9f} = eigvals(S1 S2) {r2:.9f}, 1e-9")
        b2 = b.copy()
        b2[0, 0] += 1e-3
        moved = ff.fid_from_features(a, b2)
        report(rel(moved, r1) > 1e-9,
               f"d {d}: a feature moved by 1e-3 changes the FID beyond 1e-9 "
               f"({rel(moved, r1):.1e}): the comparison can fail")
    va, vb = rng.uniform(0.1, 3, 32), rng.uniform(0.1, 3, 32)
    m1, m2 = rng.normal(size=32), rng.normal(size=32)
    got = ff.fid_from_stats(m1, np.diag(va), m2, np.diag(vb))
    closed = ((m1 - m2) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    report(rel(got, closed) <= 1e-12,
           f"diagonal covariances: FID {got:.12f} = closed form {closed:.12f}, 1e-12")
    low = features(rng, 20, 64, 1.0)  # n < d: a singular covariance
    self_fid = ff.fid_from_features(low, low)
    tr = np.trace(ff.stats(low)[1])
    report(abs(self_fid) <= 1e-9 * tr,
           f"rank-deficient set (n 20 < d 64) against itself: {self_fid:.2e} (tr S {tr:.1f})")


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run(args):
    """fmnist_fid.py's main in this process (one torch import for the whole test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = ff.main(args)
    return Result(rc, out.getvalue(), err.getvalue())


def run_cli(args):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True)


def check_train(tmp):
    import torch
    outs = [os.path.join(tmp, f"tiny{i}.pt") for i in range(2)]
    common = ["--limit", "1024", "--test-limit", "500", "--epochs", "2", "--seed", "3",
              "--threads", "1", "--min-acc", "0"]
    runs = [run(["train", "--out", o] + common) for o in outs]
    if any(r.returncode != 0 for r in runs):
        report(False, "train on 1,024 images: " + " | ".join(r.stderr[-300:] for r in runs))
        return None
    c0, c1 = torch.load(outs[0]), torch.load(outs[1])
    same = all(torch.equal(c0["state_dict"][k], c1["state_dict"][k]) for k in c0["state_dict"])
    report(same and c0["meta"] == {**c1["meta"], "train_seconds": c0["meta"]["train_seconds"]},
           "train twice with seed 3: bit-identical weights and metadata")
    xte, yte = ff.fmnist("t10k")
    net = ff.Features(outs[0], threads=1)
    _, pred = net(xte[:500])
    acc = float((pred == yte[:500]).mean())
    stated = c0["meta"]["test_accuracy"]
    report(acc == stated and acc > 0.3,
           f"tiny network: stated test accuracy {stated:.3f} = recomputed {acc:.3f} (> 0.3; "
           "chance 0.1)")
    bad = os.path.join(tmp, "refused.pt")
    r = run(["train", "--out", bad] + common[:-1] + ["0.99"])
    report(r.returncode != 0 and not os.path.exists(bad) and "below --min-acc" in r.stderr,
           "train below --min-acc exits non-zero and writes nothing")
    return outs[0], net


def fid_value(r):
    if r.returncode != 0 or not r.stdout.startswith("fid "):
        return None
    return float(r.stdout.split()[1])


def check_cli(tmp, weights, net):
    xte = ff.fmnist("t10k")[0]
    a, b = os.path.join(tmp, "a.npz"), os.path.join(tmp, "b.npz")
    np.savez(a, arr_0=xte[:300, :, :, None])             # ddpm-sample's layout, stored
    np.savez_compressed(b, arr_0=xte[5000:5200, :, :, None])
    got = fid_value(run_cli(["fid", a, "--ref", b, "--weights", weights]))
    want = ff.fid_from_features(net(xte[:300])[0], net(xte[5000:5200])[0])
    report(got is not None and abs(got - want) <= 6e-7 * max(1, abs(want)),
           f"command line: fid A.npz --ref B.npz = {got} = in-process {want:.7f}")
    same = fid_value(run(["fid", a, "--ref", a, "--weights", weights]))
    report(same is not None and abs(same) < 1e-4, f"fid A.npz --ref A.npz: {same}")
    for name, arr, msg in [("float.npz", xte[:4, :, :, None].astype(np.float32), "uint8"),
                           ("rgb.npz", np.repeat(xte[:4, :, :, None], 3, 3), "[N][28][28][1]"),
                           ("one.npz", xte[:1, :, :, None], "at least 2")]:
        p = os.path.join(tmp, name)
        np.savez(p, arr_0=arr)
        r = run(["fid", p, "--ref", b, "--weights", weights])
        report(r.returncode != 0 and name in r.stderr and msg in r.stderr,
               f"fid refuses {name}: {r.stderr.strip().splitlines()[-1] if r.stderr else ''}")


def main():
    tmp = sys.argv[1]
    os.makedirs(tmp, exist_ok=True)
    check_math()
    got = check_train(tmp)
    if got:
        check_cli(tmp, *got)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
