"""A chain of small modulated fully connected layers (the tri-plane point decoders) as one Triton kernel, for
inference (no autograd).

Per layer the reference runs four passes over the points (styles × input, shared GEMM, demodulation,
bias + activation), each writing a ``[B, N, 32]`` float32 tensor: at fid50k's 1024² that is ~10 M texture queries
per 32-image batch and 33 of ~120 GPU-ms (H100).  Here each program takes a block of one sample's points, keeps
the activations in registers through every layer and writes only the last layer's output.  The styles and the
demodulation are folded into per-sample weights first (``[B, O, I]``, tiny).  The matrix products' precision is
``perf.point_mlp_precision``: ``"tf32x3"`` (default) splits each operand into a TF32 high and low part and sums three
tensor-core products, float32-level error; ``"ieee"`` is plain float32 on the CUDA cores, which made this kernel
a fifth of the fid50k generator pass (fid50k 180.7 → 152.7 s on an H100, FID between the two on the same 512
samples 0.0004; docs/performance.md); ``"tf32"`` rounds operands to 10 mantissa bits (FID shift 0.56).

Layer widths up to :data:`MAX_WIDTH`; 1 to 3 layers (the decoders in get3d.nn.decoders have 2 or 3).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from get3d import perf

ACT_CODES = {"linear": 0, "lrelu": 1}
LRELU_ALPHA = 0.2
MAX_WIDTH = 64
#: Points per program and warps per program.
BLOCK = 64
NUM_WARPS = 4


@triton.jit
def _layer(h, W, Bias, b, K: tl.constexpr, KP: tl.constexpr, O: tl.constexpr, OP: tl.constexpr,
           ACT: tl.constexpr, gain, alpha, PREC: tl.constexpr):
    """h [BLOCK, KP] (zero beyond K) → act(h · W[b]ᵀ + bias) · gain, [BLOCK, OP] (zero beyond O)."""
    ki = tl.arange(0, KP)
    oi = tl.arange(0, OP)
    wmask = (ki[:, None] < K) & (oi[None, :] < O)
    wt = tl.load(W + b * O * K + oi[None, :] * K + ki[:, None], mask=wmask, other=0.0)  # [KP, OP] = W[b]ᵀ
    y = tl.dot(h, wt, input_precision=PREC)
    y += tl.load(Bias + oi, mask=oi < O, other=0.0)[None, :]
    if ACT == 1:
        y = tl.where(y > 0, y, y * alpha)
    y = y * gain
    return tl.where((oi < O)[None, :], y, 0.0)


@triton.jit(do_not_specialize=["N"])
def _chain_kernel(X, Y, N, W0, B0, W1, B1, W2, B2, g0, g1, g2, alpha,
                  D0: tl.constexpr, P0: tl.constexpr, D1: tl.constexpr, P1: tl.constexpr,
                  D2: tl.constexpr, P2: tl.constexpr, D3: tl.constexpr, P3: tl.constexpr,
                  A0: tl.constexpr, A1: tl.constexpr, A2: tl.constexpr, LAYERS: tl.constexpr,
                  DO: tl.constexpr, PO: tl.constexpr, BLOCK: tl.constexpr, PREC: tl.constexpr):
    b = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    rm = rows < N
    base = b.to(tl.int64) * N + rows
    ci = tl.arange(0, P0)
    h = tl.load(X + base[:, None] * D0 + ci[None, :], mask=rm[:, None] & (ci[None, :] < D0), other=0.0)
    h = _layer(h, W0, B0, b, D0, P0, D1, P1, A0, g0, alpha, PREC)
    if LAYERS >= 2:
        h = _layer(h, W1, B1, b, D1, P1, D2, P2, A1, g1, alpha, PREC)
    if LAYERS >= 3:
        h = _layer(h, W2, B2, b, D2, P2, D3, P3, A2, g2, alpha, PREC)
    oi = tl.arange(0, PO)
    tl.store(Y + base[:, None] * DO + oi[None, :], h, mask=rm[:, None] & (oi[None, :] < DO))


def _pad(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _dot_precision(x: torch.Tensor) -> str:
    """``perf.point_mlp_precision`` (tl.dot's ``input_precision``), or ``"ieee"`` on GPUs without TF32 tensor
    cores (before Ampere)."""
    precision = perf.active().point_mlp_precision
    if precision != "ieee" and x.device.type == "cuda" and torch.cuda.get_device_capability(x.device)[0] < 8:
        return "ieee"
    return precision


def supports(x: torch.Tensor, widths: list[int], acts: list[str]) -> bool:
    return (x.is_cuda and x.ndim == 3 and x.dtype == torch.float32 and 1 <= len(widths) - 1 <= 3
            and max(widths) <= MAX_WIDTH and all(a in ACT_CODES for a in acts) and x.shape[1] > 0)


def modulated_chain(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], acts: list[str],
                    gains: list[float]) -> torch.Tensor:
    """``x`` [B, N, D0]; ``weights[l]`` per-sample folded weights [B, D(l+1), D(l)] (styles and demodulation
    applied); → [B, N, D_last] = the layers applied in order (``act((h · Wᵀ) + b) · gain``).  Forward only."""
    bsz, n, _ = x.shape
    dims = [x.shape[2]] + [int(w.shape[1]) for w in weights]
    x = x.contiguous()
    y = torch.empty(bsz, n, dims[-1], device=x.device, dtype=torch.float32)
    ws = [w.to(torch.float32).contiguous() for w in weights]
    bs = [b.to(torch.float32).contiguous() for b in biases]
    layers, d_out = len(ws), dims[-1]
    pad = 3 - layers  # unused layer slots (pruned at compile time by LAYERS)
    ws, bs = ws + [ws[0]] * pad, bs + [bs[0]] * pad
    acts, gains = [*acts] + ["linear"] * pad, [*gains] + [1.0] * pad
    dims = dims + [d_out] * pad
    _chain_kernel[(bsz, triton.cdiv(n, BLOCK))](
        x, y, n, ws[0], bs[0], ws[1], bs[1], ws[2], bs[2], float(gains[0]), float(gains[1]), float(gains[2]),
        LRELU_ALPHA, D0=dims[0], P0=_pad(dims[0]), D1=dims[1], P1=_pad(dims[1]), D2=dims[2], P2=_pad(dims[2]),
        D3=dims[3], P3=_pad(dims[3]), A0=ACT_CODES[acts[0]], A1=ACT_CODES[acts[1]], A2=ACT_CODES[acts[2]],
        LAYERS=layers, DO=d_out, PO=_pad(d_out), BLOCK=BLOCK, PREC=_dot_precision(x), num_warps=NUM_WARPS)
    return y
