"""The exported weights in PyTorch against the C network.

usage: export_ref.py MODEL.safetensors DUMP.tns PERTURB_NAME
1. Reads the file with a reader written here (numpy: the 8-byte length, the JSON
   header, the data area) and checks the format: header padded to 8 bytes, tensors
   F32 and contiguous in the data area, the metadata the docs promise.
2. Builds the shipped module with its own load_safetensors (export/ddpm_unet.py)
   and checks that its state_dict equals what this reader read, bit for bit.
3. Runs the module in float64 on the dump's (x_t, t) (tests/tools/ckpt_eps_dump:
   the checkpoint's network as ddpm-sample runs it) and compares epsilon by
   max|C - ref| / max|ref| <= 1e-4, the reference tests' tolerance.
4. The same comparison with the tensor PERTURB_NAME scaled by 1.1 must fail (the
   comparison can fail)."""
import json
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/../../export")
import ddpm_unet  # noqa: E402
import tensor_file  # noqa: E402

TOL = 1e-4


def read_raw(path):
    b = open(path, "rb").read()
    n = int.from_bytes(b[:8], "little")
    header = json.loads(b[8:8 + n].decode("utf-8"))
    data = b[8 + n:]
    meta = header.pop("__metadata__")
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1]) for v in header.values())
    assert (8 + n) % 8 == 0, "header not padded to a multiple of 8"
    assert spans[0][0] == 0 and spans[-1][1] == len(data), "data area not covered"
    assert all(a[1] == b_[0] for a, b_ in zip(spans, spans[1:])), "tensors not contiguous"
    out = {}
    for name, v in header.items():
        assert v["dtype"] == "F32", (name, v["dtype"])
        a, e = v["data_offsets"]
        out[name] = np.frombuffer(data[a:e], dtype="<f4").reshape(v["shape"])
    for key in ("format", "config", "model", "diffusion", "step", "weights"):
        assert key in meta, f"metadata lacks {key}"
    return out, meta


def main():
    path, dump = sys.argv[1], sys.argv[2]
    perturb = sys.argv[3]
    raw, meta = read_raw(path)
    print(f"ok - {path}: the format (padding, contiguous F32 tensors, metadata "
          f"{sorted(meta)}) as written by ddpm-export, {len(raw)} tensors")
    torch.set_num_threads(2)
    model, meta2 = ddpm_unet.load_safetensors(path)
    sd = model.state_dict()
    assert meta2 == meta
    if set(sd) != set(raw) or any(not np.array_equal(sd[k].numpy(), raw[k]) for k in raw):
        print("not ok - load_safetensors' state_dict differs from the file's tensors")
        return 1
    print(f"ok - load_safetensors built the module from the metadata and loaded all "
          f"{len(sd)} tensors bit for bit (strict state_dict)")
    d = tensor_file.read(dump)
    model = model.double()
    x_t = torch.from_numpy(d["x_t"].astype(np.float64))
    t = torch.from_numpy(d["t"].astype(np.int64))
    y = torch.from_numpy(d["y"].astype(np.int64)) if "y" in d else None
    c = d["out"].astype(np.float64)

    def rel_err():
        with torch.no_grad():
            ref = (model(x_t, t) if y is None else model(x_t, t, y)).numpy()
        return np.abs(c - ref).max() / max(np.abs(ref).max(), 1e-30), np.abs(ref).max()

    err, scale = rel_err()
    ok = err <= TOL
    print(f"{'ok' if ok else 'not ok'} - epsilon of the PyTorch module on the exported weights "
          f"equals the C network's: max|C-ref|/max|ref| = {err:.2e} (<= {TOL:g}; "
          f"max|ref| {scale:.3g}, {c.shape[0]} images, t = {d['t'].astype(int).tolist()})")
    with torch.no_grad():
        dict(model.named_parameters())[perturb].mul_(1.1)
    perr, _ = rel_err()
    pok = perr > TOL
    print(f"{'ok' if pok else 'not ok'} - with {perturb} scaled by 1.1 the comparison fails "
          f"(max|C-ref|/max|ref| = {perr:.2e})")
    return 0 if ok and pok else 1


if __name__ == "__main__":
    sys.exit(main())
