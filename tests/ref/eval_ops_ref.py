"""Checks the evaluation ops (common/ops/ops_extra.h: rectangular convolution,
max/average pooling, bilinear resize, global average pooling) against PyTorch in
float64 on what tests/tools/eval_ops_dump wrote.
usage: eval_ops_ref.py DUMP.tns [--perturb]
Each case: max|C - ref| / max|ref| <= 1e-5 (one float32 op). The resize is compared
with PyTorch's float32 kernel (pytorch-fid's precision), the rest with float64.
--perturb changes one output value of the first case: that case must then fail."""
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import tensor_file  # noqa: E402

TOL = 1e-5


def main():
    d = tensor_file.read(sys.argv[1])
    perturb = "--perturb" in sys.argv
    cases = sorted({k.split("/")[0] for k in d})
    fails = 0
    for c in cases:
        m = [int(round(v)) for v in d[c + "/meta"]]
        x = torch.from_numpy(d[c + "/in"].astype(np.float64))
        got = d[c + "/out"].astype(np.float64)
        if perturb and c == cases[0]:
            got = got.copy()
            got.flat[3] += 1e-3 * np.max(np.abs(got))
        op = m[0]
        if op == 1:
            _, kh, kw, s, ph, pw, relu = m[:7]
            w = torch.from_numpy(d[c + "/weight"].astype(np.float64))
            b = torch.from_numpy(d[c + "/bias"].astype(np.float64))
            ref = F.conv2d(x, w, b, stride=s, padding=(ph, pw))
            if relu:
                ref = F.relu(ref)
            what = f"conv {kh}x{kw} stride {s} pad ({ph},{pw}){' relu' if relu else ''}"
        elif op == 2:
            _, k, s, p = m[:4]
            ref = F.max_pool2d(x, k, stride=s, padding=p)
            what = f"max_pool2d k{k} s{s} p{p}"
        elif op == 3:
            _, k, s, p, cip = m[:5]
            ref = F.avg_pool2d(x, k, stride=s, padding=p, count_include_pad=bool(cip))
            what = f"avg_pool2d k{k} s{s} p{p} count_include_pad={bool(cip)}"
        elif op == 4:
            _, ho, wo = m[:3]
            # In float32, as pytorch-fid runs it: PyTorch rounds the scale in/out to the
            # input's precision, so float64 coordinates differ by up to ~2e-5 px from
            # float32's when downsampling 320 -> 299 (1e-4 relative in values).
            ref = F.interpolate(x.float(), size=(ho, wo), mode="bilinear",
                                align_corners=False).double()
            what = (f"bilinear resize {tuple(x.shape[2:])} -> ({ho}, {wo}), align_corners=False "
                    "(vs PyTorch float32)")
        elif op == 5:
            ref = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
            what = "global average pool"
        else:
            raise ValueError(op)
        ref = ref.numpy()
        if got.shape != ref.shape:
            print(f"not ok - {c}: {what}: shape {got.shape}, expected {ref.shape}")
            fails += 1
            continue
        err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        ok = err <= TOL
        fails += not ok
        print(f"{'ok' if ok else 'not ok'} - {c}: {what} {tuple(x.shape)}: rel err {err:.2e} (<= {TOL})")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
