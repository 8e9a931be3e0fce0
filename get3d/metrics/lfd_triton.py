"""One sweep of the LFD outside-region flood fill in Triton (CUDA only; imported lazily by ``lfd.py``).

:func:`get3d.metrics.lfd.fast._sweep` grows the region along one axis over whole runs of free pixels: a pixel joins
when its run (free pixels between two blocked ones, identified by a run id that is non-decreasing along the axis)
holds a region pixel before it (a prefix max of run ids) or after it (a reverse prefix min).  In PyTorch that is
eleven passes over the ``[N, 256, 256]`` stack (two ``where``, a ``cummax``, a ``cummin`` between two ``flip``\\ s,
comparisons, the logic), and PyTorch's scan kernels are slow along either axis: 16 scans were a third of the GPU
time of LFD descriptor extraction at batch 64 (H100).

Here each program loads a ``[B, L]`` tile (``B`` neighbouring lines, each whole along the scanned axis), scans it
in registers along its last axis (``tl.associative_scan``) and writes the grown tile once.  Two launches per sweep:
the forward direction, then the backward one on the forward result, read through *reversed* offsets so that it
too is a forward scan — Triton's ``associative_scan(..., reverse=True)`` gives wrong results on the GPU
(triton-lang/triton#4362) although its CPU interpreter is right.  Growing from the forward result instead of the
original region does not change the answer: every pixel the forward pass added lies in a run that already holds
a region pixel.  Selected by ``perf.lfd_sweep: triton`` (params.yaml).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_LINES = 16
_BIG = tl.constexpr(1 << 30)  # a Triton global must be a constexpr (the interpreter does not check)


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.jit
def _min_combine(a, b):
    return tl.minimum(a, b)


@triton.jit
def _sweep_kernel(OUT, RUN, FREE, NEW, PLANE, S_SCAN, S_LINE, N_LINES, L: tl.constexpr, B: tl.constexpr,
                  REVERSE: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    oi = tl.program_id(1) * B + tl.arange(0, B)
    li = tl.arange(0, L)
    if REVERSE:
        li = L - 1 - li
    m = (oi[:, None] < N_LINES) & (li[None, :] < L)
    offs = n * PLANE + oi[:, None] * S_LINE + li[None, :] * S_SCAN
    out = tl.load(OUT + offs, mask=m, other=0) != 0
    run = tl.load(RUN + offs, mask=m, other=0).to(tl.int32)
    free = tl.load(FREE + offs, mask=m, other=0) != 0
    if REVERSE:  # run ids are non-increasing in this order: a prefix min finds a region pixel of the same run
        hit = tl.associative_scan(tl.where(out, run, _BIG), 1, _min_combine) == run
    else:
        hit = tl.associative_scan(tl.where(out, run, -1), 1, _max_combine) == run
    tl.store(NEW + offs, (out | (free & hit)).to(tl.uint8), mask=m)


def supports(out: torch.Tensor, dim: int) -> bool:
    length = out.shape[dim]
    return out.is_cuda and out.ndim == 3 and dim in (1, 2) and length & (length - 1) == 0 and length <= 1024


def sweep(out: torch.Tensor, run: torch.Tensor, free: torch.Tensor, dim: int) -> torch.Tensor:
    """:func:`get3d.metrics.lfd.fast._sweep` (same result): ``out``/``free`` bool ``[N, H, W]``, ``run`` integer run
    ids non-decreasing along ``dim`` (1: columns, 2: rows)."""
    n, h, w = out.shape
    out, run, free = out.contiguous(), run.contiguous(), free.contiguous()
    length, lines = (h, w) if dim == 1 else (w, h)
    s_scan, s_line = (w, 1) if dim == 1 else (1, w)
    if not n:
        return out.clone()
    grid = (n, triton.cdiv(lines, BLOCK_LINES))
    fwd = torch.empty_like(out)
    new = torch.empty_like(out)
    for src, dst, reverse in ((out, fwd, False), (fwd, new, True)):
        _sweep_kernel[grid](src.view(torch.uint8), run, free.view(torch.uint8), dst.view(torch.uint8), h * w,
                            s_scan, s_line, lines, L=length, B=BLOCK_LINES, REVERSE=reverse)
    return new
