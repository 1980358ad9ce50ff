"""Reference checks for the C Inception-v3 (common/eval/inception.h) and the weight
converter (ops/convert_inception.py).

usage:
  inception_ref.py make SEED OUT.pth DIR
      random pytorch-fid-keyed state dict -> OUT.pth; test images -> DIR/rgb.npz
      (2 x 32x32x3, np.savez), DIR/grey.npz (1 x 28x28, np.savez_compressed),
      DIR/big.npz (1 x 320x300x3: downsampling)
  inception_ref.py check IN.pth FEATURES.tns IMAGES.npz LABEL
      runs tests/ref/inception_torch.py in float64 on the images with the same
      weights and compares pool3 and the logits with what `ddpm-eval features` wrote:
      max|C - ref| / max|ref| <= 1e-4 each
      and saves the PyTorch features to IMAGES.npz.ref.npz (pool3, logits)
  inception_ref.py program REF.npz STATS.npz FID_SELF IS_LINE FID_PYSTATS
      `ddpm-eval stats` output (np.load: float64 mu [2048], sigma [2048][2048]) against
      numpy's mean/cov of the PyTorch pool3 (rel err <= 1e-4, the feature bound);
      `ddpm-eval fid A A` ~ 0 (<= 1e-9 tr(sigma)); `ddpm-eval is` against the
      Salimans formula on the PyTorch logits (rel err <= 1e-4); `ddpm-eval fid A
      S.npz` with S pytorch-fid-style statistics of the PyTorch features
      (np.savez_compressed): ~0 (<= 1e-6 tr(sigma); the features differ by ~1e-7)
  inception_ref.py converter IN.pth DIR
      the converter's refusals: a missing key, an unexpected key, a wrong shape"""
import os
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import inception_torch  # noqa: E402
import tensor_file  # noqa: E402

TOL = 1e-4
CONVERTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "ops",
                         "convert_inception.py")


def report(ok, msg):
    print(("ok - " if ok else "not ok - ") + msg, flush=True)
    return ok


