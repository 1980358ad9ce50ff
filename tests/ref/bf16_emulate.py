"""bf16 mixed precision, emulated in float64 PyTorch (the reference of the C
bf16 U-Net, tests/ref/unet_ref.py on a dump written with precision bf16).

The C model (docs/performance.md, "bf16") rounds the two operands of every
matmul to bf16 (round to nearest even, from their fp32 values) and accumulates
in fp32; outputs, biases and everything between the matmuls stay fp32. In the
backward pass the same holds for each of the two matmuls that a matmul's
backward is: the incoming gradient and the other operand are rounded, the
result (diff_src, diff_weights) is not; bias gradients are summed from the
unrounded gradient. enable() patches F.conv2d, F.linear and torch.einsum (the
attention matmuls of ddpm_torch.py) so that float64 autograd computes exactly
that, up to the accumulation (float64 here, fp32 there):
    y = G(op(R(a), R(b))) + bias
R rounds its input in forward and passes the gradient unchanged; G is the
identity in forward and rounds the gradient in backward."""
import torch
import torch.nn.functional as F


def bf16(x):
    # via fp32, as the C code rounds fp32 values
    return x.float().to(torch.bfloat16).to(x.dtype)


class _R(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return bf16(x)

    @staticmethod
    def backward(ctx, g):
        return g


class _G(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return bf16(g)


def enable(skip=()):
    """Patches the matmuls; a kind named in skip ("conv2d", "linear", "einsum")
    stays exact (the test that the comparison can fail)."""
    conv2d, linear, einsum = F.conv2d, F.linear, torch.einsum

    def conv2d_bf16(x, w, b=None, *args, **kw):
        y = _G.apply(conv2d(_R.apply(x), _R.apply(w), None, *args, **kw))
        return y if b is None else y + b.reshape(1, -1, 1, 1)

    def linear_bf16(x, w, b=None):
        y = _G.apply(linear(_R.apply(x), _R.apply(w)))
        return y if b is None else y + b

    def einsum_bf16(eq, a, b):
        return _G.apply(einsum(eq, _R.apply(a), _R.apply(b)))

    if "conv2d" not in skip:
        F.conv2d = conv2d_bf16
    if "linear" not in skip:
        F.linear = linear_bf16
    if "einsum" not in skip:
        torch.einsum = einsum_bf16
