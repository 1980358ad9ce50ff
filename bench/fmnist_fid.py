"""FID for Fashion-MNIST samples on the features of a small classifier trained here.

pytorch-fid's Inception weights cannot be downloaded on these machines, so the
quality table (docs/evaluation.md, "Fashion-MNIST FID") measures samples with a
network we can train and check ourselves: a small CNN classifier trained on the
Fashion-MNIST training set with Debian's PyTorch, seeded and deterministic, whose
128-d penultimate activations (after the ReLU, as Inception's pool3 is) stand in
for Inception's 2048-d pool3. Its FID numbers are comparable with each other, not
with published Inception FIDs.

usage (Debian's /usr/bin/python3):
  fmnist_fid.py train [--out build/fmnist_features.pt] [--epochs 4] [--seed 0]
                      [--limit N] [--test-limit N] [--min-acc 0.90] [--threads 1]
  fmnist_fid.py fid SAMPLES.npz [--ref test|train|OTHER.npz] [--weights PATH]
  fmnist_fid.py calibrate [--weights PATH]
  fmnist_fid.py write-real N OUT.npz     (the first N training images, as ddpm-sample writes them)

`fid` trains the network first if its cache file is missing. SAMPLES.npz holds uint8
images [N][28][28][1] (or [N][28][28]) under arr_0: ddpm-sample's --npz output.
It prints `fid VALUE` on its first line. Everything after the network is float64."""
import argparse
import functools
import gzip
import os
import sys
import time

import numpy as np

DATA_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build",
                               "fmnist_features.pt")
FEATURE_DIM = 128
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]


# ---------------------------------------------------------------- data


def read_idx(path):
    """An IDX file (gzip or not) as a numpy array, read independently of the C reader."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    if len(raw) != off + int(np.prod(dims)):
        raise ValueError(f"{path}: {len(raw) - off} data bytes, the header says {dims}")
    return np.frombuffer(raw, np.uint8, offset=off).reshape(dims)


@functools.lru_cache(maxsize=None)
def fmnist(split):
    """(images uint8 [N][28][28], labels int64 [N]) of 'train' or 't10k'."""
    x = read_idx(os.path.join(DATA_DIR, f"{split}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(DATA_DIR, f"{split}-labels-idx1-ubyte.gz")).astype(np.int64)
    return x, y


def load_samples(path):
    """uint8 [N][28][28] from an .npz of ddpm-sample (arr_0, NHWC, C = 1) or [N][H][W]."""
    with np.load(path) as z:
        if "arr_0" not in z.files:
            raise ValueError(f"{path}: no arr_0 array (has {z.files})")
        a = z["arr_0"]
    if a.dtype != np.uint8:
        raise ValueError(f"{path}: arr_0 is {a.dtype}, expected uint8")
    if a.ndim == 4 and a.shape[3] == 1:
        a = a[..., 0]
    if a.ndim != 3 or a.shape[1:] != (28, 28):
        raise ValueError(f"{path}: arr_0 has shape {a.shape}, expected [N][28][28][1]")
    if a.shape[0] < 2:
        raise ValueError(f"{path}: {a.shape[0]} image(s); FID needs at least 2")
    return a


# ---------------------------------------------------------------- FID (float64)


def stats(feats):
    """mu and the unbiased (N - 1) covariance, float64."""
    f = np.asarray(feats, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def fid_from_stats(mu1, s1, mu2, s2):
    """|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2), the trace of the square root
    as the sum of square roots of the eigenvalues of the symmetric sqrt(S1) S2 sqrt(S1)
    (the same eigenvalues as S1 S2); eigenvalues at rounding level count as 0, as in
    common/eval/fid.c (singular covariances: dead ReLU units, few images)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    d = s1.shape[0]
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    w = np.where(w > d * np.finfo(np.float64).eps * max(w.max(), 0.0), w, 0.0)
    r1 = (v * np.sqrt(w)) @ v.T
    m = r1 @ s2 @ r1
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    lam = lam[lam > d * np.finfo(np.float64).eps * max(lam.max(), 0.0)]
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam).sum())


