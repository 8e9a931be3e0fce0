"""Fused Triton kernel for the squared-Chamfer matrix (CUDA only; imported lazily by ``chamfer.py``).

One program per (generated, reference) pair.  The reference set (``M <= MAX_POINTS`` points, padded to a power
of two) stays in registers with its running per-point minima (the y->x direction); the generated set is streamed
in tiles of ``BLOCK_N`` points, and for each tile the ``[BLOCK_N, BLOCK_M]`` block of squared distances is
computed in registers as ``dx^2 + dy^2 + dz^2`` (no |a|^2 + |b|^2 - 2ab cancellation) and reduced along both
axes: row minima are summed at once (x->y direction), column minima are folded into the running minima.  The
block is never stored.  Result per pair: ``mean_x min_y d + mean_y min_x d``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_POINTS = 4096  # the register-resident side; larger sets fall back to the torch path
_PAD_X = 1.0e18    # padding coordinates: far from everything, finite when squared (~1e36 < fp32 max)
_PAD_Y = -1.0e18


@triton.jit
def _cd_pair_kernel(X, Y, OUT, N, M, R, stride_x, stride_y, stride_og, stride_or, inv_n, inv_m,
                    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    pid = tl.program_id(0)
    gi = pid // R          # consecutive programs share the generated shape (stays in L1/L2)
    rj = pid % R
    xb = X + gi.to(tl.int64) * stride_x   # SoA: [3, N] per shape
    yb = Y + rj.to(tl.int64) * stride_y   # SoA: [3, M] per shape

    offs_m = tl.arange(0, BLOCK_M)
    mm = offs_m < M
    y0 = tl.load(yb + offs_m, mask=mm, other=-1.0e18)
    y1 = tl.load(yb + M + offs_m, mask=mm, other=-1.0e18)
    y2 = tl.load(yb + 2 * M + offs_m, mask=mm, other=-1.0e18)
    colmin = tl.full([BLOCK_M], float("inf"), tl.float32)
    rowacc = tl.zeros([BLOCK_N], tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        nm = offs_n < N
        x0 = tl.load(xb + offs_n, mask=nm, other=1.0e18)
        x1 = tl.load(xb + N + offs_n, mask=nm, other=1.0e18)
        x2 = tl.load(xb + 2 * N + offs_n, mask=nm, other=1.0e18)
        dx = x0[:, None] - y0[None, :]
        dy = x1[:, None] - y1[None, :]
        dz = x2[:, None] - y2[None, :]
        d = dx * dx + dy * dy + dz * dz
        rowacc += tl.where(nm, tl.min(d, axis=1), 0.0)
        colmin = tl.minimum(colmin, tl.min(d, axis=0))
    sx = tl.sum(rowacc, axis=0)
    sy = tl.sum(tl.where(mm, colmin, 0.0), axis=0)
    tl.store(OUT + gi * stride_og + rj * stride_or, sx * inv_n + sy * inv_m)


def default_config(m: int) -> tuple[int, int]:
    """(BLOCK_N, num_warps) for a register-resident side of ``m`` points."""
    block_m = triton.next_power_of_2(max(int(m), 16))
    # H100 sweep at 2,048 points (docs/dev/benchmark-log.md): BLOCK_N=8 / 4 warps best (654k pairs/s) vs 16/8 (557k),
    # 8/8 (596k), 32/8 (554k), 16/16 (436k); i.e. ~128 distances per thread per tile.
    return 8, max(1, min(8, block_m // 512))


def soa(points: torch.Tensor) -> torch.Tensor:
    """``[S, P, 3]`` -> contiguous float32 ``[S, 3, P]``."""
    return points.float().transpose(1, 2).contiguous()


def chamfer_block(x_soa: torch.Tensor, y_soa: torch.Tensor, out: torch.Tensor | None = None,
                  block_n: int | None = None, num_warps: int | None = None) -> torch.Tensor:
    """CD for all pairs of ``x_soa [G,3,N]`` x ``y_soa [R,3,M]`` (CUDA float32, from :func:`soa`) -> ``[G,R]``.

    ``out`` may be a (strided) ``[G, R]`` float32 CUDA view to write into.
    """
    if not (x_soa.is_cuda and y_soa.is_cuda):
        raise ValueError("chamfer_block: inputs must be CUDA tensors")
    if x_soa.dtype != torch.float32 or y_soa.dtype != torch.float32 or x_soa.shape[1] != 3 or y_soa.shape[1] != 3:
        raise ValueError(f"chamfer_block: expected float32 [S,3,P] inputs, got {x_soa.dtype} {tuple(x_soa.shape)}"
                         f" and {y_soa.dtype} {tuple(y_soa.shape)}")
    x_soa, y_soa = x_soa.contiguous(), y_soa.contiguous()
    G, _, N = x_soa.shape
    R, _, M = y_soa.shape
    if M > MAX_POINTS:
        raise ValueError(f"chamfer_block: reference side has {M} points > MAX_POINTS={MAX_POINTS}")
    if N == 0 or M == 0:
        raise ValueError("chamfer_block: empty point sets")
    if out is None:
        out = torch.empty(G, R, device=x_soa.device, dtype=torch.float32)
    if G == 0 or R == 0:
        return out
    bn, nw = default_config(M)
    bn = block_n or bn
    nw = num_warps or nw
    block_m = triton.next_power_of_2(max(M, 16))
    grid = (G * R,)
    _cd_pair_kernel[grid](x_soa, y_soa, out, N, M, R, x_soa.stride(0), y_soa.stride(0), out.stride(0),
                          out.stride(1), 1.0 / N, 1.0 / M, BLOCK_N=bn, BLOCK_M=block_m, num_warps=nw)
    return out
