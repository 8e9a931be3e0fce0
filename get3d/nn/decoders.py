"""Point decoders: modulated MLPs from tri-plane / volume features to SDF, deformation, texture and colour."""
from __future__ import annotations

import torch
from torch import nn

from get3d import perf
from get3d.nn.layers import ACTIVATIONS, ModulatedFullyConnected


def fused_chain(layers: list[ModulatedFullyConnected], x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """The layers applied in order by one kernel when no gradient is needed (generation, evaluation, the
    discriminator phase's G forward); None where that kernel cannot run (then the caller runs the layers)."""
    if not perf.active().point_mlp_fused or torch.is_grad_enabled() or not x.is_cuda:
        return None
    try:
        from get3d.nn.ops import point_mlp_triton as mod
    except ImportError:
        return None
    widths = [layers[0].in_features] + [layer.out_features for layer in layers]
    acts = [layer.activation for layer in layers]
    if not mod.supports(x, widths, acts):
        return None
    return mod.modulated_chain(x, [layer.folded_weight(w) for layer in layers], [layer.bias for layer in layers],
                               acts, [ACTIVATIONS[a][1] for a in acts])


class ModulatedMLP(nn.Module):
    """``in → hidden (×num_hidden, lrelu) → out (linear)``, each layer modulated by one w ([B, w_dim])."""

    def __init__(self, in_features: int, hidden: int, out_features: int, w_dim: int, num_hidden: int = 1,
                 device=None):
        super().__init__()
        if num_hidden < 1:
            raise ValueError(f"num_hidden must be >= 1, got {num_hidden}")
        dims = [in_features] + [hidden] * num_hidden
        self.hidden = nn.ModuleList(ModulatedFullyConnected(dims[i], dims[i + 1], w_dim, "lrelu", device=device)
                                    for i in range(num_hidden))
        self.out = ModulatedFullyConnected(hidden, out_features, w_dim, "linear", device=device)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = fused_chain([*self.hidden, self.out], x, w)
        if y is not None:
            return y
        for layer in self.hidden:
            x = layer(x, w)
        return self.out(x, w)


class TextureDecoder(nn.Module):
    """Tri-plane feature (32) → modulated MLP → 16-d texture feature → modulated 1×1 ``to_rgb`` (16→3, no
    demodulation) → colour in [0, 1] (sigmoid with a small margin so 0 and 1 are reachable)."""

    def __init__(self, in_features: int, hidden: int, feat_features: int, w_dim: int, device=None):
        super().__init__()
        self.mlp = ModulatedMLP(in_features, hidden, feat_features, w_dim, num_hidden=1, device=device)
        self.to_rgb = ModulatedFullyConnected(feat_features, 3, w_dim, "linear", demodulate=False, device=device)

    def forward(self, feats: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = fused_chain([*self.mlp.hidden, self.mlp.out, self.to_rgb], feats, w)
        if x is None:
            x = self.to_rgb(self.mlp(feats, w), w)
        return torch.sigmoid(x) * (1 + 2e-3) - 1e-3