def make(seed, out_pth, d):
    sd = inception_torch.random_state_dict(seed)
    torch.save(sd, out_pth)
    rng = np.random.default_rng(seed)
    np.savez(os.path.join(d, "rgb.npz"), arr_0=rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    # a smooth grey image with both extremes (JPEG-like content, not only noise)
    yy, xx = np.mgrid[0:28, 0:28]
    g = (127.5 + 127.5 * np.sin(xx / 4.0) * np.cos(yy / 5.0)).round().astype(np.uint8)[None]
    np.savez_compressed(os.path.join(d, "grey.npz"), arr_0=g)
    np.savez(os.path.join(d, "big.npz"), arr_0=rng.integers(0, 256, (1, 320, 300, 3), dtype=np.uint8))
    keys = [k for k in sd if not k.endswith("num_batches_tracked")]
    print(f"# wrote {out_pth}: {len(sd)} keys ({len(keys)} without num_batches_tracked)")
    return 0


def check(pth, feats, images, label):
    torch.set_num_threads(2)
    model = inception_torch.FIDInceptionV3().double().eval()
    model.load_state_dict(torch.load(pth))  # strict: the names must be pytorch-fid's
    u8 = np.load(images)["arr_0"]
    if u8.ndim == 3:
        u8 = np.repeat(u8[..., None], 3, axis=3)  # PIL convert('RGB') of a grey image
    x = torch.from_numpy(u8.astype(np.float64) / 255.0).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        pool3, logits = model(x)
    np.savez(images + ".ref.npz", pool3=pool3.numpy(), logits=logits.numpy())
    if pool3.shape[0] >= 2:  # pytorch-fid's statistics file: savez_compressed, float64
        p = pool3.numpy()
        np.savez_compressed(images + ".refstats.npz", mu=p.mean(0), sigma=np.cov(p, rowvar=False))
    c = tensor_file.read(feats)
    ok = True
    for name, ref in (("pool3", pool3.numpy()), ("logits", logits.numpy())):
        got = c[name].astype(np.float64)
        if got.shape != ref.shape:
            ok &= report(False, f"{label}: {name} shape {got.shape}, expected {ref.shape}")
            continue
        err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        ok &= report(err <= TOL, f"{label}: {name} {ref.shape} vs PyTorch float64: rel err "
                     f"{err:.2e} (<= {TOL}); max|ref| {np.max(np.abs(ref)):.3g}, "
                     f"mean {ref.mean():.4g}")
    return 0 if ok else 1


def program(ref, stats, fid_self, is_line, fid_py):
    r = np.load(ref)
    pool3, logits = r["pool3"], r["logits"]
    st = np.load(stats)
    ok = True
    mu, sigma = pool3.mean(0), np.cov(pool3, rowvar=False)
    good = (st["mu"].dtype == np.float64 and st["mu"].shape == (2048,)
            and st["sigma"].shape == (2048, 2048))
    ok &= report(good, f"ddpm-eval stats writes float64 mu {st['mu'].shape} and sigma "
                 f"{st['sigma'].shape} that np.load reads")
    if good:
        e = max(float(np.max(np.abs(st["mu"] - mu)) / np.max(np.abs(mu))),
                float(np.max(np.abs(st["sigma"] - sigma)) / np.max(np.abs(sigma))))
        ok &= report(e <= TOL, f"stats mu/sigma vs numpy on the PyTorch features: rel err {e:.2e} "
                     f"(<= {TOL})")
    f = float(fid_self.split()[1])
    ok &= report(abs(f) <= 1e-9 * np.trace(sigma), f"ddpm-eval fid A A.stats = {f:.3g} "
                 f"(|.| <= 1e-9 tr(sigma) = {1e-9 * np.trace(sigma):.2g})")
    f = float(fid_py.split()[1]) if fid_py.startswith("FID ") else float("nan")
    ok &= report(abs(f) <= 1e-6 * np.trace(sigma), f"ddpm-eval fid A S.npz (statistics written by "
                 f"numpy, compressed) = {f:.3g} (|.| <= 1e-6 tr(sigma) = {1e-6 * np.trace(sigma):.2g})")
    n = logits.shape[0]
    x = logits - logits.max(1, keepdims=True)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    kl = p * (np.log(p) - np.log(p.mean(0, keepdims=True)))
    want = np.exp(np.mean(np.sum(kl, 1)))  # one split (the test has only a few images)
    got = float(is_line.split()[1])
    ok &= report(abs(got - want) / want <= TOL, f"ddpm-eval is ({n} images, 1 split) {got:.6f} vs "
                 f"{want:.6f} from PyTorch logits (rel err <= {TOL})")
    return 0 if ok else 1


def converter(pth, d):
    sd = torch.load(pth)
    ok = True
    cases = []
    s1 = dict(sd)
    del s1["Mixed_6c.branch7x7dbl_3.bn.running_var"]
    cases.append(("missing", s1, "Mixed_6c.branch7x7dbl_3.bn.running_var"))
    s2 = dict(sd)
    s2["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    cases.append(("unexpected", s2, "AuxLogits.fc.weight"))
    s3 = dict(sd)
    s3["Mixed_7b.branch3x3_2a.conv.weight"] = torch.zeros(384, 384, 3, 1)
    cases.append(("wrong shape", s3, "Mixed_7b.branch3x3_2a.conv.weight"))
    for what, s, key in cases:
        p = os.path.join(d, "bad.pth")
        torch.save(s, p)
        r = subprocess.run([sys.executable, CONVERTER, p, os.path.join(d, "bad.tns")],
                           capture_output=True, text=True)
        ok &= report(r.returncode == 1 and key in r.stderr,
                     f"converter refuses a state dict with a {what} key, naming {key}"
                     + ("" if r.returncode == 1 else f" (exit {r.returncode})"))
    return 0 if ok else 1


def main():
    cmd = sys.argv[1]
    if cmd == "make":
        return make(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    if cmd == "check":
        return check(*sys.argv[2:6])
    if cmd == "program":
        return program(*sys.argv[2:7])
    if cmd == "converter":
        return converter(sys.argv[2], sys.argv[3])
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main())
