"""Texture baking: rasterize each mesh in UV space, query the generator's texture field at the interpolated
3-D surface positions, grow the charts over their seams and fill the rest of the atlas.

Texel ``(row, col)`` of a ``T``² texture (row 0 = top, ``v = 1``) is centred at ``u = (col + 0.5) / T``,
``v = 1 - (row + 0.5) / T``: the rasterizer's pixel centres (its row 0 is clip ``y = -1``, i.e. ``v = 0``;
:func:`get3d.cameras.flip_rows` turns it top-down), and the texel centres of bilinear texture lookup.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from get3d.cameras import flip_rows

TextureFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
QUERY_CHUNK = 1 << 21  # texels per texture-field query


def rasterize_uv(backend, meshes: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], size: int) -> dict:
    """Rasterize ``B`` meshes ``(verts [V,3], faces [F,3], uvs [V,2])`` in UV space (range mode).

    Returns ``world`` [B, T, T, 3] (surface positions), ``covered`` [B, T, T] bool, both top-down."""
    dev = backend.device
    pos, tri, world_v, ranges = [], [], [], []
    v_off = f_off = 0
    for v, f, uv in meshes:
        uv = uv.to(dev, torch.float32)
        pos.append(torch.cat([uv * 2 - 1, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], 1))
        tri.append(f.to(dev, torch.long) + v_off)
        world_v.append(v.to(dev, torch.float32))
        ranges.append((f_off, f.shape[0]))
        v_off += v.shape[0]
        f_off += f.shape[0]
    pos_t = torch.cat(pos).contiguous()
    tri_t = torch.cat(tri).to(torch.int32).contiguous()
    rast = backend.rasterize(pos_t, tri_t, (size, size), ranges=torch.tensor(ranges, dtype=torch.int32))
    world = backend.interpolate(torch.cat(world_v).contiguous(), rast, tri_t)
    return {"world": flip_rows(world), "covered": flip_rows(rast[..., 3:4] > 0)[..., 0]}


def dilate(color: torch.Tensor, filled: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow the filled region of ``color`` [B, C, H, W] by ``steps`` texels: each new texel is the mean of its
    filled 8-neighbours.  ``filled`` [B, 1, H, W] float (1 = has a colour)."""
    kernel = torch.ones(1, 1, 3, 3, device=color.device, dtype=color.dtype)
    c = color.shape[1]
    for _ in range(steps):
        cnt = F.conv2d(filled, kernel, padding=1)
        acc = F.conv2d((color * filled).reshape(-1, 1, *color.shape[2:]), kernel, padding=1).reshape(color.shape)
        grow = (filled == 0) & (cnt > 0)
        if not bool(grow.any()):
            break
        color = torch.where(grow.expand(-1, c, -1, -1), acc / cnt.clamp_min(1), color)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    return color, filled


def push_pull(color: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """Fill every unfilled texel from a pyramid of masked averages (coarse levels fill large holes)."""
    if bool((filled > 0).all()):
        return color
    h, w = color.shape[-2:]
    if h <= 1 and w <= 1:
        mean = (color * filled).sum((2, 3), keepdim=True) / filled.sum((2, 3), keepdim=True).clamp_min(1)
        return torch.where(filled > 0, color, mean.expand_as(color))
    wsum = F.avg_pool2d(filled, 2, ceil_mode=True)
    csum = F.avg_pool2d(color * filled, 2, ceil_mode=True)
    coarse = push_pull(csum / wsum.clamp_min(1e-12), (wsum > 0).to(filled.dtype))
    up = F.interpolate(coarse, size=(h, w), mode="nearest")
    return torch.where(filled > 0, color, up)


def _seed_texels(meshes, size: int, covered: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat texel indices (not covered by the rasterizer, one per texel) under triangle centroids and the 3-D
    centroid positions that colour them."""
    dev = covered.device
    idx, pts = [], []
    for k, (v, f, uv) in enumerate(meshes):
        if f.shape[0] == 0:
            continue
        f = f.to(dev, torch.long)
        c_uv = uv.to(dev, torch.float32)[f].mean(1)
        c_xyz = v.to(dev, torch.float32)[f].mean(1)
        col = (c_uv[:, 0] * size).floor().long().clamp(0, size - 1)
        row = ((1 - c_uv[:, 1]) * size).floor().long().clamp(0, size - 1)
        idx.append(k * size * size + row * size + col)
        pts.append(c_xyz)
    if not idx:
        return torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, 3, device=dev)
    idx_t, pts_t = torch.cat(idx), torch.cat(pts)
    keep = ~covered.reshape(-1)[idx_t]
    idx_t, pts_t = idx_t[keep], pts_t[keep]
    order = torch.argsort(idx_t, stable=True)          # first centroid per texel, deterministically
    idx_t, pts_t = idx_t[order], pts_t[order]
    first = torch.ones_like(idx_t, dtype=torch.bool)
    first[1:] = idx_t[1:] != idx_t[:-1]
    return idx_t[first], pts_t[first]


@torch.no_grad()
def bake_textures(backend, meshes: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], texture_fn: TextureFn,
                  size: int, dilation: int = 4, fill: bool = True, sample_index: Sequence[int] | None = None) -> dict:
    """Bake ``texture_fn`` (``(points [N,3], sample_index [N]) -> colour in [0, 1] [N, 3]``) into one ``size``²
    texture per mesh.  ``sample_index[b]`` is the index mesh ``b`` has in ``texture_fn``'s batch (default ``b``).

    Returns ``texture`` uint8 [B, T, T, 3] (top-down), ``covered`` [B, T, T] (texel centre inside a triangle,
    or a texel holding the centroid of a triangle that covers no texel centre),
    ``filled`` [B, T, T] (covered or reached by the seam dilation; with ``fill`` every other texel is then filled
    by push-pull so that mip-mapping never sees black)."""
    r = rasterize_uv(backend, meshes, size)
    world, covered = r["world"], r["covered"]
    b = len(meshes)
    idx = torch.nonzero(covered.reshape(-1)).squeeze(1)
    pts = world.reshape(-1, 3)[idx]
    # charts (or slivers) that cover no texel centre still get the texels under their triangles' centroids
    s_idx, s_pts = _seed_texels(meshes, size, covered)
    idx, pts = torch.cat([idx, s_idx]), torch.cat([pts, s_pts])
    which = torch.div(idx, size * size, rounding_mode="floor")
    if sample_index is not None:
        which = torch.as_tensor(list(sample_index), device=which.device, dtype=torch.long)[which]
    # chunks bound the texture decoder's memory (1024² atlases of a batch of 16: ~10M texels)
    rgb = (torch.cat([texture_fn(pts[c:c + QUERY_CHUNK], which[c:c + QUERY_CHUNK]).float()
                      for c in range(0, len(idx), QUERY_CHUNK)]) if len(idx) else world.new_zeros(0, 3))
    color = torch.zeros(b * size * size, 3, device=world.device, dtype=torch.float32)
    color[idx] = rgb.float().clamp(0, 1)
    covered = torch.zeros(b * size * size, dtype=torch.bool, device=world.device).index_fill_(0, idx, True)
    covered = covered.reshape(b, size, size)
    color = color.reshape(b, size, size, 3).permute(0, 3, 1, 2)
    filled = covered[:, None].float()
    color, filled = dilate(color, filled, dilation)
    if fill:
        color = push_pull(color, filled)
    tex = (color * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return {"texture": tex.contiguous(), "covered": covered, "filled": filled[:, 0] > 0}