def fid_from_features(a, b):
    return fid_from_stats(*stats(a), *stats(b))


# ---------------------------------------------------------------- the network


def build_net():
    import torch.nn as nn

    class FeatureNet(nn.Module):
        """28x28 grey -> 3 conv blocks (16, 32, 64 channels; BatchNorm, ReLU; max
        pools to 14 and 7) -> 128-d ReLU features -> dropout -> 10 logits."""

        def __init__(self):
            super().__init__()

            def block(cin, cout):
                return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                        nn.ReLU()]

            self.conv = nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32),
                                      nn.MaxPool2d(2), *block(32, 64))
            self.feat = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, FEATURE_DIM),
                                      nn.ReLU())
            self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, 10))

        def features(self, x):
            return self.feat(self.conv(x))

        def forward(self, x):
            return self.head(self.features(x))

    return FeatureNet()


def to_input(images, mean, std):
    import torch
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32) / 255.0)
    return ((x - mean) / std).unsqueeze(1)


def setup_torch(threads, seed):
    import torch
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return torch


def train(args):
    """Trains the classifier (Adam, batch 128, cosine learning rate over the epochs,
    data order and dropout from the seed), checks its test accuracy and writes the
    state dict with its metadata."""
    torch = setup_torch(args.threads, args.seed)
    xtr, ytr = fmnist("train")
    xte, yte = fmnist("t10k")
    if args.limit:
        xtr, ytr = xtr[:args.limit], ytr[:args.limit]
    if args.test_limit:
        xte, yte = xte[:args.test_limit], yte[:args.test_limit]
    mean = float(xtr.mean() / 255.0)
    std = float(xtr.std() / 255.0)
    net = build_net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    batch = 128
    steps = args.epochs * ((len(xtr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    xt, yt = to_input(xtr, mean, std), torch.from_numpy(ytr)
    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = order[i:i + batch]
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        acc = accuracy(net, xte, yte, mean, std)
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {total / len(xt):.4f}, "
              f"test accuracy {acc:.4f}, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    meta = {"seed": args.seed, "epochs": args.epochs, "train_images": len(xtr),
            "test_images": len(xte), "test_accuracy": acc, "mean": mean, "std": std,
            "threads": args.threads, "torch": torch.__version__,
            "train_seconds": round(time.time() - t0, 1)}
    print(f"test accuracy {acc:.4f} on {len(xte)} test images", flush=True)
    if acc < args.min_acc:
        print(f"fmnist_fid.py: test accuracy {acc:.4f} is below --min-acc {args.min_acc}; "
              f"{args.out} not written", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    torch.save({"state_dict": net.state_dict(), "meta": meta}, tmp)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}", flush=True)
    return 0


def accuracy(net, images, labels, mean, std):
    import torch
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(to_input(images[i:i + 1000], mean, std)).argmax(1)
                          for i in range(0, len(images), 1000)])
    return float((pred.numpy() == labels).mean())


class Features:
    """The cached network (trained first if missing), features and class predictions."""

    def __init__(self, path, threads=1):
        torch = setup_torch(threads, 0)
        if not os.path.exists(path):
            print(f"fmnist_fid.py: {path} missing: training the feature network "
                  "(a few minutes)", file=sys.stderr, flush=True)
            a = argparse.Namespace(out=path, epochs=4, seed=0, limit=0, test_limit=0,
                                   min_acc=0.90, threads=threads)
            if train(a) != 0:
                raise SystemExit(1)
        ck = torch.load(path)
        self.meta = ck["meta"]
        self.net = build_net()
        self.net.load_state_dict(ck["state_dict"])
        self.net.eval()

    def __call__(self, images):
        """(features float64 [N][128], predicted classes [N])."""
        import torch
        feats, preds = [], []
        with torch.no_grad():
            for i in range(0, len(images), 1000):
                f = self.net.features(to_input(images[i:i + 1000], self.meta["mean"],
                                               self.meta["std"]))
                feats.append(f.double().numpy())
                preds.append(self.net.head(f).argmax(1).numpy())
        return np.concatenate(feats), np.concatenate(preds)


