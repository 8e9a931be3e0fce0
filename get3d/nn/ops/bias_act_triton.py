"""Fused ``bias + activation + gain + clamp`` as one Triton kernel each way (CUDA only; imported lazily).

The reference (:func:`get3d.nn.layers.bias_act_ref`) runs four elementwise kernels forward and five backward,
and autograd keeps the pre-activation *and* the activation alive.  Here the forward reads ``x`` once and
writes ``y``; only ``y`` is saved, because for the piecewise-linear activations the local slope follows from
the output alone (``y > 0`` ⇔ the pre-activation is positive, ``|y| < clamp`` ⇔ not clamped).  The backward
reads ``dy`` and ``y`` and writes ``dx``; the bias gradient (``dx`` summed over the other dimensions) is summed in
the same kernel into per-program partials where the layout allows, else by a separate reduction.

Under ``create_graph`` (R1's double backward) the backward is written with ordinary differentiable ops on
``dy`` (the slope is piecewise constant, so its own derivative is zero), so any order of derivative works.

Works on any *dense* layout (NCHW, channels-last, [B, N, C]): the channel of the element at memory offset
``o`` is ``(o // stride(dim)) % size(dim)``; ``y`` and ``dx`` are allocated with ``x``'s strides.  With the
channel innermost and a power-of-two channel count (the discriminators' fp16 blocks) it is ``o & (C - 1)``: a
64-bit modulo by a runtime value costs dozens of instructions per element there.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

ACT_CODES = {"linear": 0, "lrelu": 1, "relu": 2}
LRELU_ALPHA = 0.2
BLOCK = 1024
DB_ITERS = 8  # blocks per program when the bias gradient is fused (fewer partial sums)
#: Warps per program of the forward kernels (bias_act forward, inference epilogue) for float32 and for half
#: precision, and of the backward.  H100, ``bench/bias_act_kernels.py``: 8 warps (with the mask index) take the
#: half-precision forward to 0.52–0.74× at the discriminators' 1024² and 512² fp16 layers (four runs, two
#: machines); for float32 NCHW the runs disagreed, so it keeps 4; the backward is best at 4 except at 1024².
FWD_WARPS = 4
FWD_WARPS_HALF = 8
BWD_WARPS = 4


def _fwd_warps(x: torch.Tensor) -> int:
    return FWD_WARPS_HALF if x.element_size() == 2 else FWD_WARPS


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


@triton.jit
def _grad_through_act(dy, y, gain, alpha, clamp, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr):
    """Upstream gradient times the slope of :func:`_act_gain_clamp`, found from its output ``y``."""
    g = dy * gain
    if ACT == 1:
        g = tl.where(y > 0, g, g * alpha)
    if ACT == 2:
        g = tl.where(y > 0, g, 0.0)
    if HAS_CLAMP:
        g = tl.where((y > -clamp) & (y < clamp), g, 0.0)
    return g


@triton.jit(do_not_specialize=["N"])
def _fwd_kernel(X, B, Y, N, C, S, gain, alpha, clamp, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                HAS_CLAMP: tl.constexpr, MASK: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    x = tl.load(X + offs, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        if MASK:  # channel innermost (S == 1), C a power of two
            c = offs & (C - 1)
        else:
            c = (offs // S) % C
        x += tl.load(B + c, mask=m, other=0.0).to(tl.float32)
    tl.store(Y + offs, _act_gain_clamp(x, gain, alpha, clamp, ACT, HAS_CLAMP).to(Y.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=["N"])
def _bwd_kernel(DY, Y, DX, DB, N, gain, alpha, clamp, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr,
                BLOCK: tl.constexpr, ITERS: tl.constexpr, DB_MODE: tl.constexpr, C: tl.constexpr):
    """``ITERS`` blocks of ``dx`` per program.  ``DB_MODE`` 1: the channel is the innermost axis (stride 1, ``C``
    divides ``BLOCK``): the program's per-channel sums go to ``DB[pid, :C]``; 2: every element of the program is in
    one channel (its stride is a multiple of ``ITERS * BLOCK``): their sum goes to ``DB[pid]``; 0: no bias grad."""
    pid = tl.program_id(0).to(tl.int64)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for it in tl.static_range(ITERS):
        offs = (pid * ITERS + it) * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        dy = tl.load(DY + offs, mask=m, other=0.0).to(tl.float32)
        y = tl.load(Y + offs, mask=m, other=0.0).to(tl.float32)
        g = _grad_through_act(dy, y, gain, alpha, clamp, ACT, HAS_CLAMP).to(DX.dtype.element_ty)
        tl.store(DX + offs, g, mask=m)
        if DB_MODE != 0:
            acc += g.to(tl.float32)
    if DB_MODE == 1:  # element i of every block is in channel i % C: one reshape (a shared-memory shuffle), not one per block
        tl.store(DB + pid * C + tl.arange(0, C), tl.sum(tl.reshape(acc, [BLOCK // C, C]), axis=0))
    if DB_MODE == 2:
        tl.store(DB + pid, tl.sum(acc, axis=0))


def _db_plan(y: torch.Tensor, dim: int) -> tuple[int, int]:
    """(DB_MODE, ITERS) of :func:`_bwd_kernel` for the bias gradient of ``y`` along ``dim`` (mode 0: a separate
    reduction).  Fusing it saves a full read of ``dx``: the backward takes 0.57–0.65× the time at the paper
    discriminators' fp16 channels-last shapes, 0.81× on a float32 NCHW layer (H100)."""
    c, s = y.shape[dim], y.stride(dim)
    if s == 1 and c <= BLOCK and BLOCK % c == 0 and c & (c - 1) == 0:
        return 1, DB_ITERS
    for iters in (DB_ITERS, 4, 2, 1):
        if s % (iters * BLOCK) == 0:
            return 2, iters
    return 0, 1


