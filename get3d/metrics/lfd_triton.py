"""One sweep of the LFD outside-region flood fill as a single Triton kernel (CUDA only; imported lazily by
``lfd.py``).

:func:`get3d.metrics.lfd._sweep` grows the region along one axis over whole runs of free pixels: a prefix max of
run ids forward, a prefix min backward, compared with the pixel's run id.  In PyTorch that is eleven passes over
the ``[N, 256, 256]`` stack (two ``where``, a ``cummax``, a ``cummin`` between two ``flip``\\ s, comparisons, the
logic), and PyTorch's scan kernels are slow along either axis: 16 scans were a third of the GPU time of LFD
descriptor extraction at batch 64 (H100).  Here each program loads a ``[L, B]`` tile (the whole scanned line for
``B`` neighbouring lines), runs both scans in registers (``tl.associative_scan``) and writes the grown region once.
Selected by ``get3d.metrics.lfd.SWEEP_KERNEL = "triton"`` (off by default until measured on a GPU).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_LINES = 16
_BIG = 1 << 30


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.jit
def _min_combine(a, b):
    return tl.minimum(a, b)


@triton.jit
def _sweep_kernel(OUT, RUN, FREE, NEW, PLANE, S_SCAN, S_LINE, N_LINES, L: tl.constexpr, B: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    li = tl.arange(0, L)
    oi = tl.program_id(1) * B + tl.arange(0, B)
    m = (li[:, None] < L) & (oi[None, :] < N_LINES)
    offs = n * PLANE + li[:, None] * S_SCAN + oi[None, :] * S_LINE
    out = tl.load(OUT + offs, mask=m, other=0) != 0
    run = tl.load(RUN + offs, mask=m, other=0).to(tl.int32)
    free = tl.load(FREE + offs, mask=m, other=0) != 0
    fwd = tl.associative_scan(tl.where(out, run, -1), 0, _max_combine) == run
    bwd = tl.associative_scan(tl.where(out, run, _BIG), 0, _min_combine, reverse=True) == run
    new = out | (free & (fwd | bwd))
    tl.store(NEW + offs, new.to(tl.uint8), mask=m)


def supports(out: torch.Tensor, dim: int) -> bool:
    length = out.shape[dim]
    return out.is_cuda and out.ndim == 3 and dim in (1, 2) and length & (length - 1) == 0 and length <= 1024


def sweep(out: torch.Tensor, run: torch.Tensor, free: torch.Tensor, dim: int) -> torch.Tensor:
    """:func:`get3d.metrics.lfd._sweep` (same result): ``out``/``free`` bool ``[N, H, W]``, ``run`` integer run
    ids non-decreasing along ``dim`` (1: columns, 2: rows)."""
    n, h, w = out.shape
    out, run, free = out.contiguous(), run.contiguous(), free.contiguous()
    new = torch.empty_like(out)
    length, lines = (h, w) if dim == 1 else (w, h)
    s_scan, s_line = (w, 1) if dim == 1 else (1, w)
    if n:
        _sweep_kernel[(n, triton.cdiv(lines, BLOCK_LINES))](
            out.view(torch.uint8), run, free.view(torch.uint8), new.view(torch.uint8), h * w, s_scan, s_line, lines,
            L=length, B=BLOCK_LINES)
    return new
