"""The raster-backend interface shared by the pure-PyTorch rasterizer and the nvdiffrast wrapper.

Conventions (identical to nvdiffrast's, so CPU tests exercise what the GPU runs):

- ``pos``: clip-space vertex positions, float32.  Two batching modes, as in nvdiffrast:

  * **instance mode**: ``pos`` is ``[B, V, 4]`` and one triangle list ``tri [F, 3]`` is shared by all ``B`` images;
    image ``b`` shows ``tri`` drawn with ``pos[b]``;
  * **range mode**: ``pos`` is ``[V, 4]`` (all meshes concatenated), ``tri [F, 3]`` indexes into it, and
    ``ranges`` (``[B, 2]`` int32, *on the CPU*) gives ``(first_triangle, triangle_count)`` per image.  This is
    how :func:`get3d.raster.render.render_meshes` draws a batch of meshes of different sizes in one call.

- ``rast``: ``[B, H, W, 4]`` float32 with channels ``(u, v, z/w, triangle_id + 1)``; ``0`` in the last channel
  means empty.  ``(u, v)`` are perspective-correct barycentrics of the triangle's vertices 0 and 1 (vertex 2
  gets ``1 - u - v``).  Pixel ``(x, y)`` samples clip ``((2x + 1)/W - 1, (2y + 1)/H - 1)``: pixel centres at +0.5,
  **row 0 = clip y = -1** (the bottom of the picture; :func:`get3d.cameras.flip_rows` turns images top-down).
  Triangle ids are indices into ``tri`` (global indices in range mode).  Gradients flow from ``u, v`` to ``pos``;
  the ``z/w`` channel carries no gradient (as in nvdiffrast).
- ``interpolate(attr, rast, tri)``: ``attr`` ``[V, C]`` or ``[B, V, C]`` (instance mode) → ``[B, H, W, C]``,
  zero at empty pixels; differentiable w.r.t. ``attr`` and, through ``rast``'s ``u, v``, w.r.t. ``pos``.
- ``antialias(color, rast, pos, tri)``: nvdiffrast's analytic silhouette antialiasing.  For every pair of
  horizontally / vertically adjacent pixels with different triangle ids, the nearer triangle (or the only one)
  is examined; if one of its silhouette edges (an edge with no neighbour triangle, or whose neighbour folds
  back in screen space; topology is by vertex index) crosses the segment between the two pixel centres and is
  more perpendicular than parallel to it, the pixel on the "wrong" side of the crossing is blended towards the
  other by the distance from the crossing to the pixel boundary.  Gradients reach ``color`` and the positions of
  the two edge vertices.
"""
from __future__ import annotations

import abc
from collections.abc import Sequence

import torch


class RasterBackend(abc.ABC):
    """Rasterize / interpolate / antialias with nvdiffrast's conventions (see module docstring)."""

    name: str = "abstract"
    device: torch.device

    @abc.abstractmethod
    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, resolution: Sequence[int],
                  ranges: torch.Tensor | None = None) -> torch.Tensor:
        """``pos`` [B,V,4] (instance) or [V,4] (+ ``ranges`` [B,2]) → ``rast`` [B,H,W,4]."""

    @abc.abstractmethod
    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        """Barycentric interpolation of per-vertex ``attr`` → [B,H,W,C] (zero where empty)."""

    @abc.abstractmethod
    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor,
                  tri: torch.Tensor) -> torch.Tensor:
        """Analytic silhouette antialiasing of ``color`` [B,H,W,C]; gradients to ``color`` and ``pos``."""


def check_inputs(pos: torch.Tensor, tri: torch.Tensor, resolution: Sequence[int],
                 ranges: torch.Tensor | None) -> tuple[int, int, int]:
    """Validate rasterize() arguments; returns ``(B, H, W)``.  Raises ValueError naming the bad argument."""
    if len(resolution) != 2 or int(resolution[0]) <= 0 or int(resolution[1]) <= 0:
        raise ValueError(f"rasterize: resolution must be (H, W) with positive entries, got {tuple(resolution)}")
    h, w = int(resolution[0]), int(resolution[1])
    if tri.dim() != 2 or tri.shape[1] != 3:
        raise ValueError(f"rasterize: tri must be [F, 3], got shape {tuple(tri.shape)}")
    if tri.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"rasterize: tri must be int32/int64, got {tri.dtype}")
    if pos.shape[-1] != 4:
        raise ValueError(f"rasterize: pos must end in 4 (clip x, y, z, w), got shape {tuple(pos.shape)}")
    if pos.dim() == 3:
        if ranges is not None:
            raise ValueError("rasterize: ranges is only valid in range mode (pos [V, 4]); got pos [B, V, 4]")
        b = pos.shape[0]
    elif pos.dim() == 2:
        if ranges is None:
            b = 1
        else:
            if ranges.dim() != 2 or ranges.shape[1] != 2:
                raise ValueError(f"rasterize: ranges must be [B, 2] (start, count), got {tuple(ranges.shape)}")
            if ranges.device.type != "cpu":
                raise ValueError("rasterize: ranges must live on the CPU (as in nvdiffrast)")
            r = ranges.long()
            if bool((r < 0).any()) or bool(((r[:, 0] + r[:, 1]) > tri.shape[0]).any()):
                raise ValueError(f"rasterize: ranges out of bounds for {tri.shape[0]} triangles: {r.tolist()}")
            b = ranges.shape[0]
    else:
        raise ValueError(f"rasterize: pos must be [B, V, 4] or [V, 4], got shape {tuple(pos.shape)}")
    return b, h, w
