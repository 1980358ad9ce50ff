"""The DDPM U-Net (Ho et al. 2020) in PyTorch, for using ddpm-cluster's weights
elsewhere: an independent implementation written from the authors'
diffusion_tf/models/unet.py, whose state_dict keys are ddpm-cluster's parameter
names (docs/model.md). The reference tests compare the C network against it.

    import ddpm_unet
    model, meta = ddpm_unet.load_safetensors("model.safetensors")  # from ddpm-export
    eps = model(x_t, t)   # x_t: [N, C, H, W] in the data scale, t: [N] int64 timesteps

load_safetensors builds the module from the file's metadata (the model section of
the training config, as JSON) and loads the tensors with a few-line safetensors
reader (json + torch.frombuffer; no safetensors package needed). To go the other
way, save `model.state_dict()` in safetensors (F32, F16 or BF16) and run
`ddpm-import FILE CONFIG --out ckpt.ddpm` (docs/export.md). Needs torch and numpy
only; `python3 ddpm_unet.py model.safetensors` runs the example at the end."""
import inspect
import json
import math
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim):
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000.0) / (half - 1)))
    arg = t.to(torch.float64)[:, None] * freq[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


def norm(c):
    return nn.GroupNorm(32, c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, tch):
        super().__init__()
        self.norm1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(tch, cout)
        self.norm2 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.mask = None  # dropout mask to apply (the C side's), or None

    def forward(self, x, temb_act):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb_act)[:, :, None, None]
        h = F.silu(self.norm2(h))
        if self.mask is not None:
            h = h * self.mask.reshape(h.shape)
        h = self.conv2(h)
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = norm(c)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(B, C, H * W)
        k = self.k(h).reshape(B, C, H * W)
        v = self.v(h).reshape(B, C, H * W)
        w = torch.einsum("bci,bcj->bij", q, k) * (C ** -0.5)
        w = torch.softmax(w, dim=2)
        o = torch.einsum("bij,bcj->bci", w, v).reshape(B, C, H, W)
        return x + self.proj_out(o)


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        # TF 'SAME' for stride 2: total pad max((ceil(H/2)-1)*2+3-H, 0), less before
        H = x.shape[2]
        total = max(((H + 1) // 2 - 1) * 2 + 3 - H, 0)
        return self.conv(F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2)))


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    pass


class UNet(nn.Module):
    def __init__(self, image_size, in_ch, ch, ch_mult, num_res_blocks, attn_res, learn_sigma=False,
                 num_classes=0):
        super().__init__()
        self.ch = ch
        self.num_classes = num_classes
        self.temb = nn.Module()
        self.temb.dense0 = nn.Linear(ch, 4 * ch)
        self.temb.dense1 = nn.Linear(4 * ch, 4 * ch)
        if num_classes > 0:
            # guided-diffusion's label embedding, with one more row: the null label
            # (index num_classes) of classifier-free guidance
            self.label_emb = nn.Embedding(num_classes + 1, 4 * ch)
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.num_res_blocks = num_res_blocks
        res = image_size
        hs_ch = [ch]
        cur = ch
        self.down = nn.ModuleList()
        for lvl, mult in enumerate(ch_mult):
            L = Level()
            L.block = nn.ModuleList()
            L.attn = nn.ModuleList()
            for _ in range(num_res_blocks):
                L.block.append(ResBlock(cur, ch * mult, 4 * ch))
                cur = ch * mult
                if res in attn_res:
                    L.attn.append(AttnBlock(cur))
                hs_ch.append(cur)
            if lvl != len(ch_mult) - 1:
                L.downsample = Down(cur)
                res = (res + 1) // 2
                hs_ch.append(cur)
            self.down.append(L)
        self.mid = nn.Module()
        self.mid.block_1 = ResBlock(cur, cur, 4 * ch)
        self.mid.attn_1 = AttnBlock(cur)
        self.mid.block_2 = ResBlock(cur, cur, 4 * ch)
        self.up = nn.ModuleList([None] * len(ch_mult))
        for lvl in reversed(range(len(ch_mult))):
            L = Level()
            L.block = nn.ModuleList()
            L.attn = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                L.block.append(ResBlock(cur + hs_ch.pop(), ch * ch_mult[lvl], 4 * ch))
                cur = ch * ch_mult[lvl]
                if res in attn_res:
                    L.attn.append(AttnBlock(cur))
            if lvl != 0:
                L.upsample = Up(cur)
                res *= 2
            self.up[lvl] = L
        self.norm_out = norm(cur)
        # learned variances (improved DDPM): eps, then as many channels of v
        self.conv_out = nn.Conv2d(cur, in_ch * (2 if learn_sigma else 1), 3, padding=1)

    def forward(self, x, t, y=None):
        emb = timestep_embedding(t, self.ch).to(x.dtype)
        temb = self.temb.dense1(F.silu(self.temb.dense0(emb)))
        if self.num_classes > 0:
            if y is None:  # the null label
                y = torch.full_like(t, self.num_classes)
            # guided-diffusion: emb = time_embed(t) + label_emb(y), before the SiLU
            temb = temb + self.label_emb(y)
        ta = F.silu(temb)
        hs = [self.conv_in(x)]
        for lvl, L in enumerate(self.down):
            for b in range(self.num_res_blocks):
                h = L.block[b](hs[-1], ta)
                if len(L.attn):
                    h = L.attn[b](h)
                hs.append(h)
            if hasattr(L, "downsample"):
                hs.append(L.downsample(hs[-1]))
        h = hs[-1]
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h, ta)), ta)
        for lvl in reversed(range(len(self.up))):
            L = self.up[lvl]
            for b in range(self.num_res_blocks + 1):
                h = L.block[b](torch.cat([h, hs.pop()], dim=1), ta)
                if len(L.attn):
                    h = L.attn[b](h)
            if hasattr(L, "upsample"):
                h = L.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def from_meta(meta):
    m = [int(round(v)) if i != 4 else float(v) for i, v in enumerate(meta)]
    image_size, in_ch, ch, nrb = m[0], m[1], m[2], m[3]
    nlev = m[5]
    mult = m[6:6 + nlev]
    nattn = m[6 + nlev]
    attn = m[7 + nlev:7 + nlev + nattn]
    learn_sigma = len(m) > 7 + nlev + nattn and m[7 + nlev + nattn] != 0
    # the count of classes follows learn_sigma (0 or absent: unconditional)
    num_classes = int(m[8 + nlev + nattn]) if len(m) > 8 + nlev + nattn else 0
    return UNet(image_size, in_ch, ch, mult, nrb, attn, learn_sigma, num_classes)



