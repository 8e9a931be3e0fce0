"""``upfirdn2d`` with a separable filter (StyleGAN's ``[1, 3, 3, 1]`` blur) as one Triton kernel, CUDA.

The discriminators blur before every stride-2 convolution and downsample their skip paths with the same FIR.
PyTorch runs the blur as a depthwise convolution, whose channels-last half-precision kernel is many times slower
than the memory traffic it needs; folding the blur into the stride-2 convolution (``perf.fold_downsample_conv``)
avoids it but makes that convolution 6×6 instead of 3×3 (4× its FLOPs).  Here each output element is written once,
in any dense layout (tiles × channels; channels-last keeps the channel loads contiguous).  Without upsampling (the
D's blur and downsampling, and their backward when ``down`` is 1) a program filters each input row of a tile of
output rows once and adds it to the rows it reaches; with ``up == 2`` every output element reads its ``taps²``
neighbours of the (virtually) zero-inserted, padded input.

Per axis: ``out[o] = Σ_k g[k] · xu[o·down + k − p0]`` with ``g`` the filter in correlation order (read
backwards unless ``flip_filter``) times ``√gain``, and ``xu[t] = x[t / up]`` where ``up`` divides ``t`` (zero
elsewhere and outside).
The backward is the same operation with ``up`` and ``down`` swapped, the filter flipped and the padding
transposed, so derivatives of any order work (R1's double backward included).

:func:`bias_act_blur` is the blur of a convolution's output with that convolution's bias/activation applied as the
row kernel loads it (``perf.fused_blur_epilogue``): the activated tensor is never written, and the backward
applies the activation's slope and sums the bias gradient in the transposed blur's pass.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from get3d.nn.layers import bias_act_ref
from get3d.nn.ops.bias_act_triton import (
    ACT_CODES,
    LRELU_ALPHA,
    _act_gain_clamp,
    _grad_through_act,
    _slope,
    is_dense,
)


@triton.jit
def _axis_tap(o, k, p0, size, UP: tl.constexpr, DOWN: tl.constexpr):
    """Input index and validity of tap ``k`` for output index ``o`` along one axis."""
    t = o * DOWN + k - p0
    tc = tl.maximum(t, 0)
    if UP == 1:
        return tc, (t >= 0) & (t < size)
    return tc // UP, (t >= 0) & (tc % UP == 0) & (tc // UP < size)


@triton.jit
def _tap(F, k: tl.constexpr, TAPS: tl.constexpr, FLIP: tl.constexpr):
    """Weight of tap ``k`` in correlation order: the filter read backwards unless ``flip_filter``."""
    if FLIP:
        return tl.load(F + (TAPS - 1 - k)).to(tl.float32)
    return tl.load(F + k).to(tl.float32)


@triton.jit(do_not_specialize=["NP", "OH", "OW", "H", "W"])
def _fir_kernel(X, F, Y, NP, C, OH, OW, H, W, sxb, sxc, sxh, sxw, syb, syc, syh, syw, px0, py0, axis_gain,
                TAPS: tl.constexpr, FLIP: tl.constexpr, UP: tl.constexpr, DOWN: tl.constexpr, BP: tl.constexpr,
                BC: tl.constexpr):
    p = tl.program_id(0).to(tl.int64) * BP + tl.arange(0, BP)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    pm = p < NP
    cm = c < C
    ox = p % OW
    t = p // OW
    oy = t % OH
    b = t // OH
    xc = X + b[:, None] * sxb + c[None, :].to(tl.int64) * sxc
    acc = tl.zeros([BP, BC], dtype=tl.float32)
    for ky in tl.static_range(TAPS):
        iy, vy = _axis_tap(oy, ky, py0, H, UP, DOWN)
        gy = _tap(F, ky, TAPS, FLIP) * axis_gain
        for kx in tl.static_range(TAPS):
            ix, vx = _axis_tap(ox, kx, px0, W, UP, DOWN)
            m = (pm & vy & vx)[:, None] & cm[None, :]
            v = tl.load(xc + (iy * sxh + ix * sxw)[:, None], mask=m, other=0.0).to(tl.float32)
            acc += v * (gy * _tap(F, kx, TAPS, FLIP) * axis_gain)
    yo = Y + b[:, None] * syb + c[None, :].to(tl.int64) * syc + (oy * syh + ox * syw)[:, None]
    tl.store(yo, acc.to(Y.dtype.element_ty), mask=pm[:, None] & cm[None, :])


@triton.jit
def _tap_vec(F, k, TAPS: tl.constexpr, FLIP: tl.constexpr):
    """:func:`_tap` for a vector of tap indices, 0 where ``k`` is outside the filter."""
    ok = (k >= 0) & (k < TAPS)
    idx = TAPS - 1 - k if FLIP else k
    return tl.load(F + tl.where(ok, idx, 0), mask=ok, other=0.0).to(tl.float32)


@triton.jit(do_not_specialize=["OH", "OW", "H", "W", "NTY", "NTX"])
def _fir_rows_kernel(X, F, Y, C, OH, OW, H, W, NTY, NTX, sxb, sxc, sxh, sxw, syb, syc, syh, syw, px0, py0,
                     axis_gain, TAPS: tl.constexpr, FLIP: tl.constexpr, DOWN: tl.constexpr, TH: tl.constexpr,
                     TW: tl.constexpr, BC: tl.constexpr, B, HP, DB, act_gain, alpha, clamp, PRE: tl.constexpr,
                     POST: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr):
    """``up == 1``: a tile of ``TH`` output rows × ``TW`` pixels × ``BC`` channels.  Each of the tile's
    ``(TH − 1)·DOWN + TAPS`` input rows is filtered horizontally once (``TAPS`` loads) and added to every output row
    it reaches, so an output element costs ``≈ TAPS·(1 + (TAPS − 1)/TH)`` loads instead of ``TAPS²``.

    ``PRE``: the input is a pre-activation; each loaded value becomes ``clamp(act(x + B[c])·act_gain)`` (zero
    outside the input, as padding of the activation).  ``POST`` (a backward with ``X`` the upstream gradient):
    each output is multiplied by the slope of that activation at the pre-activation ``HP`` (laid out like ``Y``),
    and the program's per-channel sums of the result go to ``DB[program, :]`` (the bias gradient's partials)."""
    pid = tl.program_id(0)
    tx = pid % NTX
    t = pid // NTX
    ty = (t % NTY).to(tl.int64)
    b = (t // NTY).to(tl.int64)
    ox = tx * TW + tl.arange(0, TW)
    r = tl.arange(0, TH)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = c < C
    xm = ox < OW
    xc = X + b * sxb + c[None, :].to(tl.int64) * sxc
    if PRE or POST:
        bias = tl.load(B + c, mask=cm, other=0.0).to(tl.float32)
    acc = tl.zeros([TH, TW, BC], dtype=tl.float32)
    for j in tl.static_range((TH - 1) * DOWN + TAPS):
        iy = ty * TH * DOWN - py0 + j + 0 * ox  # as a vector: a scalar mask term breaks Triton's interpreter
        row_ok = (iy >= 0) & (iy < H)
        h = tl.zeros([TW, BC], dtype=tl.float32)
        for kx in tl.static_range(TAPS):
            ix = ox * DOWN + kx - px0
            m = (xm & (ix >= 0) & (ix < W) & row_ok)[:, None] & cm[None, :]
            v = tl.load(xc + (iy * sxh + ix * sxw)[:, None], mask=m, other=0.0).to(tl.float32)
            if PRE:
                v = tl.where(m, _act_gain_clamp(v + bias[None, :], act_gain, alpha, clamp, ACT, HAS_CLAMP), 0.0)
            h += v * (_tap(F, kx, TAPS, FLIP) * axis_gain)
        wy = _tap_vec(F, j - r * DOWN, TAPS, FLIP) * axis_gain  # this input row's weight in each output row
        acc += wy[:, None, None] * h[None, :, :]
    oy = ty * TH + r
    om = (oy < OH)[:, None, None] & xm[None, :, None] & cm[None, None, :]
    yoff = b * syb + c[None, None, :].to(tl.int64) * syc + (oy[:, None, None] * syh + ox[None, :, None] * syw)
    if POST:
        pre = tl.load(HP + yoff, mask=om, other=0.0).to(tl.float32) + bias[None, None, :]
        y0 = _act_gain_clamp(pre, act_gain, alpha, clamp, ACT, HAS_CLAMP)
        acc = tl.where(om, _grad_through_act(acc, y0, act_gain, alpha, clamp, ACT, HAS_CLAMP), 0.0)
        tl.store(DB + pid.to(tl.int64) * C + c, tl.sum(tl.sum(acc, 0), 0), mask=cm)
    tl.store(Y + yoff, acc.to(Y.dtype.element_ty), mask=om)


#: Output rows × pixels per program of :func:`_fir_rows_kernel` (× up to 64 channels), and its warps: of the 2/4/8 ×
#: 16/32/64 × 4/8 sweep of ``bench/fir_kernel.py`` on an H100 the fastest or within 5 % of it at every fp16 D shape
#: (the 1024² blur 0.75 ms against 0.97 for the flat kernel's best tile).
ROWS_PER_PROGRAM = 2
ROW_PIXELS = 32
ROW_WARPS = 4

#: The row kernel's arguments for a plain filter (no activation before or slope after).
_NO_ACT = {"act_gain": 1.0, "alpha": 0.0, "clamp": 0.0, "PRE": False, "POST": False, "ACT": 0, "HAS_CLAMP": False}

#: Pixels per program (× ``BC`` channels) and warps of :func:`_fir_kernel` (``up == 2``): the fastest of 32/64/128 ×
#: 4/8 at every fp16 D shape on an H100 (down 1 and 2): 32 pixels, 4 warps up to 32 channels, 8 for wider ones.
PIXELS_PER_PROGRAM = 32


def _warps(bc: int) -> int:
    return 4 if bc <= 32 else 8


def supports(x: torch.Tensor, f: torch.Tensor, up: int, down: int) -> bool:
    return (x.is_cuda and x.ndim == 4 and f.ndim == 1 and up in (1, 2) and down in (1, 2) and x.numel() > 0
            and x.dtype in (torch.float32, torch.float16, torch.bfloat16))


def _output(x: torch.Tensor, taps: int, up: int, down: int, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """The (uninitialised) result of filtering ``x``: its size from ``up``, ``down`` and ``pad``, ``x``'s layout."""
    px0, px1, py0, py1 = pad
    oh = (x.shape[2] * up + py0 + py1 - taps) // down + 1
    ow = (x.shape[3] * up + px0 + px1 - taps) // down + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"upfirdn2d: a filter of {taps} taps leaves no output for {tuple(x.shape)} with "
                         f"up={up}, down={down}, padding={pad}")
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format
    return torch.empty([x.shape[0], x.shape[1], oh, ow], device=x.device, dtype=x.dtype, memory_format=fmt)


