"""Area-uniform surface sampling for the CD/COV/MMD protocol (2,048 points, largest bbox side = 1, no centring)."""
from __future__ import annotations

import warnings

import numpy as np
import torch


def normalize_scale(vertices: np.ndarray) -> np.ndarray:
    """Scale so that the largest bounding-box side is 1.  No centring (the protocol does not centre)."""
    v = np.asarray(vertices, dtype=np.float64)
    if v.size == 0:
        return v.reshape(0, 3)
    side = float((v.max(0) - v.min(0)).max())
    if not np.isfinite(side) or side <= 0:
        return v.copy()
    return v / side


def sample_surface(vertices, faces, num_points: int = 2048, seed: int = 0, normalize: bool = True) -> np.ndarray:
    """``num_points`` points uniformly distributed over the surface area, ``float32 [N,3]``, deterministic in ``seed``.

    Degenerate input (no faces, zero total area) gives a defined result with a warning: the vertices
    (or the origin if there are none) repeated to ``num_points``.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if normalize:
        v = normalize_scale(v)
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"faces index vertex {int(f.max())} but the mesh has {len(v)} vertices")
    rng = np.random.default_rng(seed)
    if len(f):
        tri = v[f]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        total = area.sum()
    else:
        total = 0.0
    if not (total > 0 and np.isfinite(total)):
        warnings.warn(f"sample_surface: degenerate mesh ({len(v)} vertices, {len(f)} faces, area {total}); "
                      "using its vertices (or the origin) as the point set", RuntimeWarning, stacklevel=2)
        base = v if len(v) else np.zeros((1, 3))
        return base[np.arange(num_points) % len(base)].astype(np.float32)
    idx = rng.choice(len(f), size=num_points, p=area / total)
    r1 = np.sqrt(rng.random(num_points))
    r2 = rng.random(num_points)
    t = tri[idx]
    pts = (1 - r1)[:, None] * t[:, 0] + (r1 * (1 - r2))[:, None] * t[:, 1] + (r1 * r2)[:, None] * t[:, 2]
    return pts.astype(np.float32)


def sample_many(meshes, num_points: int = 2048, seed: int = 0) -> torch.Tensor:
    """Stack samples of a list of ``(vertices, faces)`` into ``[N, num_points, 3]`` (mesh i uses ``seed + i``)."""
    if len(meshes) == 0:
        return torch.zeros(0, num_points, 3)
    return torch.from_numpy(np.stack([sample_surface(v, f, num_points, seed + i) for i, (v, f) in enumerate(meshes)]))