def mask_index(c: int, s: int) -> bool:
    """Whether the forward finds the channel as ``offset & (c - 1)``."""
    return s == 1 and c & (c - 1) == 0


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
        c, s = x.shape[dim], x.stride(dim)
        _fwd_kernel[_grid(n)](x, bias, y, n, c, s, float(gain), LRELU_ALPHA,
                              float(clamp) if clamp is not None else 0.0, HAS_BIAS=b is not None,
                              ACT=ACT_CODES[act], HAS_CLAMP=clamp is not None, MASK=mask_index(c, s),
                              BLOCK=BLOCK, num_warps=_fwd_warps(x))
        need_y = act != "linear" or clamp is not None
        ctx.save_for_backward(y if need_y else None)
        ctx.meta = (dim, act, float(gain), clamp, x.ndim, b is not None and b.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dim, act, gain, clamp, ndim, b_dtype = ctx.meta
        db = None
        if y is None:
            dx = dy * gain if gain != 1 else dy
        elif torch.is_grad_enabled():
            dx = dy * _slope(y.detach(), act, gain, clamp)
        else:
            dx, db = _backward_kernel(dy, y, dim, act, gain, clamp, ctx.needs_input_grad[1])
        if ctx.needs_input_grad[1] and db is None:
            dims = [d for d in range(ndim) if d != dim]
            db = dx.sum(dim=dims, dtype=torch.float32) if dims else dx.float()
        return (dx if ctx.needs_input_grad[0] else None), (db.to(b_dtype) if db is not None else None), \
            None, None, None, None


def _backward_kernel(dy, y, dim: int, act: str, gain: float, clamp, want_db: bool):
    """``dx`` and, where :func:`_db_plan` finds a layout for it, the float32 bias gradient (else ``None``)."""
    if dy.stride() != y.stride():
        dy = torch.empty_like(y).copy_(dy)
    dx = torch.empty_like(y)
    n, c = y.numel(), y.shape[dim]
    mode, iters = _db_plan(y, dim) if want_db else (0, 1)
    progs = triton.cdiv(n, BLOCK * iters)
    part = torch.empty(progs * (c if mode == 1 else 1), device=y.device, dtype=torch.float32) if mode else dx
    _bwd_kernel[(progs,)](dy, y, dx, part, n, gain, LRELU_ALPHA, float(clamp) if clamp is not None else 0.0,
                          ACT=ACT_CODES[act], HAS_CLAMP=clamp is not None, BLOCK=BLOCK, ITERS=iters,
                          DB_MODE=mode, C=c if mode == 1 else 1, num_warps=BWD_WARPS)
    if mode == 1:  # partial sums [program, channel]
        return dx, part.view(-1, c).sum(0)
    if mode == 2:  # one partial sum per program; programs run over (outer, channel, inner) in memory order
        return dx, part.view(-1, c, y.stride(dim) // (BLOCK * iters)).sum((0, 2))
    return dx, None


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
                               and bsz > 1, ACT=ACT_CODES[act], HAS_CLAMP=clamp is not None, BLOCK=BLOCK,
                               num_warps=_fwd_warps(x))
    return y

