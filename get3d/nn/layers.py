"""Building blocks of the GET3D networks (StyleGAN2-style, pure PyTorch).

Everything here follows the published GET3D / StyleGAN2-ADA code: equalized learning rate (weights stored as
N(0, 1/lr_mult²), scaled at run time by ``lr_mult/sqrt(fan_in)``), modulated + demodulated convolutions,
FIR [1,3,3,1] resampling, per-layer noise, and the modulated fully-connected / 3D layers used by the
GET3D decoders and geometry networks.

Kernel seam: the hot primitives (:func:`upfirdn2d`, :func:`bias_act` and the discriminator's plain
:func:`conv2d`) dispatch through :data:`KERNELS`.  A faster implementation can be installed with
:func:`register_kernel` without touching callers; the pure-PyTorch versions here stay the reference path
that tests compare against.  :func:`double_backward_kernels` swaps in versions of the same functions whose
*double* backward is cheap, for the R1 pass: ``conv2d`` → :func:`get3d.nn.ops.conv2d` and ``upfirdn2d`` →
:func:`upfirdn2d_taps` (no depthwise convolution).  With PyTorch's generic double backward of the depthwise
FIR convolution (one convolution per channel) the lazy R1 step took ~44 s at 1024² (docs/dev/optimisation-log.md).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from get3d import perf

# ----------------------------------------------------------------------------------------------------------
# Activations and the kernel seam

#: name -> (function, default gain)
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]] = {
    "linear": (lambda x: x, 1.0),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2.0)),
    "relu": (F.relu, math.sqrt(2.0)),
    "sigmoid": (torch.sigmoid, 1.0),
    "tanh": (torch.tanh, 1.0),
}


def _check_act(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; choose one of {sorted(ACTIVATIONS)}")


def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
                 gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Reference ``act(x + b) * gain`` clamped to ``[-clamp, clamp]`` (bias broadcast along ``dim``)."""
    _check_act(act)
    fn, def_gain = ACTIVATIONS[act]
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = fn(x)
    g = def_gain if gain is None else gain
    if g != 1:
        x = x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def setup_filter(f, normalize: bool = True) -> torch.Tensor:
    """FIR filter tensor from a list; a 1-D filter stays separable (applied along x, then along y)."""
    f = torch.as_tensor(np.asarray(f, dtype=np.float32))
    if f.ndim not in (1, 2):
        raise ValueError(f"FIR filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    if normalize:
        f = f / f.sum()  # 1-D: each pass has unit DC gain, so the separable 2-D filter has too
    return f


def _parse_padding(padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) != 4:
        raise ValueError(f"padding must be int, (px, py) or (x0, x1, y0, y1); got {padding!r}")
    return padding  # type: ignore[return-value]


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding=0,
                  flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample (zero insertion) → pad/crop → FIR filter → downsample, on ``[B, C, H, W]``."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects [B, C, H, W], got {tuple(x.shape)}")
    b, c, h, w = x.shape
    px0, px1, py0, py1 = _parse_padding(padding)
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = f.to(device=x.device, dtype=x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1:
        g = gain ** 0.5
        fx = (f * g).reshape(1, 1, 1, -1).repeat(c, 1, 1, 1)
        fy = (f * g).reshape(1, 1, -1, 1).repeat(c, 1, 1, 1)
        x = F.conv2d(x, fx, groups=c)
        x = F.conv2d(x, fy, groups=c)
    else:
        fk = (f * gain)[None, None].repeat(c, 1, 1, 1)
        x = F.conv2d(x, fk, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upfirdn2d_taps(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding=0,
                   flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """:func:`upfirdn2d_ref` for ``up == 1`` and a separable (1-D) filter as shifted multiply-adds.

    No (grouped/depthwise) convolution: every op is elementwise or a strided view, so the backward and
    the R1 double backward are elementwise too, and with ``down > 1`` only the kept outputs are computed.
    Other cases fall back to the reference.
    """
    if up != 1 or f.ndim != 1 or x.ndim != 4:
        return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    px0, px1, py0, py1 = _parse_padding(padding)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = f.to(device=x.device, dtype=x.dtype)
    if not flip_filter:
        f = f.flip(0)
    if gain != 1:
        f = f * (gain ** 0.5)
    n = int(f.shape[0])
    for dim in (3, 2):
        m = x.shape[dim] - n + 1
        if m <= 0:
            raise ValueError(f"upfirdn2d: filter of {n} taps is longer than the padded input {tuple(x.shape)}")
        span = (m - 1) // down * down + 1
        y = None
        for k in range(n):
            s = x.narrow(dim, k, span)
            if down > 1:
                s = s[:, :, :, ::down] if dim == 3 else s[:, :, ::down]
            y = s * f[k] if y is None else torch.addcmul(y, s, f[k])
        x = y
    return x


def conv2d_ref(x: torch.Tensor, w: torch.Tensor, bias=None, stride=1, padding=0) -> torch.Tensor:
    """Reference plain convolution (PyTorch's own autograd, incl. its generic double backward)."""
    return F.conv2d(x, w, bias, stride, padding)


def _conv2d_fast(x, w, bias=None, stride=1, padding=0):
    from get3d.nn.ops import conv2d as _conv2d
    return _conv2d(x, w, bias, stride=stride, padding=padding)


#: Below this many elements the fused bias_act is not worth a Triton launch (its host-side cost is higher
#: than a PyTorch op's); the mapping and affine layers stay on the reference.
FUSED_BIAS_ACT_MIN_NUMEL = 1 << 16


def _triton_bias_act():
    try:
        from get3d.nn.ops import bias_act_triton
    except ImportError:  # no Triton (CPU-only PyTorch builds): the reference is used
        return None
    return bias_act_triton


def bias_act_fused(x, b=None, dim=1, act="linear", gain=None, clamp=None):
    """:func:`bias_act_ref` as one Triton kernel per direction on CUDA (large dense tensors, piecewise-linear
    activations); everything else goes to the reference."""
    if x.is_cuda and x.numel() >= FUSED_BIAS_ACT_MIN_NUMEL:
        mod = _triton_bias_act()
        if mod is not None and mod.supports(x, act):
            g = ACTIVATIONS[act][1] if gain is None else gain
            return mod.bias_act(x, b, dim, act, g, clamp if clamp is not None and clamp >= 0 else None)
    return bias_act_ref(x, b, dim=dim, act=act, gain=gain, clamp=clamp)


def _modulation_kernels(x: torch.Tensor, dim: int):
    """The Triton modulation kernels (:mod:`get3d.nn.ops.modulate_triton`) where ``perf.modulation_kernels``
    selects them and they take ``x``'s layout (CUDA, large enough to pay for a launch), else None."""
    if perf.active().modulation_kernels != "triton" or x.numel() < FUSED_BIAS_ACT_MIN_NUMEL:
        return None
    try:
        from get3d.nn.ops import modulate_triton
    except ImportError:  # no Triton
        return None
    return modulate_triton if modulate_triton.supports(x, dim) else None


def scale_channels(x: torch.Tensor, s: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``x · s[b, c]`` along channel ``dim`` (1: NCHW, 2: ``[B, N, C]``): the input modulation."""
    kernels = _modulation_kernels(x, dim)
    if kernels is not None:
        return kernels.modulate(x, s, dim=dim)
    view = [s.shape[0], s.shape[1], 1, 1] if dim == 1 else [s.shape[0], 1, s.shape[1]]
    return x * s.to(x.dtype).reshape(view)


#: Reference implementation of each hot primitive.
REFERENCE_KERNELS: dict[str, Callable] = {"upfirdn2d": upfirdn2d_ref, "bias_act": bias_act_ref,
                                          "conv2d": conv2d_ref}
#: What ``register_kernel(name, None)`` restores (the reference, except where a tested faster path exists).
DEFAULT_KERNELS: dict[str, Callable] = {**REFERENCE_KERNELS, "bias_act": bias_act_fused}
#: Same functions, with a cheap double backward (used inside :func:`double_backward_kernels`).
DOUBLE_BACKWARD_KERNELS: dict[str, Callable] = {"upfirdn2d": upfirdn2d_taps, "conv2d": _conv2d_fast}
#: Dispatch table of the hot primitives.
KERNELS: dict[str, Callable] = dict(DEFAULT_KERNELS)


def register_kernel(name: str, fn: Callable | None) -> None:
    """Install an implementation of ``name`` (same signature); ``None`` restores the default."""
    if name not in DEFAULT_KERNELS:
        raise KeyError(f"unknown kernel {name!r}; known: {sorted(DEFAULT_KERNELS)}")
    KERNELS[name] = DEFAULT_KERNELS[name] if fn is None else fn


@contextlib.contextmanager
def double_backward_kernels(enabled: bool = True):
    """Within this block the FIR filter and D convolutions use :data:`DOUBLE_BACKWARD_KERNELS` (same outputs,
    cheap second-order gradients); wrap the whole R1 pass (forward, ``create_graph`` grad, backward)."""
    if not enabled:
        yield
        return
    saved = {k: KERNELS[k] for k in DOUBLE_BACKWARD_KERNELS}
    KERNELS.update(DOUBLE_BACKWARD_KERNELS)
    try:
        yield
    finally:
        KERNELS.update(saved)


def _triton_fir():
    try:
        from get3d.nn.ops import fir_triton
    except ImportError:  # no Triton: the reference
        return None
    return fir_triton


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
    if perf.active().fir_filter == "triton":  # differentiable to any order, so R1 takes it too
        mod = _triton_fir()
        if mod is not None and mod.supports(x, f, up, down):
            return mod.upfirdn2d(x, f, up, down, _parse_padding(padding), flip_filter, gain)
    return KERNELS["upfirdn2d"](x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def bias_act_blur(h: torch.Tensor, b: torch.Tensor, f: torch.Tensor, padding, act: str, gain: float,
                  clamp: float | None) -> torch.Tensor:
    """``upfirdn2d(bias_act(h, b, ...), f, padding=padding)``: one Triton pass each way where
    ``perf.fused_blur_epilogue`` is on and the kernel takes ``h`` (CUDA), else the two operations."""
    if perf.active().fused_blur_epilogue and perf.active().fir_filter == "triton":
        mod = _triton_fir()
        if mod is not None and mod.supports_bias_act_blur(h, f, act):
            return mod.bias_act_blur(h, b, f, _parse_padding(padding), act, gain, clamp)
    return upfirdn2d(bias_act(h, b, act=act, gain=gain, clamp=clamp), f, padding=padding)


def bias_act(x, b=None, dim=1, act="linear", gain=None, clamp=None):
    return KERNELS["bias_act"](x, b, dim=dim, act=act, gain=gain, clamp=clamp)


def conv2d(x, w, bias=None, stride=1, padding=0):
    return KERNELS["conv2d"](x, w, bias, stride=stride, padding=padding)


def _filter_taps(f: torch.Tensor) -> int:
    return int(f.shape[-1])


def _triton_upsample():
    try:
        from get3d.nn.ops import upsample_triton
    except ImportError:  # no Triton: the reference
        return None
    return upsample_triton


def _polyphase_axis(x: torch.Tensor, g: torch.Tensor, up: int, p0: int, dim: int) -> torch.Tensor:
    """One axis of zero-insert-by-``up`` → pad ``p0`` (total pad ``n − 1``) → convolve with ``g``, computed per
    output phase ``r``: ``out[up·q + r] = Σ_d g[n−1 − (up·d − r + p0)] · x[q + d]`` (zero outside the input)."""
    n, size = int(g.shape[0]), x.shape[dim]
    taps = {r: [(d, n - 1 - (up * d - r + p0)) for d in range(-n, n + 1) if 0 <= up * d - r + p0 < n]
            for r in range(up)}
    ds = [d for t in taps.values() for d, _ in t]
    lo, hi = max(0, -min(ds)), max(0, max(ds))
    pad = [0, 0] * (x.ndim - 1 - dim) + [lo, hi]
    xp = F.pad(x, pad)
    phases = []
    for r in range(up):
        y = None
        for d, k in taps[r]:
            s = xp.narrow(dim, d + lo, size)
            y = s * g[k] if y is None else torch.addcmul(y, s, g[k])
        phases.append(y if y is not None else torch.zeros_like(x))
    out = torch.stack(phases, dim=dim + 1)
    shape = list(x.shape)
    shape[dim] = size * up
    return out.reshape(shape)


def upsample2d_polyphase(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """:func:`upsample2d` for a separable (1-D) filter without zero insertion (same function)."""
    fw = _filter_taps(f)
    p0 = (fw + up - 1) // 2
    g = f.to(device=x.device, dtype=x.dtype) * up  # per-axis gain: sqrt(up * up)
    return _polyphase_axis(_polyphase_axis(x, g, up, p0, 3), g, up, p0, 2)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """FIR upsampling by ``up`` (output ``[.., H*up, W*up]``), DC gain preserved."""
    fw = _filter_taps(f)
    p0 = (fw + up - 1) // 2
    p1 = (fw - up) // 2
    if x.is_cuda and f.ndim == 1 and x.ndim == 4 and KERNELS["upfirdn2d"] is upfirdn2d_ref:
        mode = perf.active().upsample  # same function each way; "reference" is also the CPU path
        if mode == "triton":
            mod = _triton_upsample()
            if mod is not None and mod.supports(x, f, up):
                return mod.upsample2x(x, f)
        elif mode == "polyphase":
            return upsample2d_polyphase(x, f, up)
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """FIR downsampling by ``down`` (output ``[.., H/down, W/down]``)."""
    fw = _filter_taps(f)
    p0 = (fw - down + 1) // 2
    p1 = (fw - down) // 2
    return upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ----------------------------------------------------------------------------------------------------------
# Equalized-lr layers

class FullyConnected(nn.Module):
    """Equalized-lr linear layer: ``act(x @ (W·g)ᵀ + b·lr)``, ``g = lr/sqrt(in)``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0, device=None):
        super().__init__()
        _check_act(activation)
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features], device=device) / lr_multiplier)
        self.bias = (nn.Parameter(torch.full([out_features], float(bias_init), device=device))
                     if bias else None)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t()) if x.ndim == 2 else F.linear(x, w, b)
        x = F.linear(x, w)
        return bias_act(x, b, dim=x.ndim - 1, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise=None, up: int = 1,
                     padding: int = 0, resample_filter: torch.Tensor | None = None, demodulate: bool = True,
                     fused_modconv: bool = True, defer_epilogue: bool = False):
    """Modulated (and demodulated) 2-D convolution.

    ``x`` [B, I, H, W], ``weight`` [O, I, k, k], ``styles`` [B, I].  ``fused_modconv`` folds the styles into
    per-sample weights and runs one grouped convolution; otherwise the activations are scaled before and
    after a shared convolution (cheaper on large batches, identical result).
    ``up=2`` upsamples with the FIR filter before the convolution.  ``defer_epilogue`` (shared-conv form only)
    returns ``(conv output, dcoefs)`` without applying the demodulation and ``noise``, for a fused epilogue.
    """
    b = x.shape[0]
    o, i, kh, kw = weight.shape
    if styles.shape != (b, i):
        raise ValueError(f"styles must be [{b}, {i}], got {tuple(styles.shape)}")
    if up > 1:
        if resample_filter is None:
            raise ValueError("up > 1 needs a resample_filter")
        x = upsample2d(x, resample_filter, up)
    dcoefs = None
    if demodulate:
        w = weight.unsqueeze(0) * styles.reshape(b, 1, i, 1, 1)  # [B, O, I, k, k]
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [B, O]
    if not fused_modconv:
        x = scale_channels(x, styles)
        x = F.conv2d(x, weight.to(x.dtype), padding=padding)
        if defer_epilogue:
            return x, dcoefs
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(b, o, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    w = weight.unsqueeze(0) * styles.reshape(b, 1, i, 1, 1)
    if dcoefs is not None:
        w = w * dcoefs.reshape(b, o, 1, 1, 1)
    x = x.reshape(1, b * i, *x.shape[2:])
    w = w.reshape(b * o, i, kh, kw).to(x.dtype)
    x = F.conv2d(x, w, padding=padding, groups=b)
    x = x.reshape(b, o, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv + noise + bias + lrelu (+ clamp), optionally upsampling ×2 first."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, channels_last: bool = False, device=None):
        super().__init__()
        _check_act(activation)
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.up, self.activation, self.conv_clamp = resolution, up, activation, conv_clamp
        self.use_noise, self.padding = use_noise, kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(resample_filter),
                             persistent=False)
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0, device=device)
        mf = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size],
                                               device=device).to(memory_format=mf))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution], device=device))
            self.noise_strength = nn.Parameter(torch.zeros([], device=device))
        self.bias = nn.Parameter(torch.zeros([out_channels], device=device))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True,
                gain: float = 1.0) -> torch.Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be random|const|none, got {noise_mode!r}")
        styles = self.affine(w)
        if not fused_modconv and not torch.is_grad_enabled() and x.is_cuda:
            y = self._inference_forward(x, styles, noise_mode, gain)
            if y is not None:
                return y
        if not fused_modconv:
            y = self._kernel_forward(x, styles, noise_mode, gain)
            if y is not None:
                return y
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                dtype=x.dtype) * self.noise_strength.to(x.dtype)
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const.to(x.dtype) * self.noise_strength.to(x.dtype)
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, fused_modconv=fused_modconv)
        act_gain = ACTIVATIONS[self.activation][1] * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=clamp)

    def _epilogue_args(self, y: torch.Tensor, noise_mode: str, gain: float):
        """(noise or None, its strength or None, activation gain, clamp) of the fused epilogues: the noise
        unscaled (the kernels multiply by the strength on the device)."""
        noise = strength = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([y.shape[0], 1, self.resolution, self.resolution], device=y.device, dtype=y.dtype)
            strength = self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise, strength = self.noise_const, self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return noise, strength, ACTIVATIONS[self.activation][1] * gain, clamp

    def _kernel_forward(self, x, styles, noise_mode: str, gain: float):
        """Same function with autograd: the input scaling and the epilogue (demodulation, noise, bias,
        activation, clamp) each one Triton kernel per direction (``perf.modulation_kernels``); None where the
        input is not one the kernels take."""
        if _modulation_kernels(x, 1) is None:
            return None
        y, dcoefs = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding,
                                     resample_filter=self.resample_filter, fused_modconv=False, defer_epilogue=True)
        noise, strength, act_gain, clamp = self._epilogue_args(y, noise_mode, gain)
        kernels = _modulation_kernels(y, 1)
        if kernels is not None:
            return kernels.modulate(y, dcoefs, noise, strength, self.bias, act=self.activation, gain=act_gain,
                                    clamp=clamp)
        y = y * dcoefs.to(y.dtype).reshape(y.shape[0], -1, 1, 1)  # an output too small for a launch
        if noise is not None:
            y = y + noise.to(y.dtype) * strength.to(y.dtype)
        return bias_act(y, self.bias, act=self.activation, gain=act_gain, clamp=clamp)

    def _inference_forward(self, x, styles, noise_mode: str, gain: float):
        """Same function without autograd: demodulation, noise, bias, activation and clamp in one Triton pass
        over the conv output (:func:`get3d.nn.ops.bias_act_triton.demodulate_noise_bias_act`); None when that
        kernel cannot run here (no Triton, a layout it does not take)."""
        if not perf.active().synthesis_epilogue or not x.is_contiguous():  # the kernel takes NCHW (the float32 trunk's layout)
            return None
        mod = _triton_bias_act()
        if mod is None or not mod.supports_epilogue(x, self.activation):  # the conv output is laid out like x
            return None
        y, dcoefs = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding,
                                     resample_filter=self.resample_filter, fused_modconv=False, defer_epilogue=True)
        noise, strength, act_gain, clamp = self._epilogue_args(y, noise_mode, gain)
        return mod.demodulate_noise_bias_act(y, dcoefs, noise, strength, self.bias.to(y.dtype), self.activation,
                                             act_gain, clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1×1 conv without demodulation (StyleGAN2 ``torgb``), used for the tri-plane heads."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False, device=None):
        super().__init__()
        self.in_channels, self.out_channels, self.conv_clamp = in_channels, out_channels, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0, device=device)
        mf = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size],
                                               device=device).to(memory_format=mf))
        self.bias = nn.Parameter(torch.zeros([out_channels], device=device))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, padding=self.padding, demodulate=False,
                             fused_modconv=fused_modconv)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class ModulatedFullyConnected(nn.Module):
    """Per-sample modulated linear layer for point decoders: ``x`` [B, N, I], ``w`` [B, w_dim] → [B, N, O]."""

    def __init__(self, in_features: int, out_features: int, w_dim: int, activation: str = "lrelu",
                 demodulate: bool = True, device=None):
        super().__init__()
        _check_act(activation)
        self.in_features, self.out_features = in_features, out_features
        self.activation, self.demodulate = activation, demodulate
        self.affine = FullyConnected(w_dim, in_features, bias_init=1.0, device=device)
        self.weight = nn.Parameter(torch.randn([out_features, in_features], device=device))
        self.bias = nn.Parameter(torch.zeros([out_features], device=device))
        self.weight_gain = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.in_features:
            raise ValueError(f"expected x [B, N, {self.in_features}], got {tuple(x.shape)}")
        styles = self.affine(w)  # [B, I]
        if not self.demodulate:
            styles = styles * self.weight_gain
        if perf.active().modulated_fc == "weight":  # per-sample weights and a batched GEMM (textbook form)
            wt = self.weight.unsqueeze(0) * styles.unsqueeze(1)  # [B, O, I]
            if self.demodulate:
                wt = wt * (wt.square().sum(dim=2, keepdim=True) + 1e-8).rsqrt()
            x = torch.bmm(x, wt.transpose(1, 2).to(x.dtype))
        else:
            # Same function with the styles on the activations: x·(W·diag(s))ᵀ·diag(d) = ((x·diag(s))·Wᵀ)·diag(d),
            # d = 1/|W·diag(s)| per output row.  One shared GEMM over all B·N points instead of B skinny
            # per-sample ones (the bmm and its backward ran as small-tile SIMT GEMMs: ~120 ms per training step).
            x = F.linear(scale_channels(x, styles, dim=2), self.weight.to(x.dtype))
            if self.demodulate:
                d = (styles.square() @ self.weight.square().t() + 1e-8).rsqrt()  # [B, O]
                kernels = _modulation_kernels(x, 2)
                if kernels is not None:
                    return kernels.modulate(x, d, bias=self.bias, dim=2, act=self.activation,
                                            gain=ACTIVATIONS[self.activation][1])
                x = x * d.unsqueeze(1).to(x.dtype)
        return bias_act(x, self.bias, dim=2, act=self.activation)

    def folded_weight(self, w: torch.Tensor) -> torch.Tensor:
        """Per-sample weights ``[B, O, I]`` with the styles (and the demodulation) folded in: the layer is
        ``act(x · folded[b]ᵀ + bias) · gain`` (for the fused inference kernel)."""
        styles = self.affine(w)
        if not self.demodulate:
            styles = styles * self.weight_gain
        wt = self.weight.unsqueeze(0) * styles.unsqueeze(1)
        if self.demodulate:
            wt = wt * (wt.square().sum(dim=2, keepdim=True) + 1e-8).rsqrt()
        return wt

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}, demod={self.demodulate}"


