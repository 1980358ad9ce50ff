#!/usr/bin/python3
"""Converts pytorch-fid's Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth)
into the tensor file that ddpm-eval reads (--inception PATH).

usage: /usr/bin/python3 ops/convert_inception.py IN.pth OUT.tns

Every BasicConv2d (a bias-free conv followed by BatchNorm, eps 1e-3) becomes one
convolution with the BatchNorm folded in, computed in float64 and stored as float32:
    scale  = bn.weight / sqrt(bn.running_var + 1e-3)
    weight = conv.weight * scale[:, None, None, None]
    bias   = bn.bias - bn.running_mean * scale
written as NAME.weight [Cout][Cin][kh][kw] and NAME.bias [Cout]; fc.weight [1008][2048]
and fc.bias [1008] are copied. The state dict must hold exactly the keys of
pytorch-fid's FID Inception (torchvision's Inception3 names, no AuxLogits);
num_batches_tracked entries are ignored. Anything missing, unexpected or of the wrong
shape stops the conversion with a message naming the keys. Needs torch (Debian's
python3-torch); the weights file itself must be fetched separately (it is not
downloadable on machines without internet)."""
import struct
import sys

import numpy as np
import torch

BN_EPS = 1e-3


def conv_layers():
    """(name, cin, cout, kh, kw) of the 94 BasicConv2d layers, in forward order."""
    out = []

    def add(p, n, cin, cout, kh, kw=None):
        out.append((f"{p}.{n}" if p else n, cin, cout, kh, kw if kw is not None else kh))

    add("", "Conv2d_1a_3x3", 3, 32, 3)
    add("", "Conv2d_2a_3x3", 32, 32, 3)
    add("", "Conv2d_2b_3x3", 32, 64, 3)
    add("", "Conv2d_3b_1x1", 64, 80, 1)
    add("", "Conv2d_4a_3x3", 80, 192, 3)
    for p, cin, pf in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        add(p, "branch1x1", cin, 64, 1)
        add(p, "branch5x5_1", cin, 48, 1)
        add(p, "branch5x5_2", 48, 64, 5)
        add(p, "branch3x3dbl_1", cin, 64, 1)
        add(p, "branch3x3dbl_2", 64, 96, 3)
        add(p, "branch3x3dbl_3", 96, 96, 3)
        add(p, "branch_pool", cin, pf, 1)
    add("Mixed_6a", "branch3x3", 288, 384, 3)
    add("Mixed_6a", "branch3x3dbl_1", 288, 64, 1)
    add("Mixed_6a", "branch3x3dbl_2", 64, 96, 3)
    add("Mixed_6a", "branch3x3dbl_3", 96, 96, 3)
    for p, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        add(p, "branch1x1", 768, 192, 1)
        add(p, "branch7x7_1", 768, c7, 1)
        add(p, "branch7x7_2", c7, c7, 1, 7)
        add(p, "branch7x7_3", c7, 192, 7, 1)
        add(p, "branch7x7dbl_1", 768, c7, 1)
        add(p, "branch7x7dbl_2", c7, c7, 7, 1)
        add(p, "branch7x7dbl_3", c7, c7, 1, 7)
        add(p, "branch7x7dbl_4", c7, c7, 7, 1)
        add(p, "branch7x7dbl_5", c7, 192, 1, 7)
        add(p, "branch_pool", 768, 192, 1)
    add("Mixed_7a", "branch3x3_1", 768, 192, 1)
    add("Mixed_7a", "branch3x3_2", 192, 320, 3)
    add("Mixed_7a", "branch7x7x3_1", 768, 192, 1)
    add("Mixed_7a", "branch7x7x3_2", 192, 192, 1, 7)
    add("Mixed_7a", "branch7x7x3_3", 192, 192, 7, 1)
    add("Mixed_7a", "branch7x7x3_4", 192, 192, 3)
    for p, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        add(p, "branch1x1", cin, 320, 1)
        add(p, "branch3x3_1", cin, 384, 1)
        add(p, "branch3x3_2a", 384, 384, 1, 3)
        add(p, "branch3x3_2b", 384, 384, 3, 1)
        add(p, "branch3x3dbl_1", cin, 448, 1)
        add(p, "branch3x3dbl_2", 448, 384, 3)
        add(p, "branch3x3dbl_3a", 384, 384, 1, 3)
        add(p, "branch3x3dbl_3b", 384, 384, 3, 1)
        add(p, "branch_pool", cin, 192, 1)
    return out


def expected_shapes():
    shapes = {}
    for name, cin, cout, kh, kw in conv_layers():
        shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for b in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{b}"] = (cout,)
    shapes["fc.weight"] = (1008, 2048)
    shapes["fc.bias"] = (1008,)
    return shapes


def write_tensor_file(path, tensors):
    """The project's named-tensor format (common/io/tensor_file.h)."""
    with open(path, "wb") as f:
        f.write(b"DDPMTNS1")
        for name, arr in tensors:
            a = np.ascontiguousarray(arr, dtype="<f4")
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb)
            f.write(struct.pack("<I", a.ndim))
            f.write(struct.pack(f"<{a.ndim}Q", *a.shape))
            f.write(a.tobytes())


def convert(sd):
    """Returns [(name, float32 array)] or raises ValueError naming the bad keys."""
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    shapes = expected_shapes()
    missing = sorted(set(shapes) - set(sd))
    unexpected = sorted(set(sd) - set(shapes))
    if missing or unexpected:
        msg = []
        if missing:
            msg.append(f"{len(missing)} missing key(s): {', '.join(missing[:8])}"
                       + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            msg.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:8])}"
                       + (" ..." if len(unexpected) > 8 else ""))
        raise ValueError("not pytorch-fid's Inception-v3 state dict: " + "; ".join(msg))
    bad = [f"{k} {tuple(sd[k].shape)} (expected {s})" for k, s in shapes.items()
           if tuple(sd[k].shape) != s]
    if bad:
        raise ValueError("wrong shape: " + "; ".join(bad[:8]))
    arr = {k: sd[k].detach().to(torch.float64).numpy() for k in shapes}
    out = []
    for name, *_ in conv_layers():
        scale = arr[f"{name}.bn.weight"] / np.sqrt(arr[f"{name}.bn.running_var"] + BN_EPS)
        out.append((f"{name}.weight", arr[f"{name}.conv.weight"] * scale[:, None, None, None]))
        out.append((f"{name}.bias", arr[f"{name}.bn.bias"] - arr[f"{name}.bn.running_mean"] * scale))
    out.append(("fc.weight", arr["fc.weight"]))
    out.append(("fc.bias", arr["fc.bias"]))
    for name, a in out:
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: non-finite values after folding BatchNorm")
    return out


def main():
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    try:
        sd = torch.load(src, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - report any load failure with the path
        print(f"convert_inception: {src}: cannot load: {e}", file=sys.stderr)
        return 1
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        print(f"convert_inception: {src}: not a state dict", file=sys.stderr)
        return 1
    try:
        tensors = convert(sd)
    except ValueError as e:
        print(f"convert_inception: {src}: {e}", file=sys.stderr)
        return 1
    write_tensor_file(dst, tensors)
    print(f"wrote {dst}: {len(tensors)} tensors (94 convolutions with BatchNorm folded, fc)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
