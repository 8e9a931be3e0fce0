"""The one place where the networks meet iso-surface extraction (``get3d.geometry``) and rendering
(``get3d.raster``).  Keeping the seam here lets either side change without touching the generator.

Contract used by :class:`get3d.nn.generator.GET3DGenerator`:

- ``make_grid(iso_surface, tet_res, scale, device)`` → object with ``verts`` [V, 3] (grid box ±0.5·scale)
  and ``device``; whatever else extraction / regularisers need rides along on the object.
- ``empty_shape_guard(sdf [B, V], grid)`` → (sdf with empty / full samples fixed and detached, loss).
- ``sdf_reg_loss(sdf, grid)`` → scalar (sign-flip BCE over crossing grid edges, mean over samples).
- ``cube_features(feats [B, V, C], grid)`` → [B, cubes, 8·C] (FlexiCubes only).
- ``extract(iso_surface, verts [B, V, 3], sdf [B, V], grid, cube_weights)`` → list of (verts, faces).
- ``render(backend, meshes, mvp, resolution, texture_fn)`` → dict with ``mask`` [B,1,H,W], ``rgb`` [B,3,H,W].
"""
from __future__ import annotations

import torch


def _geometry():
    try:
        import get3d.geometry as geometry
    except ImportError as exc:  # pragma: no cover - only while the geometry package is missing
        raise RuntimeError(f"get3d.geometry is needed for mesh extraction but does not import ({exc})") from exc
    return geometry


def make_raster_backend(name: str | None, device):
    from get3d.raster import get_backend
    return get_backend(name or "auto", device)


def render(backend, meshes, mvp: torch.Tensor, resolution: int, texture_fn) -> dict:
    from get3d.raster.render import render_meshes
    return render_meshes(backend, meshes, mvp, resolution, texture_fn)


def make_grid(iso_surface: str, tet_res: int, scale: float, device):
    raise NotImplementedError("filled in when get3d.geometry lands")


def empty_shape_guard(sdf: torch.Tensor, grid):
    raise NotImplementedError


def sdf_reg_loss(sdf: torch.Tensor, grid) -> torch.Tensor:
    raise NotImplementedError


def cube_features(feats: torch.Tensor, grid) -> torch.Tensor:
    raise NotImplementedError


def extract(iso_surface: str, verts: torch.Tensor, sdf: torch.Tensor, grid, cube_weights=None):
    raise NotImplementedError
