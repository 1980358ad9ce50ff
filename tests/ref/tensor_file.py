"""Reader/writer for the project's named-tensor files (common/io/tensor_file.h)."""
import struct

import numpy as np


def read(path):
    out = {}
    with open(path, "rb") as f:
        if f.read(8) != b"DDPMTNS1":
            raise ValueError(f"{path}: not a tensor file")
        while True:
            h = f.read(4)
            if not h:
                break
            (n,) = struct.unpack("<I", h)
            name = f.read(n).decode()
            (nd,) = struct.unpack("<I", f.read(4))
            dims = struct.unpack(f"<{nd}Q", f.read(8 * nd)) if nd else ()
            count = int(np.prod(dims)) if nd else 1
            data = np.frombuffer(f.read(4 * count), dtype="<f4", count=count)
            out[name] = data.reshape(dims) if nd else data
    return out


def write(path, tensors):
    with open(path, "wb") as f:
        f.write(b"DDPMTNS1")
        for name, arr in tensors.items():
            a = np.ascontiguousarray(arr, dtype="<f4")
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb)
            f.write(struct.pack("<I", a.ndim))
            f.write(struct.pack(f"<{a.ndim}Q", *a.shape))
            f.write(a.tobytes())