class ModulatedConv3d(nn.Module):
    """Modulated + demodulated 3-D convolution (grouped per sample) + bias + activation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 3,
                 activation: str = "lrelu", demodulate: bool = True, conv_clamp: float | None = None, device=None):
        super().__init__()
        _check_act(activation)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation, self.demodulate, self.conv_clamp = activation, demodulate, conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0, device=device)
        k = kernel_size
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, k, k, k], device=device))
        self.bias = nn.Parameter(torch.zeros([out_channels], device=device))
        self.padding = k // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        styles = self.affine(w)
        if not self.demodulate:
            styles = styles / math.sqrt(self.weight[0].numel())
        wt = self.weight.unsqueeze(0) * styles.reshape(b, 1, -1, 1, 1, 1)
        if self.demodulate:
            wt = wt * (wt.square().sum(dim=[2, 3, 4, 5], keepdim=True) + 1e-8).rsqrt()
        x = x.reshape(1, -1, *x.shape[2:])
        x = F.conv3d(x, wt.reshape(-1, *self.weight.shape[1:]).to(x.dtype), padding=self.padding, groups=b)
        x = x.reshape(b, self.out_channels, *x.shape[2:])
        return bias_act(x, self.bias, act=self.activation, clamp=self.conv_clamp)


def fir_fold_map(f: torch.Tensor, kernel_size: int, flip_filter: bool = False) -> torch.Tensor:
    """Linear map ``T [k·k, K·K]`` (``K = k + n − 1``) with ``w_folded = w.reshape(.., k·k) @ T``.

    ``conv2d(upfirdn2d(x, f, padding=p), w, stride=s) == conv2d(x, w_folded, stride=s, padding=p)`` exactly
    (both are linear in x; the FIR is a true convolution with ``f`` unless ``flip_filter``, the conv a
    correlation, so the folded correlation kernel is the full convolution of ``w`` with the FIR's
    correlation kernel).  A 1-D filter is applied separably (outer product), as in :func:`upfirdn2d_ref`.
    """
    f = f.detach().to(torch.float64).cpu()
    f2 = torch.outer(f, f) if f.ndim == 1 else f
    g = f2 if flip_filter else f2.flip([0, 1])            # correlation kernel of the FIR step
    k, n = int(kernel_size), int(g.shape[-1])
    big = k + n - 1
    t = torch.zeros(k, k, big, big, dtype=torch.float64)
    for a in range(k):
        for b in range(k):
            # corr(corr(x, g), w)[i] = sum_a w[a] sum_s g[s] x[i+a+s]  ->  W'[a+s] += w[a] g[s]
            t[a, b, a:a + n, b:b + n] = g
    return t.reshape(k * k, big * big)


def fold_fir_into_weight(w: torch.Tensor, fold_map: torch.Tensor) -> torch.Tensor:
    """``w [O, C, k, k]`` → folded ``[O, C, K, K]`` (computed in float64, cast back to ``w``'s dtype)."""
    o, c, k, _ = w.shape
    big = math.isqrt(fold_map.shape[1])
    wf = w.reshape(o * c, k * k).to(torch.float64) @ fold_map.to(device=w.device, dtype=torch.float64)
    return wf.reshape(o, c, big, big).to(w.dtype)


class Conv2dLayer(nn.Module):
    """Equalized-lr (non-modulated) conv with optional FIR downsampling, for the discriminators."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None, channels_last: bool = False, device=None):
        super().__init__()
        _check_act(activation)
        self.in_channels, self.out_channels, self.activation = in_channels, out_channels, activation
        self.down, self.conv_clamp, self.kernel_size = down, conv_clamp, kernel_size
        self.register_buffer("resample_filter", setup_filter(resample_filter),
                             persistent=False)
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = ACTIVATIONS[activation][1]
        mf = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size],
                                               device=device).to(memory_format=mf))
        self.bias = nn.Parameter(torch.zeros([out_channels], device=device)) if bias else None
        if down > 1 and kernel_size > 1:
            self.register_buffer("fold_map", fir_fold_map(self.resample_filter, kernel_size).to(device=device),
                                 persistent=False)
        else:
            self.fold_map = None

    def folds_blur(self, x: torch.Tensor) -> bool:
        """``perf.fold_downsample_conv``: "FIR blur → stride-2 k×k conv" as one folded (k+n−1)² stride-2 conv.

        ``never`` (default) keeps the blur as its own pass (the Triton FIR kernel on CUDA) and the 3×3 conv;
        ``low_precision`` folds only fp16/bf16 activations on CUDA, the faster choice where the blur is the
        reference's depthwise convolution (cuDNN's slow grouped kernel plus NHWC↔NCHW transforms)."""
        mode = perf.active().fold_downsample_conv
        if self.fold_map is None or mode == "never":
            return False
        if mode == "always":
            return True
        return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)

    def epilogue_args(self, gain: float = 1.0) -> tuple[str, float, float | None]:
        """(activation, its gain, clamp) of this layer's bias/activation epilogue."""
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return self.activation, self.act_gain * gain, clamp

    def _weight(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.weight * self.weight_gain).to(dtype)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of a non-resampling layer without its bias/activation (for a fused epilogue)."""
        if self.down != 1:
            raise ValueError("pre_activation: only for layers without downsampling")
        return conv2d(x, self._weight(x.dtype), padding=self.kernel_size // 2)

    def blur_padding(self) -> int:
        """Padding of the blur in front of this layer's stride-``down`` convolution (unfolded form)."""
        return (_filter_taps(self.resample_filter) - self.down + self.kernel_size - 1) // 2

    def forward_blurred(self, xb: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """This downsampling layer from its already blurred input: the strided convolution and the epilogue."""
        x = conv2d(xb, self._weight(xb.dtype), stride=self.down)
        act, act_gain, clamp = self.epilogue_args(gain)
        return bias_act(x, self.bias, act=act, gain=act_gain, clamp=clamp)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        act, act_gain, clamp = self.epilogue_args(gain)
        if self.down > 1 and self.kernel_size > 1 and self.folds_blur(x):
            # blur + stride-`down` k×k conv as one (k+n-1)² stride-`down` conv: the same function, no depthwise
            # FIR pass (fold in float64 from the fp32 master weight, then cast like the unfolded weight).
            wf = fold_fir_into_weight(self.weight * self.weight_gain, self.fold_map).to(x.dtype)
            if self.weight.is_contiguous(memory_format=torch.channels_last):
                wf = wf.contiguous(memory_format=torch.channels_last)
            x = conv2d(x, wf, stride=self.down, padding=self.blur_padding())
        elif self.down > 1 and self.kernel_size > 1:
            # blur with enough padding that a stride-`down` valid convolution yields H/down
            return self.forward_blurred(upfirdn2d(x, self.resample_filter, padding=self.blur_padding()), gain)
        elif self.down > 1:
            x = conv2d(downsample2d(x, self.resample_filter, self.down), self._weight(x.dtype))
        else:
            x = self.pre_activation(x)
        return bias_act(x, self.bias, act=act, gain=act_gain, clamp=clamp)


class MinibatchStdLayer(nn.Module):
    """Appends the per-group feature standard deviation as ``num_channels`` extra channels."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size else n
        if n % g != 0:
            g = math.gcd(n, g)  # keeps any batch size working (StyleGAN requires divisibility)
        f = self.num_channels
        cf = c // f
        y = x.reshape(g, -1, f, cf, h, w).float()
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)
        y = y.repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


def positional_encoding(p: torch.Tensor) -> torch.Tensor:
    """``[sin πp, cos πp]`` along the last axis."""
    return torch.cat([torch.sin(math.pi * p), torch.cos(math.pi * p)], dim=-1)


class Conv3dLayer(nn.Module):
    """Equalized-lr, non-modulated 3-D conv (used as the 1×1×1 residual skip of the geometry nets)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, bias: bool = False,
                 activation: str = "linear", device=None):
        super().__init__()
        _check_act(activation)
        k = kernel_size
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, k, k, k], device=device))
        self.bias = nn.Parameter(torch.zeros([out_channels], device=device)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * k ** 3)
        self.activation, self.padding = activation, k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv3d(x, (self.weight * self.weight_gain).to(x.dtype), padding=self.padding)
        return bias_act(x, self.bias, act=self.activation)
