"""COV and MMD from a ``[G, R]`` distance matrix (generated x reference); shared by CD and LFD."""
from __future__ import annotations

import numpy as np
import torch


def coverage_mmd(dist, scale: float = 1.0) -> dict:
    """``dist[g, r]`` = distance between generated shape g and reference shape r.

    - COV (%): fraction of reference shapes that are the nearest reference of at least one generated shape.
    - MMD: mean over reference shapes of the distance to their nearest generated shape, times ``scale``
      (1e3 for CD in the GET3D tables, 1 for LFD).
    Ties in the nearest reference go to the lowest index (``argmin``).
    """
    d = torch.as_tensor(np.asarray(dist) if not isinstance(dist, torch.Tensor) else dist).double()
    if d.dim() != 2:
        raise ValueError(f"coverage_mmd: distance matrix must be 2-D [G,R], got shape {tuple(d.shape)}")
    G, R = d.shape
    if G == 0 or R == 0:
        return {"cov": float("nan"), "mmd": float("nan")}
    nearest_ref = d.argmin(dim=1)
    cov = 100.0 * torch.unique(nearest_ref).numel() / R
    mmd = d.min(dim=0).values.mean().item() * scale
    return {"cov": cov, "mmd": mmd}
