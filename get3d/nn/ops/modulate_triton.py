"""The modulated layers' per-sample channel scaling and epilogue, each one Triton kernel per direction (CUDA).

One function covers both: ``y = clamp(act(x·s[b, c] + noise·strength + bias[c]) · gain)``.  With no noise, bias or
activation it is the input modulation ``x·styles`` in front of a shared convolution or GEMM; with them it is the
demodulation epilogue behind it (``s`` = the demodulation coefficients).  PyTorch runs the scaling as a broadcast
multiply (a non-vectorised kernel) and its backward as two more multiplies and a reduction for ``ds``; the
epilogue adds a noise multiply-add and bias_act, and their own backward passes.  Here the forward reads ``x`` once
and writes ``y``; the backward reads ``dy``, ``x`` (and ``y`` for the activation's slope, and the noise) once,
writes ``dx`` and per-program partial sums of ``ds``, the bias gradient and the noise-strength gradient.

Two layouts: ``dim=1`` of a contiguous NCHW tensor (the synthesis layers: a program covers part of one ``(b, c)``
row of ``H·W`` elements) and ``dim=2`` of a contiguous ``[B, N, C]`` tensor (the point decoders: a program covers
a tile of points × all channels).  Under ``create_graph`` the backward is written with differentiable PyTorch ops.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from get3d.nn.ops.bias_act_triton import ACT_CODES, LRELU_ALPHA, _act_gain_clamp, _grad_through_act, _slope

MAX_BLOCK = 1024
TILE = 2048  # elements per program of the [B, N, C] kernels


@triton.jit
def _nchw_fwd(X, S, NZ, ST, B, Y, HW, C, gain, alpha, clamp, HAS_NOISE: tl.constexpr,
              NOISE_BATCHED: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr,
              BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)  # row b·C + c
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < HW
    v = tl.load(X + r * HW + cols, mask=m, other=0.0).to(tl.float32) * tl.load(S + r).to(tl.float32)
    if HAS_NOISE:
        nz = NZ + cols
        if NOISE_BATCHED:
            nz += (r // C) * HW
        v += tl.load(nz, mask=m, other=0.0).to(tl.float32) * tl.load(ST).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(B + r % C).to(tl.float32)
    tl.store(Y + r * HW + cols, _act_gain_clamp(v, gain, alpha, clamp, ACT, HAS_CLAMP).to(Y.dtype.element_ty),
             mask=m)


@triton.jit
def _nchw_bwd(DY, X, Y, S, NZ, DX, PX, PB, PN, HW, C, NBLK, gain, alpha, clamp, NEED_DX: tl.constexpr,
              HAS_NOISE: tl.constexpr, NOISE_BATCHED: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
              HAS_CLAMP: tl.constexpr, USE_Y: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    cols = j * BLOCK + tl.arange(0, BLOCK)
    m = cols < HW
    g = tl.load(DY + r * HW + cols, mask=m, other=0.0).to(tl.float32)
    if USE_Y:
        y = tl.load(Y + r * HW + cols, mask=m, other=0.0).to(tl.float32)
        g = _grad_through_act(g, y, gain, alpha, clamp, ACT, HAS_CLAMP)
    else:
        g = g * gain
    x = tl.load(X + r * HW + cols, mask=m, other=0.0).to(tl.float32)
    if NEED_DX:
        tl.store(DX + r * HW + cols, (g * tl.load(S + r).to(tl.float32)).to(DX.dtype.element_ty), mask=m)
    p = r * NBLK + j
    tl.store(PX + p, tl.sum(g * x, axis=0))
    if HAS_BIAS:
        tl.store(PB + p, tl.sum(g, axis=0))
    if HAS_NOISE:
        nz = NZ + cols
        if NOISE_BATCHED:
            nz += (r // C) * HW
        tl.store(PN + p, tl.sum(g * tl.load(nz, mask=m, other=0.0).to(tl.float32), axis=0))


@triton.jit(do_not_specialize=["N"])
def _bnc_fwd(X, S, B, Y, N, C, gain, alpha, clamp, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
             HAS_CLAMP: tl.constexpr, BN: tl.constexpr, CP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1) * BN + tl.arange(0, BN)
    c = tl.arange(0, CP)
    cm = c < C
    m = (n < N)[:, None] & cm[None, :]
    idx = b * N * C + n[:, None].to(tl.int64) * C + c[None, :]
    v = tl.load(X + idx, mask=m, other=0.0).to(tl.float32) * tl.load(S + b * C + c, mask=cm, other=0.0)[None, :]
    if HAS_BIAS:
        v += tl.load(B + c, mask=cm, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + idx, _act_gain_clamp(v, gain, alpha, clamp, ACT, HAS_CLAMP).to(Y.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["N", "NBLK"])
def _bnc_bwd(DY, X, Y, S, DX, PX, PB, N, C, NBLK, gain, alpha, clamp, NEED_DX: tl.constexpr,
             HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr, USE_Y: tl.constexpr,
             BN: tl.constexpr, CP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    n = j * BN + tl.arange(0, BN)
    c = tl.arange(0, CP)
    cm = c < C
    m = (n < N)[:, None] & cm[None, :]
    idx = b * N * C + n[:, None].to(tl.int64) * C + c[None, :]
    g = tl.load(DY + idx, mask=m, other=0.0).to(tl.float32)
    if USE_Y:
        g = _grad_through_act(g, tl.load(Y + idx, mask=m, other=0.0).to(tl.float32), gain, alpha, clamp, ACT, HAS_CLAMP)
    else:
        g = g * gain
    x = tl.load(X + idx, mask=m, other=0.0).to(tl.float32)
    if NEED_DX:
        s = tl.load(S + b * C + c, mask=cm, other=0.0).to(tl.float32)
        tl.store(DX + idx, (g * s[None, :]).to(DX.dtype.element_ty), mask=m)
    p = (b * NBLK + j) * C + c
    tl.store(PX + p, tl.sum(g * x, axis=0), mask=cm)
    if HAS_BIAS:
        tl.store(PB + p, tl.sum(g, axis=0), mask=cm)


def supports(x: torch.Tensor, dim: int) -> bool:
    """A layout the kernels take: contiguous NCHW with ``dim=1`` or contiguous ``[B, N, C]`` with ``dim=2``."""
    return (x.is_cuda and x.is_contiguous() and x.numel() > 0
            and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
            and ((x.ndim == 4 and dim == 1) or (x.ndim == 3 and dim == 2 and x.shape[2] <= 256)))


def _row_block(hw: int) -> int:
    return max(32, min(MAX_BLOCK, triton.next_power_of_2(hw)))


def _bnc_tile(c: int) -> tuple[int, int]:
    cp = triton.next_power_of_2(c)
    return max(1, TILE // cp), cp


class ModulateFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, s, noise, strength, bias, dim: int, act: str, gain: float, clamp):
        y = torch.empty_like(x)
        s32 = s.to(torch.float32).contiguous()
        cl = float(clamp) if clamp is not None else 0.0
        flags = {"HAS_BIAS": bias is not None, "ACT": ACT_CODES[act], "HAS_CLAMP": clamp is not None}
        b_arg = bias.to(torch.float32).contiguous() if bias is not None else s32
        if dim == 1:
            bsz, c, h, w = x.shape
            blk = _row_block(h * w)
            nz = noise.contiguous() if noise is not None else x
            batched = noise is not None and noise.ndim == 4 and noise.shape[0] == bsz and bsz > 1
            st = strength.reshape(1) if strength is not None else s32
            _nchw_fwd[(bsz * c, triton.cdiv(h * w, blk))](
                x, s32, nz, st, b_arg, y, h * w, c, float(gain), LRELU_ALPHA, cl, HAS_NOISE=noise is not None,
                NOISE_BATCHED=batched, BLOCK=blk, num_warps=max(1, min(4, blk // 256)), **flags)
        else:
            bsz, n, c = x.shape
            bn, cp = _bnc_tile(c)
            _bnc_fwd[(bsz, triton.cdiv(n, bn))](x, s32, b_arg, y, n, c, float(gain), LRELU_ALPHA, cl, BN=bn, CP=cp,
                                                num_warps=4, **flags)
        use_y = act != "linear" or clamp is not None
        ctx.save_for_backward(x, y if use_y else None, s, noise, strength)
        ctx.meta = (dim, act, float(gain), clamp, bias is not None and bias.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y, s, noise, strength = ctx.saved_tensors
        dim, act, gain, clamp, b_dtype = ctx.meta
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: differentiable ops
            dx, ds, dst, db = _reference_backward(dy, x, y, s, noise, dim, act, gain, clamp, need)
        else:
            dx, ds, dst, db = _backward_kernels(dy.contiguous(), x, y, s, noise, dim, act, gain, clamp, need)
        return (dx if need[0] else None, ds.to(s.dtype) if need[1] else None, None,
                dst.reshape(strength.shape).to(strength.dtype) if need[3] else None,
                db.to(b_dtype) if need[4] else None, None, None, None, None)


def _backward_kernels(dy, x, y, s, noise, dim, act, gain, clamp, need):
    dx = torch.empty_like(x) if need[0] else x
    s32 = s.to(torch.float32).contiguous()
    cl = float(clamp) if clamp is not None else 0.0
    flags = {"NEED_DX": bool(need[0]), "HAS_BIAS": bool(need[4]), "ACT": ACT_CODES[act],
             "HAS_CLAMP": clamp is not None, "USE_Y": y is not None}
    if dim == 1:
        bsz, c, h, w = x.shape
        blk = _row_block(h * w)
        nblk = triton.cdiv(h * w, blk)
        px = torch.empty(bsz * c * nblk, device=x.device, dtype=torch.float32)
        pb = torch.empty_like(px) if need[4] else px
        pn = torch.empty_like(px) if need[3] else px
        nz = noise.contiguous() if noise is not None else x
        batched = noise is not None and noise.ndim == 4 and noise.shape[0] == bsz and bsz > 1
        _nchw_bwd[(bsz * c, nblk)](dy, x, y if y is not None else x, s32, nz, dx, px, pb, pn, h * w, c, nblk,
                                   float(gain), LRELU_ALPHA, cl, HAS_NOISE=bool(need[3]), NOISE_BATCHED=batched,
                                   BLOCK=blk, num_warps=max(1, min(4, blk // 256)), **flags)
        ds = px.view(bsz, c, nblk).sum(2)
        db = pb.view(bsz, c, nblk).sum((0, 2)) if need[4] else None
        dst = pn.sum() if need[3] else None
    else:
        bsz, n, c = x.shape
        bn, cp = _bnc_tile(c)
        nblk = triton.cdiv(n, bn)
        px = torch.empty(bsz * nblk * c, device=x.device, dtype=torch.float32)
        pb = torch.empty_like(px) if need[4] else px
        _bnc_bwd[(bsz, nblk)](dy, x, y if y is not None else x, s32, dx, px, pb, n, c, nblk, float(gain),
                              LRELU_ALPHA, cl, BN=bn, CP=cp, num_warps=4, **flags)
        ds = px.view(bsz, nblk, c).sum(1)
        db = pb.view(bsz, nblk, c).sum((0, 1)) if need[4] else None
        dst = None
    return dx, ds, dst, db


def _reference_backward(dy, x, y, s, noise, dim, act, gain, clamp, need):
    """The same gradients with differentiable PyTorch ops (the slope is piecewise constant)."""
    g = dy * _slope(y.detach(), act, gain, clamp) if y is not None else dy * gain
    view = [s.shape[0], s.shape[1], 1, 1] if dim == 1 else [s.shape[0], 1, s.shape[1]]
    red = [2, 3] if dim == 1 else [1]
    dx = g * s.reshape(view).to(g.dtype)
    ds = (g * x).sum(red, dtype=torch.float32)
    db = g.sum([d for d in range(g.ndim) if d != dim], dtype=torch.float32) if need[4] else None
    dst = (g * noise.to(g.dtype)).sum(dtype=torch.float32) if need[3] else None
    return dx, ds, dst, db


def modulate(x: torch.Tensor, s: torch.Tensor, noise: torch.Tensor | None = None,
             strength: torch.Tensor | None = None, bias: torch.Tensor | None = None, dim: int = 1,
             act: str = "linear", gain: float = 1.0, clamp: float | None = None) -> torch.Tensor:
    """``clamp(act(x·s[b, c] + noise·strength + bias[c]) · gain)`` with autograd; the caller checks
    :func:`supports` first.  ``noise`` (``[B, 1, H, W]`` or ``[H, W]``, NCHW only) gets no gradient."""
    if noise is not None and (dim != 1 or strength is None):
        raise ValueError("noise needs the NCHW layout (dim=1) and a strength")
    if strength is not None and noise is None:
        raise ValueError("a noise strength needs the noise it scales")
    return ModulateFunction.apply(x, s, noise, strength, bias, dim, act, gain, clamp)
