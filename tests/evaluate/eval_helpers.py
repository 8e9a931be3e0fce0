"""Helpers of the evaluate tests (a module of its own: `conftest` is a name every test folder shares)."""
from __future__ import annotations

import numpy as np
import torch


def sphere_geometry(G, radius: float = 0.3) -> None:
    """Replace the SDF of a (real) generator by a sphere's, keeping its texture field.

    Used where LFD runs: a random-init generator's meshes are fragmented, and the CPU LFD descriptor of a
    multi-part silhouette set (dilation + topology-preserving thinning in get3d.metrics.lfd) takes minutes per
    mesh, far beyond a unit test's budget."""
    orig = G.backbone.query_geometry

    def query(state, points, return_features=False):
        out = orig(state, points, return_features)
        sdf = radius - points.norm(dim=-1) + 0.0 * out[0]
        return (sdf, torch.zeros_like(out[1])) + tuple(out[2:])

    G.backbone.query_geometry = query


def finite(x) -> bool:
    return x is not None and bool(np.isfinite(x))
