"""Fused ``bias + activation + gain + clamp`` as one Triton kernel each way (CUDA only; imported lazily).

The reference (:func:`get3d.nn.layers.bias_act_ref`) runs four elementwise kernels forward and five backward,
and autograd keeps the pre-activation *and* the activation alive.  Here the forward reads ``x`` once and
writes ``y``; only ``y`` is saved, because for the piecewise-linear activations the local slope follows from
the output alone (``y > 0`` ⇔ the pre-activation is positive, ``|y| < clamp`` ⇔ not clamped).  The backward
reads ``dy`` and ``y`` and writes ``dx``; the bias gradient is ``dx`` summed over the other dimensions.

Under ``create_graph`` (R1's double backward) the backward is written with ordinary differentiable ops on
``dy`` (the slope is piecewise constant, so its own derivative is zero), so any order of derivative works.

Works on any *dense* layout (NCHW, channels-last, [B, N, C]): the channel of the element at memory offset
``o`` is ``(o // stride(dim)) % size(dim)``; ``y`` and ``dx`` are allocated with ``x``'s strides.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

ACT_CODES = {"linear": 0, "lrelu": 1, "relu": 2}
LRELU_ALPHA = 0.2
BLOCK = 1024


@triton.jit
def _act_gain_clamp(x, gain, alpha, clamp, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr):
    if ACT == 1:
        x = tl.where(x > 0, x, x * alpha)
    if ACT == 2:
        x = tl.maximum(x, 0.0)
    x = x * gain
    if HAS_CLAMP:
        x = tl.minimum(tl.maximum(x, -clamp), clamp)
    return x


@triton.jit(do_not_specialize=["N"])
def _fwd_kernel(X, B, Y, N, C, S, gain, alpha, clamp,
                HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    x = tl.load(X + offs, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        c = (offs // S) % C
        x += tl.load(B + c, mask=m, other=0.0).to(tl.float32)
    tl.store(Y + offs, _act_gain_clamp(x, gain, alpha, clamp, ACT, HAS_CLAMP).to(Y.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["N"])
def _bwd_kernel(DY, Y, DX, N, gain, alpha, clamp,
                ACT: tl.constexpr, HAS_CLAMP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    dy = tl.load(DY + offs, mask=m, other=0.0).to(tl.float32)
    y = tl.load(Y + offs, mask=m, other=0.0).to(tl.float32)
    g = dy * gain
    if ACT == 1:
        g = tl.where(y > 0, g, g * alpha)
    if ACT == 2:
        g = tl.where(y > 0, g, 0.0)
    if HAS_CLAMP:
        g = tl.where((y > -clamp) & (y < clamp), g, 0.0)
    tl.store(DX + offs, g.to(DX.dtype.element_ty), mask=m)


def is_dense(x: torch.Tensor) -> bool:
    """Non-overlapping and without gaps in memory (any dimension order)."""
    if x.is_contiguous():
        return True
    order = sorted(range(x.ndim), key=lambda d: x.stride(d))
    expected = 1
    for d in order:
        if x.shape[d] != 1 and x.stride(d) != expected:
            return False
        expected *= x.shape[d]
    return True


def supports(x: torch.Tensor, act: str) -> bool:
    return x.is_cuda and act in ACT_CODES and x.dtype in (torch.float32, torch.float16, torch.bfloat16) \
        and x.numel() > 0 and is_dense(x)


def _slope(y: torch.Tensor, act: str, gain: float, clamp: float | None) -> torch.Tensor:
    """d y / d x as a tensor (piecewise constant), computed from the output; used under create_graph."""
    s = torch.full_like(y, gain)
    if act == "lrelu":
        s = torch.where(y > 0, s, s * LRELU_ALPHA)
    elif act == "relu":
        s = torch.where(y > 0, s, torch.zeros_like(s))
    if clamp is not None:
        s = torch.where((y > -clamp) & (y < clamp), s, torch.zeros_like(s))
    return s


def _grid(n: int):
    return (triton.cdiv(n, BLOCK),)


class BiasActFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim: int, act: str, gain: float, clamp):
        y = torch.empty_like(x)  # same strides as a dense x
        n = x.numel()
        bias = b.to(x.dtype).contiguous() if b is not None else x
        _fwd_kernel[_grid(n)](x, bias, y, n, x.shape[dim], x.stride(dim), float(gain), LRELU_ALPHA,
                              float(clamp) if clamp is not None else 0.0, HAS_BIAS=b is not None,
                              ACT=ACT_CODES[act], HAS_CLAMP=clamp is not None, BLOCK=BLOCK)
        need_y = act != "linear" or clamp is not None
        ctx.save_for_backward(y if need_y else None)
        ctx.meta = (dim, act, float(gain), clamp, x.ndim, b is not None and b.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dim, act, gain, clamp, ndim, b_dtype = ctx.meta
        if y is None:
            dx = dy * gain if gain != 1 else dy
        elif torch.is_grad_enabled():
            dx = dy * _slope(y.detach(), act, gain, clamp)
        else:
            if dy.stride() != y.stride():
                dy = torch.empty_like(y).copy_(dy)
            dx = torch.empty_like(y)
            n = y.numel()
            _bwd_kernel[_grid(n)](dy, y, dx, n, gain, LRELU_ALPHA, float(clamp) if clamp is not None else 0.0,
                                  ACT=ACT_CODES[act], HAS_CLAMP=clamp is not None, BLOCK=BLOCK)
        db = None
        if ctx.needs_input_grad[1]:
            dims = [d for d in range(ndim) if d != dim]
            db = (dx.sum(dim=dims, dtype=torch.float32) if dims else dx.float()).to(b_dtype)
        return (dx if ctx.needs_input_grad[0] else None), db, None, None, None, None


def bias_act(x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, gain: float,
             clamp: float | None) -> torch.Tensor:
    """``clamp(act(x + b) * gain)`` in one kernel; the caller checks :func:`supports` first."""
    return BiasActFunction.apply(x, b, dim % x.ndim, act, gain, clamp)


# ------------------------------------------------------------------------------ inference epilogue of a layer

@triton.jit
def _epilogue_kernel(X, D, NZ, S, B, Y, N, C, HW, gain, alpha, clamp, HAS_NOISE: tl.constexpr,
                     NOISE_BATCHED: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    hw = offs % HW
    bc = offs // HW
    x = tl.load(X + offs, mask=m, other=0.0).to(tl.float32) * tl.load(D + bc, mask=m, other=0.0).to(tl.float32)
    if HAS_NOISE:
        if NOISE_BATCHED:
            nidx = (bc // C) * HW + hw
        else:
            nidx = hw
        x += tl.load(NZ + nidx, mask=m, other=0.0).to(tl.float32) * tl.load(S).to(tl.float32)
    x += tl.load(B + bc % C, mask=m, other=0.0).to(tl.float32)
    tl.store(Y + offs, _act_gain_clamp(x, gain, alpha, clamp, ACT, HAS_CLAMP).to(Y.dtype.element_ty), mask=m)


def supports_epilogue(x: torch.Tensor, act: str) -> bool:
    return (x.is_cuda and x.ndim == 4 and x.is_contiguous() and act in ACT_CODES and x.numel() > 0
            and x.dtype in (torch.float32, torch.float16, torch.bfloat16))


def demodulate_noise_bias_act(x: torch.Tensor, dcoefs: torch.Tensor, noise: torch.Tensor | None,
                              strength: torch.Tensor | None, b: torch.Tensor, act: str, gain: float,
                              clamp: float | None) -> torch.Tensor:
    """Forward only (no autograd): ``clamp(act(x·dcoefs[b, c] + noise·strength + b[c]) · gain)`` in one pass over
    an NCHW ``x``; ``noise`` is ``[B, 1, H, W]`` or ``[H, W]``, ``strength`` a one-element tensor (read on the
    device).  The synthesis layers' epilogue when no gradient is needed (generation, evaluation)."""
    x = x.contiguous()  # the kernel indexes NCHW; a no-op for the synthesis trunk
    bsz, c, h, w = x.shape
    y = torch.empty_like(x)
    n = x.numel()
    d = dcoefs.to(torch.float32).contiguous()
    nz = noise.contiguous() if noise is not None else x
    st = strength.reshape(1) if strength is not None else d
    _epilogue_kernel[_grid(n)](x, d, nz, st, b.contiguous(), y, n, c, h * w, float(gain), LRELU_ALPHA,
                               float(clamp) if clamp is not None else 0.0, HAS_NOISE=noise is not None,
                               NOISE_BATCHED=noise is not None and noise.ndim == 4 and noise.shape[0] == bsz
                               and bsz > 1, ACT=ACT_CODES[act], HAS_CLAMP=clamp is not None, BLOCK=BLOCK)
    return y