def _transposed_padding(pad: tuple[int, int, int, int], taps: int, x_hw, y_hw, up: int, down: int) -> tuple:
    """Padding of the backward (``up`` and ``down`` swapped, filter flipped) from ``y`` back to ``x``'s size."""
    px0, _, py0, _ = pad
    return (taps - px0 - 1, x_hw[1] * up - y_hw[1] * down + px0 - up + 1,
            taps - py0 - 1, x_hw[0] * up - y_hw[0] * down + py0 - up + 1)


def _rows_launch(x, fk, y, pad, flip: bool, down: int = 1, axis_gain: float = 1.0, act: str | None = None,
                 gain: float = 1.0, clamp: float | None = None, b32=None, hp=None, db=None) -> None:
    """:func:`_fir_rows_kernel` from ``x`` into ``y``; with ``act``, the activation (bias ``b32``) applied to its
    input, or with ``hp`` its slope at the pre-activation ``hp`` applied to its output and the bias gradient's
    partials written to ``db``."""
    px0, _, py0, _ = pad
    bsz, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    bc = min(triton.next_power_of_2(c), 64)
    nty, ntx = triton.cdiv(oh, ROWS_PER_PROGRAM), triton.cdiv(ow, ROW_PIXELS)
    if act is None:
        epi = {**_NO_ACT, "B": x, "HP": x, "DB": x}
    else:
        epi = {"act_gain": float(gain), "alpha": LRELU_ALPHA, "clamp": float(clamp) if clamp is not None else 0.0,
               "PRE": hp is None, "POST": hp is not None, "ACT": ACT_CODES[act], "HAS_CLAMP": clamp is not None,
               "B": b32, "HP": x if hp is None else hp, "DB": x if db is None else db}
    _fir_rows_kernel[(bsz * nty * ntx, triton.cdiv(c, bc))](
        x, fk, y, c, oh, ow, h, w, nty, ntx, *x.stride(), *y.stride(), px0, py0, axis_gain, TAPS=int(fk.shape[0]),
        FLIP=flip, DOWN=down, TH=ROWS_PER_PROGRAM, TW=ROW_PIXELS, BC=bc, num_warps=ROW_WARPS, **epi)