def reference_images(ref):
    if ref in ("test", "train"):
        return fmnist("t10k" if ref == "test" else "train")[0]
    return load_samples(ref)


def fid(args):
    samples = load_samples(args.samples)  # bad input fails before the network is loaded
    ref = reference_images(args.ref)
    net = Features(args.weights)
    fs, ps = net(samples)
    fr, _ = net(ref)
    value = fid_from_features(fs, fr)
    hist = np.bincount(ps, minlength=10) / len(ps)
    print(f"fid {value:.6f}")
    print(f"{len(samples)} images of {args.samples} vs {len(ref)} images of {args.ref}; "
          f"{FEATURE_DIM}-d features of {args.weights} (test accuracy "
          f"{net.meta['test_accuracy']:.4f})")
    print("predicted classes: " + ", ".join(f"{c} {h:.3f}" for c, h in zip(CLASSES, hist)))
    return 0


def calibrate(args):
    """Real-vs-real and noise-vs-real FIDs against the test set: the scale the sample
    FIDs are read on (docs/evaluation.md)."""
    net = Features(args.weights)
    xtr, ytr = fmnist("train")
    xte, _ = fmnist("t10k")
    fte, _ = net(xte)
    rng = np.random.default_rng(0)
    rows = [("train, first 1,000", xtr[:1000]), ("train, 1,000 from 30,000", xtr[30000:31000]),
            ("train, first 10,000", xtr[:10000]),
            ("train, 1,000 of one class (T-shirt/top)", xtr[ytr == 0][:1000]),
            ("train, 1,000 of five classes (0-4)", xtr[ytr < 5][:1000]),
            ("train 1,000 + Gaussian pixel noise sd 16",
             np.clip(xtr[:1000] + rng.normal(0, 16, (1000, 28, 28)), 0, 255).astype(np.uint8)),
            ("uniform noise, 1,000", rng.integers(0, 256, (1000, 28, 28), dtype=np.uint8)),
            ("Gaussian noise (mean 127.5, sd 64), 1,000",
             np.clip(rng.normal(127.5, 64, (1000, 28, 28)), 0, 255).astype(np.uint8))]
    print(f"feature network: {args.weights}, test accuracy {net.meta['test_accuracy']:.4f}")
    print("| images | FID vs the 10,000 test images |")
    print("| --- | --- |")
    for name, imgs in rows:
        print(f"| {name} | {fid_from_features(net(imgs)[0], fte):.3f} |", flush=True)
    return 0


def write_real(args):
    x = fmnist("train")[0][:args.n]
    np.savez(args.out, arr_0=x[..., None])
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", default=DEFAULT_WEIGHTS)
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=0, help="first N training images only")
    t.add_argument("--test-limit", type=int, default=0, help="first N test images only")
    t.add_argument("--min-acc", type=float, default=0.90)
    t.add_argument("--threads", type=int, default=1)
    f = sub.add_parser("fid")
    f.add_argument("samples")
    f.add_argument("--ref", default="test")
    f.add_argument("--weights", default=DEFAULT_WEIGHTS)
    c = sub.add_parser("calibrate")
    c.add_argument("--weights", default=DEFAULT_WEIGHTS)
    w = sub.add_parser("write-real")
    w.add_argument("n", type=int)
    w.add_argument("out")
    args = p.parse_args(argv)
    try:
        return {"train": train, "fid": fid, "calibrate": calibrate, "write-real": write_real}[
            args.cmd](args)
    except (OSError, ValueError) as e:
        print(f"fmnist_fid.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