# Model-section keys (docs/config.md) and the constructor arguments they become;
# a key not listed here is passed under its own name when UNet takes an argument
# of that name, so a new model option needs only its constructor argument.
_ARG_NAMES = {"in_channels": "in_ch", "attn_resolutions": "attn_res"}
# keys that do not change the weights or an evaluation forward pass
_TRAINING_ONLY = {"dropout"}


def from_config(model):
    """The UNet of a config's model section (a dict, e.g. json.loads of a
    safetensors file's metadata["model"]). An option this module does not
    implement is refused by name rather than ignored."""
    params = inspect.signature(UNet.__init__).parameters
    kwargs = {}
    for key, value in model.items():
        arg = _ARG_NAMES.get(key, key)
        if arg in params:
            kwargs[arg] = value
        elif key == "resamp_with_conv":
            if not value:
                raise ValueError("model.resamp_with_conv: false is not supported")
        elif key not in _TRAINING_ONLY:
            raise ValueError(f"model.{key}: not supported by this module")
    return UNet(**kwargs)


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "F64": torch.float64}


def read_safetensors(path):
    """(tensors, metadata) of a safetensors file: an 8-byte little-endian header
    length, the JSON header, then the raw little-endian data (offsets from the
    data's start)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(data[8 + n + begin:8 + n + end])  # a writable copy
        t = torch.frombuffer(raw, dtype=_DTYPES[info["dtype"]]) if raw else torch.zeros(0)
        tensors[name] = t.reshape(info["shape"])
    return tensors, meta


def load_safetensors(path):
    """(model, metadata) from a file written by ddpm-export: the module built from
    metadata["model"], every tensor loaded (strict: the names and shapes must be
    exactly the module's), in eval mode. metadata also holds "diffusion" (the
    noise schedule, JSON), "config" (the whole training config, YAML), "step" and
    "weights" (ema or params)."""
    tensors, meta = read_safetensors(path)
    model = from_config(json.loads(meta["model"]))
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return model.eval(), meta


def _example(path):
    """Predicts epsilon for a few noisy images and prints its statistics."""
    model, meta = load_safetensors(path)
    cfg = json.loads(meta["model"])
    diffusion = json.loads(meta["diffusion"])
    print(f"{path}: step {meta.get('step')}, {meta.get('weights')} weights, "
          f"{sum(p.numel() for p in model.parameters())} parameters, model {cfg}")
    torch.manual_seed(0)
    x_t = torch.randn(2, cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    t = torch.tensor([0, diffusion["timesteps"] - 1])
    with torch.no_grad():
        eps = model(x_t, t)
    print(f"eps_theta(x_t, t={t.tolist()}): shape {list(eps.shape)}, mean {eps.mean():.4f}, "
          f"std {eps.std():.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 ddpm_unet.py MODEL.safetensors")
    _example(sys.argv[1])