def _rows_grid0(y: torch.Tensor) -> int:
    return y.shape[0] * triton.cdiv(y.shape[2], ROWS_PER_PROGRAM) * triton.cdiv(y.shape[3], ROW_PIXELS)


def _run(x: torch.Tensor, f: torch.Tensor, up: int, down: int, pad: tuple[int, int, int, int], flip_filter: bool,
         gain: float) -> torch.Tensor:
    fk = f.to(device=x.device).contiguous()  # the filter stays a device tensor read by the kernel
    y = _output(x, int(fk.shape[0]), up, down, pad)
    if up == 1:
        _rows_launch(x, fk, y, pad, not flip_filter, down=down, axis_gain=gain ** 0.5)
        return y
    px0, _, py0, _ = pad
    b, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    bc = min(triton.next_power_of_2(c), 64)
    n_pix = b * oh * ow
    bp = PIXELS_PER_PROGRAM
    _fir_kernel[(triton.cdiv(n_pix, bp), triton.cdiv(c, bc))](
        x, fk, y, n_pix, c, oh, ow, h, w, *x.stride(), *y.stride(), px0, py0,
        gain ** 0.5, TAPS=int(fk.shape[0]), FLIP=not flip_filter, UP=up, DOWN=down, BP=bp, BC=bc,
        num_warps=_warps(bc))
    return y


class FirFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, up: int, down: int, pad: tuple, flip_filter: bool, gain: float):
        y = _run(x, f, up, down, pad, flip_filter, gain)  # the filter stays a device tensor read by the kernel
        ctx.meta = (f, up, down, pad, flip_filter, gain, x.shape)
        return y

    @staticmethod
    def backward(ctx, dy):
        f, up, down, pad, flip_filter, gain, xs = ctx.meta
        tpad = _transposed_padding(pad, int(f.shape[0]), xs[2:], dy.shape[2:], up, down)
        return FirFunction.apply(dy, f, down, up, tpad, not flip_filter, gain), None, None, None, None, None, None


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int, down: int, padding: tuple[int, int, int, int],
              flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """:func:`get3d.nn.layers.upfirdn2d_ref` for a 1-D filter and ``up, down ∈ {1, 2}``, ``padding`` as
    ``(x0, x1, y0, y1)``; the caller checks :func:`supports` first."""
    return FirFunction.apply(x, f, up, down, tuple(padding), flip_filter, gain)


# ------------------------------------------------------------------ bias/activation fused into a following blur

class BiasActBlurFunction(torch.autograd.Function):
    """``upfirdn2d(clamp(act(h + b)·gain), f, padding)``: the activation is applied as the blur reads ``h`` (no
    activated copy is written); the backward filters the upstream gradient with the transposed blur and multiplies
    by the activation's slope at ``h`` in the same pass, summing the bias gradient per program."""

    @staticmethod
    def forward(ctx, h, b, f, pad: tuple, act: str, gain: float, clamp):
        fk = f.to(device=h.device).contiguous()
        y = _output(h, int(fk.shape[0]), 1, 1, pad)
        _rows_launch(h, fk, y, pad, True, act=act, gain=gain, clamp=clamp, b32=b.to(torch.float32).contiguous())
        ctx.save_for_backward(h, b)
        ctx.meta = (fk, pad, act, float(gain), clamp)
        return y

    @staticmethod
    def backward(ctx, dy):
        h, b = ctx.saved_tensors
        fk, pad, act, gain, clamp = ctx.meta
        tpad = _transposed_padding(pad, int(fk.shape[0]), h.shape[2:], dy.shape[2:], 1, 1)
        if torch.is_grad_enabled():  # create_graph (R1): differentiable ops; the slope is piecewise constant
            with torch.no_grad():
                y0 = bias_act_ref(h.float(), b.float(), act=act, gain=gain, clamp=clamp)
                slope = _slope(y0, act, gain, clamp).to(dy.dtype)
            dh = FirFunction.apply(dy, fk, 1, 1, tpad, True, 1.0) * slope
            db = dh.sum((0, 2, 3), dtype=torch.float32)
        else:
            dh = torch.empty_like(h)  # h's strides: the kernel reads h at the offsets it writes dh
            part = torch.empty(_rows_grid0(dh), h.shape[1], device=h.device, dtype=torch.float32)
            _rows_launch(dy, fk, dh, tpad, False, act=act, gain=gain, clamp=clamp,
                         b32=b.to(torch.float32).contiguous(), hp=h, db=part)
            db = part.sum(0)
        return dh, db.to(b.dtype) if ctx.needs_input_grad[1] else None, None, None, None, None, None


def supports_bias_act_blur(h: torch.Tensor, f: torch.Tensor, act: str) -> bool:
    """CUDA, a dense ``h`` (its gradient is allocated with its strides) and an activation the kernels know."""
    return supports(h, f, 1, 1) and act in ACT_CODES and is_dense(h)


def bias_act_blur(h: torch.Tensor, b: torch.Tensor, f: torch.Tensor, padding: tuple[int, int, int, int],
                  act: str, gain: float, clamp: float | None) -> torch.Tensor:
    """``upfirdn2d(bias_act(h, b, act, gain, clamp), f, padding=padding)`` with the activation inside the blur's
    pass each way; the caller checks :func:`supports_bias_act_blur` first."""
    return BiasActBlurFunction.apply(h, b, f, tuple(padding), act, gain, clamp)
