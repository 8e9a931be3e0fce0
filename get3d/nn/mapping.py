"""Mapping network z → w (two per generator: texture and geometry) and the style-mixing helper."""
from __future__ import annotations

import torch
from torch import nn

from get3d.nn.layers import FullyConnected, normalize_2nd_moment


class MappingNetwork(nn.Module):
    """``z`` [B, z_dim] (and/or condition ``c`` [B, c_dim]) → ``w`` [B, num_ws, w_dim].

    z → normalize 2nd moment → ``num_layers`` equalized-lr FC layers (width ``layer_features``, lrelu 0.2,
    lr multiplier ``lr_multiplier``) → w, broadcast to ``num_ws`` copies (``num_ws=None`` returns [B, w_dim]).
    In training mode (or with ``update_w_avg=True``) the running mean ``w_avg`` moves with
    ``w_avg ← lerp(w.mean(0), w_avg, β)``; truncation ``ψ`` pulls w towards ``w_avg``.
    With ``z_dim == 0`` it is the discriminators' condition-mapping net (``c`` embedded first).
    """

    def __init__(self, z_dim: int, w_dim: int, num_ws: int | None, c_dim: int = 0, num_layers: int = 8,
                 layer_features: int | None = None, lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.998,
                 embed_features: int | None = None, device=None):
        super().__init__()
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork needs z_dim > 0 or c_dim > 0")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        layer_features = w_dim if layer_features is None else layer_features
        embed_features = w_dim if embed_features is None else embed_features
        self.embed = FullyConnected(c_dim, embed_features, device=device) if c_dim > 0 else None
        feats = [z_dim + (embed_features if c_dim > 0 else 0)] + [layer_features] * (num_layers - 1) + [w_dim]
        self.layers = nn.ModuleList(
            FullyConnected(feats[i], feats[i + 1], activation="lrelu", lr_multiplier=lr_multiplier, device=device)
            for i in range(num_layers))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim], device=device))

    def map_pair(self, z: torch.Tensor, z2: torch.Tensor, update_w_avg: bool = False) -> tuple[torch.Tensor, ...]:
        """``(self(z), self(z2))`` as one batch through the layers (half the launches of two calls); only the
        first half moves ``w_avg``, as ``forward(z, update_w_avg=…)`` then ``forward(z2, update_w_avg=False)``
        would.  Unconditioned networks with ``num_ws`` only; each row is mapped on its own, so the values are
        those of two calls up to the GEMM's rounding."""
        if self.c_dim > 0 or self.num_ws is None:
            raise ValueError("map_pair: only for unconditioned mapping networks with num_ws")
        if z.shape != z2.shape or z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"map_pair: z and z2 must both be [B, {self.z_dim}], got {tuple(z.shape)} and "
                             f"{tuple(z2.shape)}")
        x = self._layers(normalize_2nd_moment(torch.cat([z, z2]).float()))
        if update_w_avg:
            self._track(x[: z.shape[0]])
        return x.unsqueeze(1).repeat(1, self.num_ws, 1).split(z.shape[0])

    def _layers(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def _track(self, w: torch.Tensor) -> None:
        """``w_avg ← lerp(w.mean(0), w_avg, β)`` (when this network tracks it)."""
        if hasattr(self, "w_avg"):
            with torch.no_grad():
                self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_w_avg: bool | None = None) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must be [B, {self.z_dim}], got {None if z is None else tuple(z.shape)}")
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"c must be [B, {self.c_dim}], got {None if c is None else tuple(c.shape)}")
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        x = self._layers(x)
        update = self.training if update_w_avg is None else update_w_avg
        if update:
            self._track(x)
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("truncation needs w_avg tracking (w_avg_beta is None)")
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = x.clone()
            x[:, :cut] = self.w_avg.lerp(x[:, :cut], truncation_psi)
        return x


def draw_mix(num_ws: int, z_dim: int, batch: int, prob: float = 0.9,
             generator: torch.Generator | None = None) -> tuple[int, torch.Tensor | None]:
    """The host-side draws of one style mix: ``(cutoff, z2 [B, z_dim] on the CPU)``, or ``(num_ws, None)`` when
    this batch does not mix.  One cutoff per batch, as in StyleGAN2 training; ``generator`` makes it reproducible
    (the same CPU stream on any device)."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"style-mixing prob must be in [0, 1], got {prob}")
    if prob == 0 or num_ws < 2:
        return num_ws, None
    u = torch.rand([], generator=generator)
    cutoff = int(torch.randint(1, num_ws, [], generator=generator))
    if float(u) >= prob:
        return num_ws, None
    return cutoff, torch.randn([batch, z_dim], generator=generator)


def style_mix(mapping: MappingNetwork, ws: torch.Tensor, prob: float = 0.9, generator: torch.Generator | None = None,
              truncation_psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
    """With probability ``prob`` replace ``ws[:, cutoff:]`` by the ws of a fresh z (cutoff ∈ [1, num_ws))."""
    cutoff, z2 = draw_mix(ws.shape[1], mapping.z_dim, ws.shape[0], prob, generator)
    if z2 is None:
        return ws
    dev = ws.device
    # pinned + async, so the copy does not wait for the GPU
    z2 = z2.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else z2.to(dev)
    ws2 = mapping(z2, truncation_psi=truncation_psi, update_w_avg=update_w_avg)
    return torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
