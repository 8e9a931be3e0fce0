"""Performance choices (section ``perf`` of params.yaml): which of several equivalent code paths run.

Every choice computes the same function (each has a test comparing it with the reference path); they differ in
speed and, for the low-precision ones, in rounding.  The train and evaluate stages :func:`apply` the section
before building any network and record it in the run's ``config.json``; a benchmark sets them through
:func:`using` / :func:`parse_overrides` (``--perf key=value``).  Code reads the active choices with
:func:`active`; no other module keeps a switch of its own (``tests/test_perf.py`` checks that).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from get3d.schema import ConfigError, parse_section, spec


@dataclass(frozen=True)
class PerfConfig:
    merged_d_pass: bool = spec(
        True, help="train: the discriminator's fake and real halves as one pass where that is exact "
                   "(get3d.train.losses); false: two passes")
    upsample: str = spec(
        "triton", choices=("triton", "polyphase", "reference"),
        help="CUDA ×2 FIR upsampling: one Triton kernel per direction; polyphase (faster in inference, slower "
             "in training); reference (zero insertion + two depthwise convs, the CPU path)")
    modulated_fc: str = spec(
        "input", choices=("input", "weight"),
        help="point-decoder layers: scale activations around one shared GEMM (input) or per-sample modulated "
             "weights and a batched GEMM (weight)")
    fold_downsample_conv: str = spec(
        "never", choices=("never", "low_precision", "always"),
        help="discriminator 'blur -> stride-2 3x3 conv' as one folded 6x6 stride-2 conv (4x the FLOPs, no blur "
             "pass): never (the blur runs as fir_filter says), for fp16/bf16 on CUDA (low_precision: the faster "
             "choice with fir_filter=reference), or always")
    fir_filter: str = spec(
        "triton", choices=("triton", "reference"),
        help="CUDA: the FIR blur of the discriminators' downsampling (unfolded convs, skip paths) and its "
             "gradients as one Triton kernel (triton), or the reference (depthwise convolutions; shifted "
             "multiply-adds inside R1)")
    fused_blur_epilogue: bool = spec(
        False, help="CUDA, fir_filter triton, unfolded blur: in each discriminator block the first conv's bias/"
                    "activation runs inside the following blur (the blur reads the pre-activation; its backward "
                    "multiplies by the activation's slope and sums the bias gradient in the same pass): one pass "
                    "less each way over the block's largest activation")
    synthesis_epilogue: bool = spec(
        True, help="without autograd on CUDA: each synthesis layer's demodulation/noise/bias/activation as one "
                   "Triton kernel")
    modulation_kernels: str = spec(
        "triton", choices=("triton", "torch"),
        help="CUDA with autograd: the modulated layers' per-sample channel scaling and their demodulation/noise/"
             "bias/activation epilogue as one Triton kernel per direction (triton), or PyTorch's broadcast "
             "multiplies, adds and reductions (torch)")
    point_mlp_fused: bool = spec(
        True, help="without autograd on CUDA: each point decoder's layers as one Triton kernel")
    point_mlp_precision: str = spec(
        "tf32x3", choices=("tf32x3", "tf32", "ieee"),
        help="dot products of the fused point-decoder kernel: three TF32 products (float32-level error), one "
             "TF32 product (10-bit operands), or float32 on the CUDA cores")
    fused_modconv: str = spec(
        "never", choices=("never", "eval", "always"),
        help="tri-plane synthesis: styles folded into per-sample weights (one grouped conv) always, outside "
             "training only (eval), or never (activations scaled around one shared conv)")
    triplane_sampler: str = spec(
        "triton", choices=("triton", "grid_sample"),
        help="CUDA tri-plane sampling: Triton gather/atomic kernels, or PyTorch's grid_sample (the CPU path)")
    paired_mapping: bool = spec(
        False, help="train, CUDA graphs: each mapping network maps the batch's codes and the style-mixing codes as "
                    "one batch (half the tiny launches of its captured forward and backward); false: two passes")
    marching_kernel: str = spec(
        "torch", choices=("triton", "torch"),
        help="CUDA marching tets: the faces and vertex endpoints written by two Triton kernels from running counts "
             "on the device (triton; the exact extraction takes them before its one count read, the padded one "
             "reads nothing), or PyTorch's nonzero_static selections and gathers, or dense scatters for padded "
             "(torch, the CPU path)")
    padded_surface: bool = spec(
        False, help="train, CUDA or CPU, DMTet: marching tets into fixed-capacity buffers with the sizes kept on "
                    "the device (no host syncs; a sample that does not fit is detected and the phase re-run with "
                    "a larger capacity); false: exactly sized meshes (sizes read by the host)")
    shade_graph: bool = spec(
        False, help="train, padded_surface, CUDA graphs: the shading after the rasterizer (interpolation, texture "
                    "query into fixed pixel slots, antialiasing) replayed as a captured graph instead of ~100 eager "
                    "launches on a GPU drained by the rasterizer's stream synchronisation")
    surface_capacity: int = spec(
        65536, min=1, help="padded_surface: starting faces (and vertices) per sample; grown after an overflow")
    pixel_capacity: float = spec(
        0.5, min=0.0, max=1.0,
        help="padded_surface: starting share of an image's pixels whose colour is queried without a host sync "
             "(grown after an overflow; 1 = every pixel, which never overflows)")
    fit_capacity: bool = spec(
        True, help="padded_surface: after each phase, shrink a capacity above 2.25x the largest recent need (a "
                   "slowly decaying envelope of the needs read with the loss sums, no extra sync) to 1.5x it, so "
                   "the padded work follows the surfaces' size; an overflow still grows it (to 2x) and re-runs")
    recompute_geometry_mlp: bool = spec(
        False, help="train, separate generator: the SDF and deformation MLPs (run at every tet-grid vertex) "
                    "recompute their activations in the backward instead of keeping them (at tet 90 about half "
                    "of what the generator phase keeps: bench/saved_activations.py), for one more forward of them")
    lfd_sweep: str = spec(
        "triton", choices=("triton", "torch"),
        help="CUDA LFD flood-fill sweeps: Triton kernels, or PyTorch scans (the CPU path)")
    lfd_algorithms: str = spec(
        "auto", choices=("auto", "gpu", "cpu"),
        help="LFD flood fill and thinning: the launch/sync-light variants (gpu), scipy labelling and work-list "
             "thinning (cpu), or by device (auto)")


_ACTIVE = PerfConfig()


def active() -> PerfConfig:
    """The choices in force in this process."""
    return _ACTIVE


def apply(cfg: PerfConfig) -> PerfConfig:
    """Put ``cfg`` in force for this process (stages call this before building networks); returns the previous."""
    global _ACTIVE
    if not isinstance(cfg, PerfConfig):
        raise TypeError(f"perf.apply: expected a PerfConfig, got {type(cfg).__name__}")
    previous, _ACTIVE = _ACTIVE, cfg
    return previous


def with_changes(cfg: PerfConfig | None = None, **changes) -> PerfConfig:
    """``cfg`` (default: the active choices) with ``changes``, validated like params.yaml."""
    return parse_section(PerfConfig, {**dataclasses.asdict(cfg or _ACTIVE), **changes}, "perf")


@contextlib.contextmanager
def using(cfg: PerfConfig | None = None, **changes) -> Iterator[PerfConfig]:
    """``with perf.using(upsample="reference"):`` — other choices for a block (tests, benchmarks)."""
    new = with_changes(cfg, **changes)
    previous = apply(new)
    try:
        yield new
    finally:
        apply(previous)


@contextlib.contextmanager
def applied(cfg: PerfConfig | None) -> Iterator[PerfConfig]:
    """A stage's block: ``cfg`` in force inside (``None``: the active choices), the previous ones restored after."""
    previous = apply(cfg) if cfg is not None else _ACTIVE
    try:
        yield _ACTIVE
    finally:
        apply(previous)


def parse_overrides(items: list[str], base: PerfConfig | None = None) -> PerfConfig:
    """``["upsample=reference", "merged_d_pass=false"]`` (a benchmark's ``--perf`` flags) on top of ``base``."""
    import yaml

    data = dataclasses.asdict(base or PerfConfig())
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"perf override {item!r}: expected key=value")
        data[key.strip()] = yaml.safe_load(value)
    return parse_section(PerfConfig, data, "perf")
