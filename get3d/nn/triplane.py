"""Tri-plane synthesis network (StyleGAN2 "skip" generator with per-block 1×1 heads) and tri-plane queries.

Block layout (resolution r = 4, 8, ..., R): the 4² block holds a learned constant and one modulated 3×3
conv; every later block upsamples ×2 (FIR [1,3,3,1]) and runs two modulated 3×3 convs.  Each block ends in
up to two 1×1 modulated heads (geometry, texture) whose outputs are skip-summed over blocks (the running
image is FIR-upsampled between blocks).  Style indices follow StyleGAN2: block k uses ws[i : i+num_conv+1]
where the last one feeds its heads (and is the next block's first).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from get3d import perf
from get3d.nn.layers import SynthesisLayer, ToRGBLayer, setup_filter, upsample2d


def default_channels(resolutions, channel_base: int, channel_max: int) -> dict[int, int]:
    return {r: min(channel_base // r, channel_max) for r in resolutions}


class TriplaneBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim_trunk: int, w_dim_tex: int, resolution: int,
                 geo_channels: int, tex_channels: int, conv_clamp: float | None, use_noise: bool,
                 channels_last: bool, device=None):
        super().__init__()
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]), persistent=False)
        kw = {"conv_clamp": conv_clamp, "channels_last": channels_last, "device": device}
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution], device=device))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim_trunk, resolution, up=2,
                                        use_noise=use_noise, **kw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim_trunk, resolution, use_noise=use_noise, **kw)
        self.num_conv = 1 if in_channels == 0 else 2
        self.togeo = ToRGBLayer(out_channels, geo_channels, w_dim_trunk, **kw) if geo_channels > 0 else None
        self.totex = ToRGBLayer(out_channels, tex_channels, w_dim_tex, **kw) if tex_channels > 0 else None

    def forward(self, x, geo, tex, ws_trunk, w_tex, noise_mode="random", fused_modconv=True):
        wi = iter(ws_trunk.unbind(dim=1))
        if self.const is not None:
            x = self.const.unsqueeze(0).repeat(ws_trunk.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, next(wi), noise_mode=noise_mode, fused_modconv=fused_modconv)
        x = self.conv1(x, next(wi), noise_mode=noise_mode, fused_modconv=fused_modconv)
        w_head = next(wi)
        if self.togeo is not None:
            y = self.togeo(x, w_head, fused_modconv=fused_modconv).float()
            geo = y if geo is None else upsample2d(geo, self.resample_filter) + y
        if self.totex is not None:
            y = self.totex(x, w_tex, fused_modconv=fused_modconv).float()
            tex = y if tex is None else upsample2d(tex, self.resample_filter) + y
        return x, geo, tex


class TriplaneSynthesis(nn.Module):
    """ws → (geometry tri-plane [B, 3, C, R, R] or None, texture tri-plane [B, 3, C, R, R]).

    ``ws_trunk`` styles the trunk and the geometry heads, ``ws_tex`` the texture heads (unified generator:
    trunk = geometry code; separate generator: both = concat(texture w, detached geometry w), no geometry
    heads).  Both are [B, num_ws, w_dim_*].
    """

    def __init__(self, w_dim_trunk: int, w_dim_tex: int, resolution: int = 256, channels: list[int] | None = None,
                 channel_base: int = 32768, channel_max: int = 512, plane_channels: int = 32,
                 geometry: bool = True, conv_clamp: float | None = 256, use_noise: bool = True,
                 channels_last: bool = False, device=None):
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"tri-plane resolution must be a power of two >= 4, got {resolution}")
        self.resolution, self.plane_channels, self.geometry = resolution, plane_channels, geometry
        self.block_resolutions = [2 ** i for i in range(2, int(np.log2(resolution)) + 1)]
        if channels is None:
            chans = default_channels(self.block_resolutions, channel_base, channel_max)
        else:
            if len(channels) != len(self.block_resolutions):
                raise ValueError(f"channels {list(channels)} must list one width per block resolution "
                                 f"{self.block_resolutions}")
            chans = dict(zip(self.block_resolutions, channels))
        self.channels = [chans[r] for r in self.block_resolutions]
        head = 3 * plane_channels
        self.blocks = nn.ModuleList()
        self.num_ws = 0
        for i, r in enumerate(self.block_resolutions):
            in_ch = 0 if i == 0 else chans[r // 2]
            blk = TriplaneBlock(in_ch, chans[r], w_dim_trunk, w_dim_tex, r, head if geometry else 0, head,
                                conv_clamp, use_noise, channels_last, device=device)
            self.blocks.append(blk)
            self.num_ws += blk.num_conv
        self.num_ws += 1  # the last block's heads

    def forward(self, ws_trunk: torch.Tensor, ws_tex: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool | None = None):
        if fused_modconv is None:
            # perf.fused_modconv; the shared conv ("never") was ~4 % faster on an H100 in training and inference
            mode = perf.active().fused_modconv
            fused_modconv = mode == "always" or (mode == "eval" and not self.training)
        if ws_trunk.shape[1] < self.num_ws or ws_tex.shape[1] < self.num_ws:
            raise ValueError(f"tri-plane synthesis needs {self.num_ws} ws, got {ws_trunk.shape[1]} / {ws_tex.shape[1]}")
        x = geo = tex = None
        i = 0
        for blk in self.blocks:
            wt = ws_trunk[:, i: i + blk.num_conv + 1]
            x, geo, tex = blk(x, geo, tex, wt, ws_tex[:, i + blk.num_conv], noise_mode, fused_modconv)
            i += blk.num_conv
        b, r, c = ws_trunk.shape[0], self.resolution, self.plane_channels
        tex = tex.reshape(b, 3, c, r, r)
        geo = geo.reshape(b, 3, c, r, r) if geo is not None else None
        return geo, tex


def _triton_sampler():
    """``perf.triplane_sampler``: Triton's channels-last gather and coalesced atomic backward on CUDA, or
    PyTorch's grid_sample (also the CPU path; its backward was 26 % of the generator's training step)."""
    if perf.active().triplane_sampler != "triton":
        return None
    try:
        from get3d.nn.ops import triplane_triton
    except ImportError:  # no Triton: PyTorch's sampler
        return None
    return triplane_triton


def sample_triplane(planes: torch.Tensor, points: torch.Tensor, scale: float) -> torch.Tensor:
    """Sum of bilinear samples of the xy, yz, xz planes: ``planes`` [B, 3, C, R, R], ``points`` [B, N, 3]
    (world coordinates inside the grid box ±0.5·scale) → features [B, N, C].  Coordinates are detached
    (as in GET3D): gradients reach the planes, not the query positions.
    """
    if planes.ndim != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be [B, 3, C, R, R], got {tuple(planes.shape)}")
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(f"points must be [{planes.shape[0]}, N, 3], got {tuple(points.shape)}")
    b, _, c, r, _ = planes.shape
    p = (points.detach() / (0.5 * scale)).to(planes.dtype)  # → [-1, 1]
    fast = _triton_sampler() if planes.is_cuda else None
    if fast is not None:
        return fast.sample_triplane(planes, p)
    # slices, not index lists: a list index is built on the host and copied to the GPU (a host sync per call)
    coords = torch.stack([p[..., 0:2], p[..., 1:3], p[..., 0::2]], dim=1)  # [B, 3, N, 2]: xy, yz, xz
    feats = F.grid_sample(planes.reshape(b * 3, c, r, r), coords.reshape(b * 3, 1, -1, 2), mode="bilinear",
                          padding_mode="border", align_corners=False)  # [B*3, C, 1, N]
    return feats.reshape(b, 3, c, -1).sum(dim=1).transpose(1, 2)
