"""FIR upsampling ×2 with a 4-tap separable filter (StyleGAN's ``[1, 3, 3, 1]``) as one Triton kernel each way.

The reference (:func:`get3d.nn.layers.upfirdn2d_ref`) inserts zeros (a copy to the 4×-larger grid), pads (another
copy) and runs two depthwise convolutions over the large grid: 32 of the ~160 GPU-ms of a 32-image generator
forward at the paper config (H100).  Here every output pixel reads its 2×2 input neighbours and is written once.

Per axis, with ``g = filter · 2`` (DC gain of the ×2 upsampling) and zero outside the input,
``out[o] = Σ_q g[o − 2q + 1] · x[q]`` over the taps ``0 ≤ o − 2q + 1 < 4`` (the same function as zero insertion,
padding (2, 1) and the flipped filter).  The adjoint, ``dx[q] = Σ_k g[k] · dy[2q − 1 + k]``, is the backward; each
direction's backward is the other, so derivatives of any order work.  The filter stays a device tensor read by the
kernel (no host sync, CUDA-graph safe).  Inputs are NCHW (other layouts are made contiguous first).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _up_kernel(X, F, Y, N, H, W, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    W2 = 2 * W
    ox = offs % W2
    t = offs // W2
    oy = t % (2 * H)
    base = (t // (2 * H)) * H * W
    # the two input rows / columns an output pixel reads: q0 = (o - 1) // 2 and q0 + 1, taps k = o - 2q + 1
    qy0 = (oy + 1) // 2 - 1
    qx0 = (ox + 1) // 2 - 1
    ky0 = oy - 2 * qy0 + 1  # 3 (even o) or 2 (odd o)
    kx0 = ox - 2 * qx0 + 1
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for dy in tl.static_range(2):
        qy = qy0 + dy
        gy = tl.load(F + ky0 - 2 * dy, mask=m, other=0.0) * 2.0
        my = m & (qy >= 0) & (qy < H)
        for dx in tl.static_range(2):
            qx = qx0 + dx
            gx = tl.load(F + kx0 - 2 * dx, mask=m, other=0.0) * 2.0
            mm = my & (qx >= 0) & (qx < W)
            v = tl.load(X + base + qy * W + qx, mask=mm, other=0.0).to(tl.float32)
            acc += gy * gx * v
    tl.store(Y + offs, acc.to(Y.dtype.element_ty), mask=m)


@triton.jit
def _up_adjoint_kernel(DY, F, DX, N, H, W, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    qx = offs % W
    t = offs // W
    qy = t % H
    W2 = 2 * W
    base = (t // H) * (2 * H) * W2
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for ky in tl.static_range(4):
        oy = 2 * qy - 1 + ky
        gy = tl.load(F + ky) * 2.0
        my = m & (oy >= 0) & (oy < 2 * H)
        for kx in tl.static_range(4):
            ox = 2 * qx - 1 + kx
            gx = tl.load(F + kx) * 2.0
            mm = my & (ox >= 0) & (ox < W2)
            v = tl.load(DY + base + oy * W2 + ox, mask=mm, other=0.0).to(tl.float32)
            acc += gy * gx * v
    tl.store(DX + offs, acc.to(DX.dtype.element_ty), mask=m)


def supports(x: torch.Tensor, f: torch.Tensor, up: int) -> bool:
    return (x.is_cuda and x.ndim == 4 and up == 2 and f.ndim == 1 and f.shape[0] == 4
            and x.dtype in (torch.float32, torch.float16, torch.bfloat16) and x.numel() > 0)


def _launch(kernel, src: torch.Tensor, f: torch.Tensor, shape, h: int, w: int) -> torch.Tensor:
    src = src.contiguous()
    out = torch.empty(shape, device=src.device, dtype=src.dtype)
    n = out.numel()
    kernel[(triton.cdiv(n, BLOCK),)](src, f, out, n, h, w, BLOCK=BLOCK)
    return out


class Upsample2x(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f):
        ctx.save_for_backward(f)
        b, c, h, w = x.shape
        return _launch(_up_kernel, x, f, (b, c, 2 * h, 2 * w), h, w)

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        return Upsample2xAdjoint.apply(dy, f), None


class Upsample2xAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, f):
        ctx.save_for_backward(f)
        b, c, h2, w2 = dy.shape
        return _launch(_up_adjoint_kernel, dy, f, (b, c, h2 // 2, w2 // 2), h2 // 2, w2 // 2)

    @staticmethod
    def backward(ctx, ddx):
        (f,) = ctx.saved_tensors
        return Upsample2x.apply(ddx, f), None


def upsample2x(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """:func:`get3d.nn.layers.upsample2d` (``up=2``) for a 4-tap 1-D filter ``f`` (normalised, as setup_filter
    returns it); the caller checks :func:`supports`."""
    return Upsample2x.apply(x, f.to(device=x.device, dtype=torch.float32).contiguous())
