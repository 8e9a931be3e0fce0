"""StyleGAN2 "skip" discriminators (one for RGB, one for the mask) with camera-pose conditioning.

Resolution ``R`` down to 4: each block at resolution r adds ``fromrgb(img_r)`` to the features, runs a 3×3
conv and a 3×3 conv with FIR downsampling; the image is FIR-downsampled alongside.  The epilogue at 4²
does minibatch-std (group 4), a 3×3 conv, an FC and an output FC to ``cmap_dim``; the logit is the projection
⟨features, cmap⟩/√cmap_dim where ``cmap`` maps the 14-d camera encoding through an 8-layer mapping net.

Mixed precision: the ``num_fp16_res`` highest-resolution blocks run in fp16 (or bf16) on CUDA with the
conv output clamped to ``conv_clamp``; ``channels_last`` keeps those blocks in NHWC.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from get3d import perf
from get3d.nn.layers import (
    Conv2dLayer,
    FullyConnected,
    MinibatchStdLayer,
    bias_act_blur,
    downsample2d,
    setup_filter,
)
from get3d.nn.mapping import MappingNetwork

CAMERA_FREQUENCIES = 3  # sin/cos 2^k a, k = 0..2


def encode_camera(c: torch.Tensor, num_freqs: int = CAMERA_FREQUENCIES) -> torch.Tensor:
    """``c`` [B, 2] (azimuth, polar) → [B, 2 + 4·num_freqs] = [sin 2^k a, cos 2^k a for each angle, raw]."""
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"camera condition must be [B, 2] (azimuth, polar), got {tuple(c.shape)}")
    freqs = (2.0 ** torch.arange(num_freqs, device=c.device, dtype=c.dtype))  # [K]
    a = c.unsqueeze(-1) * freqs  # [B, 2, K]
    enc = torch.cat([torch.sin(a), torch.cos(a)], dim=-1).reshape(c.shape[0], -1)
    return torch.cat([enc, c], dim=1)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int,
                 use_fp16: bool, conv_clamp: float | None, channels_last: bool, device=None):
        super().__init__()
        self.resolution, self.in_channels, self.use_fp16 = resolution, in_channels, use_fp16
        cl = channels_last and use_fp16
        self.channels_last = cl
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]), persistent=False)
        self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp,
                                   channels_last=cl, device=device)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp,
                                 channels_last=cl, device=device)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp,
                                 channels_last=cl, device=device)

    def forward(self, x, img, dtype):
        mf = torch.channels_last if self.channels_last else torch.contiguous_format
        y = self.fromrgb(img.to(dtype=dtype, memory_format=mf))
        x = y if x is None else x.to(dtype=dtype, memory_format=mf) + y
        img = downsample2d(img, self.resample_filter)
        if perf.active().fused_blur_epilogue and not self.conv1.folds_blur(x):
            # conv0's bias/activation inside conv1's blur (one pass less each way; the same function)
            act, gain, clamp = self.conv0.epilogue_args()
            x = bias_act_blur(self.conv0.pre_activation(x), self.conv0.bias, self.conv1.resample_filter,
                              self.conv1.blur_padding(), act, gain, clamp)
            return self.conv1.forward_blurred(x), img
        x = self.conv0(x)
        x = self.conv1(x)
        return x, img


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int, mbstd_group_size: int,
                 mbstd_num_channels: int, conv_clamp: float | None, device=None):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation="lrelu", device=device)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp, device=device)
        self.fc = FullyConnected(in_channels * resolution ** 2, in_channels, activation="lrelu", device=device)
        self.out = FullyConnected(in_channels, cmap_dim if cmap_dim > 0 else 1, device=device)

    def forward(self, x, img, cmap):
        x = x.float().contiguous() + self.fromrgb(img.float())
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if cmap is not None:
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


class Discriminator(nn.Module):
    """``img`` [B, img_channels, R, R] + camera ``c`` [B, 2] (azimuth, polar) → logits [B, 1]."""

    def __init__(self, img_resolution: int = 1024, img_channels: int = 3, channels: list[int] | None = None,
                 channel_base: int = 32768, channel_max: int = 512, c_dim: int = 2, cmap_dim: int | None = None,
                 mapping_layers: int = 8, mbstd_group_size: int = 4, mbstd_num_channels: int = 1,
                 num_fp16_res: int = 0, fp16_dtype: str = "float16", conv_clamp: float | None = 256,
                 channels_last: bool = False, device=None):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"discriminator img_resolution must be a power of two >= 8, got {img_resolution}")
        if fp16_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"fp16_dtype must be 'float16' or 'bfloat16', got {fp16_dtype!r}")
        self.img_resolution, self.img_channels, self.c_dim = img_resolution, img_channels, c_dim
        log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        all_res = self.block_resolutions + [4]
        if channels is None:
            chans = {r: min(channel_base // r, channel_max) for r in all_res}
        else:
            if len(channels) != len(all_res):
                raise ValueError(f"discriminator channels {list(channels)} must list one width per resolution "
                                 f"{all_res}")
            chans = dict(zip(all_res, channels))
        self.channels = [chans[r] for r in all_res]
        cmap_dim = chans[4] if cmap_dim is None else cmap_dim
        self.cmap_dim = cmap_dim if c_dim > 0 else 0
        fp16_res = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.fp16_dtype = torch.float16 if fp16_dtype == "float16" else torch.bfloat16
        self.blocks = nn.ModuleList()
        for r in self.block_resolutions:
            use_fp16 = r >= fp16_res and num_fp16_res > 0
            self.blocks.append(DiscriminatorBlock(0 if r == img_resolution else chans[r], chans[r], chans[r // 2], r,
                                                  img_channels, use_fp16, conv_clamp, channels_last, device=device))
        self.mapping = (MappingNetwork(0, self.cmap_dim, None, c_dim=c_dim * (1 + 2 * CAMERA_FREQUENCIES),
                                       num_layers=mapping_layers, w_avg_beta=None, device=device)
                        if c_dim > 0 else None)
        self.epilogue = DiscriminatorEpilogue(chans[4], self.cmap_dim, 4, img_channels, mbstd_group_size,
                                              mbstd_num_channels, conv_clamp, device=device)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None, force_fp32: bool = False) -> torch.Tensor:
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(f"discriminator expects img [B, {self.img_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}], got {tuple(img.shape)}")
        x = None
        for blk in self.blocks:
            low = blk.use_fp16 and not force_fp32 and img.device.type == "cuda"
            x, img = blk(x, img, self.fp16_dtype if low else torch.float32)
        cmap = None
        if self.mapping is not None:
            if c is None:
                raise ValueError("this discriminator is camera-conditioned: pass c [B, 2] (azimuth, polar)")
            cmap = self.mapping(None, encode_camera(c.float()))
        return self.epilogue(x, img, cmap)


class DualDiscriminator(nn.Module):
    """The pair used by GET3D: ``rgb`` on the RGB image, ``mask`` on the silhouette; each its own camera map."""

    def __init__(self, **kwargs):
        super().__init__()
        self.rgb = Discriminator(img_channels=3, **kwargs)
        self.mask = Discriminator(img_channels=1, **kwargs)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None, force_fp32: bool = False):
        """``img`` [B, 4, R, R] (RGB + mask) → (rgb logits [B, 1], mask logits [B, 1])."""
        if img.ndim != 4 or img.shape[1] != 4:
            raise ValueError(f"DualDiscriminator expects [B, 4, R, R] (RGB + mask), got {tuple(img.shape)}")
        return self.rgb(img[:, :3], c, force_fp32), self.mask(img[:, 3:], c, force_fp32)
