"""2-D convolution with an explicit, cheap double backward.

Why: PyTorch's generic double backward of a convolution (``_convolution_double_backward``) computes the
second-order weight term ``dL/dW`` as *one convolution whose kernel is the whole feature map* (gO is used
as the filter, the input as the batch).  For the discriminator's 1024² blocks that is a 1024×1024 (or
512×512, dilated) kernel, and cuDNN runs it dreadfully slowly: the lazy R1 step took ~44 s on an H100.

Here a convolution is three linear maps that are written in terms of one another:

* ``conv(x, w)``                 forward
* ``conv_grad_input(gy, w)``     = conv_transpose(gy, w)          (adjoint of conv in x)
* ``conv_grad_weight(gy, x)``    = convolution_backward's weight  (adjoint of conv in w)

Each is bilinear in its two tensor arguments, so each one's backward is a pair of the other two — the
double (and any higher) backward only ever runs the same three well-tuned kernels that a normal
forward/backward does.  Same function as ``F.conv2d`` (groups = 1, dilation = 1); tested against it with
``gradcheck``/``gradgradcheck`` in float64 (tests/nn/test_ops_conv.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_Pair = tuple[int, int]


def _pair(v) -> _Pair:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v!r}")
    return v  # type: ignore[return-value]


def _output_padding(x_hw, gy_hw, w_hw, stride: _Pair, padding: _Pair) -> _Pair:
    """Output padding that makes conv_transpose(gy) come back at exactly the input's size."""
    op = tuple(int(x_hw[i]) - ((int(gy_hw[i]) - 1) * stride[i] - 2 * padding[i] + int(w_hw[i]))
               for i in range(2))
    if any(o < 0 or o >= max(stride[i], 1) for i, o in enumerate(op)):
        raise RuntimeError(f"conv2d: inconsistent sizes x={tuple(x_hw)} gy={tuple(gy_hw)} w={tuple(w_hw)}")
    return op  # type: ignore[return-value]


class _Conv(torch.autograd.Function):
    """y = conv2d(x, w)."""

    @staticmethod
    def forward(ctx, x, w, stride, padding):
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, w, None, stride, padding)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = _ConvGradInput.apply(gy, w, tuple(x.shape[2:]), ctx.stride, ctx.padding)
        if ctx.needs_input_grad[1]:
            gw = _ConvGradWeight.apply(gy, x, tuple(w.shape), ctx.stride, ctx.padding)
        return gx, gw, None, None


class _ConvGradInput(torch.autograd.Function):
    """gx = conv_transpose2d(gy, w) at the input size ``x_hw`` (the adjoint of conv in x)."""

    @staticmethod
    def forward(ctx, gy, w, x_hw, stride, padding):
        ctx.save_for_backward(gy, w)
        ctx.x_hw, ctx.stride, ctx.padding = x_hw, stride, padding
        op = _output_padding(x_hw, gy.shape[2:], w.shape[2:], stride, padding)
        return F.conv_transpose2d(gy, w, None, stride, padding, op)

    @staticmethod
    def backward(ctx, ggx):
        gy, w = ctx.saved_tensors
        g_gy = g_w = None
        if ctx.needs_input_grad[0]:   # <ggx, T(gy, w)> = <conv(ggx, w), gy>
            g_gy = _Conv.apply(ggx, w, ctx.stride, ctx.padding)
        if ctx.needs_input_grad[1]:   # the weight gradient of a conv with input ggx and output grad gy
            g_w = _ConvGradWeight.apply(gy, ggx, tuple(w.shape), ctx.stride, ctx.padding)
        return g_gy, g_w, None, None, None


class _ConvGradWeight(torch.autograd.Function):
    """gw = dL/dw of y = conv2d(x, w) given gy = dL/dy (the adjoint of conv in w)."""

    @staticmethod
    def forward(ctx, gy, x, w_shape, stride, padding):
        ctx.save_for_backward(gy, x)
        ctx.w_shape, ctx.stride, ctx.padding = w_shape, stride, padding
        w_meta = gy.new_empty(1).expand(w_shape)  # only its shape/dtype are read
        return torch.ops.aten.convolution_backward(gy, x, w_meta, None, list(stride), list(padding), [1, 1],
                                                   False, [0, 0], 1, [False, True, False])[1]

    @staticmethod
    def backward(ctx, ggw):
        gy, x = ctx.saved_tensors
        g_gy = g_x = None
        if ctx.needs_input_grad[0]:   # <ggw, W(gy, x)> = <conv(x, ggw), gy>
            g_gy = _Conv.apply(x, ggw.to(x.dtype), ctx.stride, ctx.padding)
        if ctx.needs_input_grad[1]:   # ... = <x, T(gy, ggw)>
            g_x = _ConvGradInput.apply(gy, ggw.to(gy.dtype), tuple(x.shape[2:]), ctx.stride, ctx.padding)
        return g_gy, g_x, None, None, None


def conv2d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0) -> torch.Tensor:
    """``F.conv2d(x, w, bias, stride, padding)`` (groups 1, dilation 1) with a cheap double backward."""
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d expects x [B, C, H, W] and w [O, C, kh, kw], got {tuple(x.shape)}, "
                         f"{tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: x has {x.shape[1]} channels but w expects {w.shape[1]}")
    y = _Conv.apply(x, w, _pair(stride), _pair(padding))
    if bias is not None:
        y = y + bias.to(y.dtype).reshape(1, -1, 1, 1)
    return y
