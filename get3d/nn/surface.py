"""The one place where the networks meet iso-surface extraction (``get3d.geometry``) and rendering
(``get3d.raster``).  Keeping the seam here lets either side change without touching the generator.

Contract used by :class:`get3d.nn.generator.GET3DGenerator`:

- ``make_grid(iso_surface, tet_res, scale, device)`` → grid with ``verts`` [V, 3] (box ±0.5·scale), ``edges``,
  ``centre``, ``boundary`` (``get3d.geometry.tetgrid.TetGrid`` for DMTet); cached per (res, scale, device) at
  module level, so deep copies of the generator (EMA) do not copy grids or raster contexts.
- ``extract_surface(iso_surface, grid, sdf, deformation, tet_res, multiplier, cube_weights)`` → deformed grid,
  empty-shape guard, SDF regulariser and marching tets in one call (``get3d.geometry.dmtet.dmtet_extract``);
  ``dmtet_fields`` is its shape-static first half, which the training G may run as a captured graph.
- ``render(backend, meshes, mvp, resolution, texture_fn)`` → ``get3d.raster.render.render_meshes`` dict.

SDF convention: DMTet, sdf > 0 inside (raw network output).
"""
from __future__ import annotations

import importlib

import torch

_GRIDS: dict = {}
_BACKENDS: dict = {}


def _geometry_fn(name: str):
    for mod in ("get3d.geometry.dmtet", "get3d.geometry"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        fn = getattr(m, name, None)
        if callable(fn):
            return fn
    return None


# ---------------------------------------------------------------------------------------------- rendering

def make_raster_backend(name: str | None, device):
    key = (name or "auto", str(torch.device(device)))
    if key not in _BACKENDS:
        from get3d.raster import get_backend
        _BACKENDS[key] = get_backend(key[0], device)
    return _BACKENDS[key]


def render(backend, meshes, mvp: torch.Tensor, resolution: int, texture_fn) -> dict:
    from get3d.raster.render import render_meshes
    return render_meshes(backend, meshes, mvp, resolution, texture_fn)


# ---------------------------------------------------------------------------------------------- grids

def make_grid(iso_surface: str, tet_res: int, scale: float, device):
    key = (iso_surface, int(tet_res), float(scale), str(torch.device(device)))
    if key not in _GRIDS:
        if iso_surface == "flexicubes":
            from get3d.geometry.flexicubes import make_cube_grid
            _GRIDS[key] = make_cube_grid(tet_res, scale, device=device)
        else:
            from get3d.geometry.tetgrid import load_tet_grid
            _GRIDS[key] = load_tet_grid(tet_res, scale, device=device)
    return _GRIDS[key]


def cube_features(feats: torch.Tensor, grid) -> torch.Tensor:
    """[B, V, C] per-vertex features → [B, cubes, 8·C] per-cube corner features (FlexiCubes)."""
    corners = grid.cubes  # [n³, 8] vertex ids (corner c = dx + 2dy + 4dz)
    b, _, c = feats.shape
    return feats[:, corners.reshape(-1)].reshape(b, corners.shape[0], 8 * c)


# ---------------------------------------------------------------------------------------------- extraction

def dmtet_fields(grid, sdf: torch.Tensor, deformation: torch.Tensor, tet_res: int, multiplier: float) -> dict:
    """DMTet's shape-static part (``get3d.geometry.dmtet.dmtet_fields``): ``verts`` (deformed grid), ``sdf``
    (guarded), ``sdf_reg``, ``empty_loss`` [B]; what :func:`extract_surface` takes as ``fields``."""
    from get3d.geometry.dmtet import dmtet_fields as fields
    if grid.res != tet_res:
        raise ValueError(f"tet grid resolution {grid.res} does not match the generator's tet_res {tet_res}")
    return fields(grid, sdf, deformation, multiplier=multiplier, guard=True)


def extract_surface(iso_surface: str, grid, sdf: torch.Tensor, deformation: torch.Tensor, tet_res: int,
                    multiplier: float, cube_weights: torch.Tensor | None = None, training: bool = True,
                    capacity=None, fields: dict | None = None) -> dict:
    """Raw network SDF [B, V] and deformation [B, V, 3] → dict(meshes, verts (deformed grid), sdf (guarded),
    sdf_reg_loss (scalar, unweighted), empty_shape_loss (scalar, mean over the batch); FlexiCubes adds
    flexicubes_dev_loss (L_dev, scalar).  ``training``: FlexiCubes' differentiable 4-triangle quad split; else
    the 2-triangle split by the larger γ product (what evaluation and export use).  ``capacity`` (DMTet only):
    fixed-capacity meshes without host syncs (:mod:`get3d.geometry.padded`), plus ``surface_overflow`` (number
    of samples that did not fit, device scalar) and ``surface_need`` (largest vertex, face and shaded-pixel
    counts, [3]; the renderer fills in the pixels).  ``fields`` (DMTet only): :func:`dmtet_fields`'s result,
    computed elsewhere (e.g. by a captured graph); then ``sdf`` and ``deformation`` are not used."""
    if iso_surface == "flexicubes":
        # FlexiCubes' convention is sdf < 0 inside; the raw network output is used as that field directly (as
        # in the public code), with Δv = tanh(x)/(2n) fixed by get3d.geometry.flexicubes.  No empty-shape guard.
        from get3d.geometry.flexicubes import flexicubes_extract
        out = flexicubes_extract(grid, sdf, deformation, weights=cube_weights, training=training)
        out.setdefault("empty_loss", sdf.new_zeros(sdf.shape[0]))
        out["sdf"] = sdf
    else:
        from get3d.geometry.dmtet import march
        out = dict(fields) if fields is not None else dmtet_fields(grid, sdf, deformation, tet_res, multiplier)
        out["meshes"] = march(grid, out["verts"], out["sdf"], capacity)
    res = {"meshes": out["meshes"], "verts": out["verts"], "sdf": out["sdf"], "sdf_reg_loss": out["sdf_reg"],
           "empty_shape_loss": out["empty_loss"].mean()}
    m = out["meshes"]
    if hasattr(m, "overflow"):
        res["surface_overflow"] = m.overflow.sum()
        res["surface_need"] = torch.stack([m.num_verts.max(), m.num_faces.max(), m.num_faces.new_zeros(())])
    if "dev_loss" in out:
        res["flexicubes_dev_loss"] = out["dev_loss"]
    return res
