"""Batched mesh rendering on any :class:`~get3d.raster.base.RasterBackend` (the GET3D image formation).

Meshes of different sizes are concatenated and drawn in one call in nvdiffrast's **range mode**: each mesh's
vertices are transformed by its own camera, and image ``b`` rasterizes only mesh ``b``'s triangles.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from get3d.cameras import flip_rows, look_at
from get3d.geometry.padded import PaddedMeshes, round_slots

from .base import RasterBackend

TextureFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _to_hw(x: torch.Tensor) -> torch.Tensor:
    """Rasterizer [B,H,W,C] (row 0 = bottom) → top-down [B,C,H,W]."""
    return flip_rows(x).permute(0, 3, 1, 2).contiguous()


def render_meshes(backend: RasterBackend, meshes: Sequence[tuple[torch.Tensor, torch.Tensor]], mvp: torch.Tensor,
                  resolution: int, texture_fn: TextureFn | None = None, antialias: bool = True) -> dict:
    """Render ``B`` meshes, mesh ``b`` seen through ``mvp[b]`` (world → clip, e.g. ``cameras.mvp_from_c2w``).

    Args:
        meshes: ``B`` pairs ``(verts [Vi,3] world, faces [Fi,3] long)``; ``Fi`` may be 0.  Or a
            :class:`~get3d.geometry.padded.PaddedMeshes` batch, drawn without reading its sizes from the device.
        mvp: ``[B,4,4]``.
        resolution: square image size.
        texture_fn: ``(points [N,3] world, sample_index [N] long) -> [N,C]``, called once with only the covered
            pixels' interpolated world positions.  When it has a ``batched`` attribute (``[B, P, 3] → [B, P, C]``,
            each image's covered pixels first in slots ``0..n-1``), that is called instead: one host read less.
            A padded batch is then shaded by :func:`shade_padded`, or by ``texture_fn.shade_padded`` (same
            arguments and results) when it has one: the training generator's capturable shading.
        antialias: apply analytic antialiasing to mask and rgb (the path by which images reach vertex positions).

    Returns a dict of top-down images: ``mask`` [B,1,H,W] (antialiased hard mask), ``rgb`` [B,C,H,W] (when
    ``texture_fn`` is given; zero background), ``depth`` [B,1,H,W] (interpolated clip ``w`` = view-space depth
    for perspective cameras, 0 = background), ``hard_mask`` [B,1,H,W]; plus ``rast`` [B,H,W,4] in rasterizer
    layout (row 0 = bottom), ``pos_clip`` [V,4], ``tri`` [F,3] int32 and ``ranges`` [B,2] for reuse.
    """
    b = len(meshes)
    if mvp.dim() != 3 or mvp.shape[0] != b or mvp.shape[1:] != (4, 4):
        raise ValueError(f"render_meshes: mvp must be [{b},4,4] for {b} meshes, got {tuple(mvp.shape)}")
    if b == 0:
        raise ValueError("render_meshes: need at least one mesh")
    h = w = int(resolution)
    if isinstance(meshes, PaddedMeshes):
        v_all, tri, ranges_t, pos_clip, f_off = _concat_padded(meshes, mvp)
    else:
        v_all, tri, ranges_t, pos_clip, f_off = _concat_list(meshes, mvp)

    out: dict = {"pos_clip": pos_clip, "tri": tri, "ranges": ranges_t}
    if f_off == 0:
        out.update(_empty_images(b, h, w, v_all, texture_fn))
        return out

    rast = backend.rasterize(pos_clip, tri, (h, w), ranges=ranges_t)
    out["rast"] = rast
    batched = getattr(texture_fn, "batched", None)
    if isinstance(meshes, PaddedMeshes) and batched is not None:
        shade = getattr(texture_fn, "shade_padded", None)      # the same function, e.g. replayed as a CUDA graph
        res = (shade or shade_padded)(backend, rast, pos_clip, tri, v_all, batched, meshes.capacity.pixels, antialias)
        out.update(zip(("mask", "rgb", "depth", "hard_mask", "pixel_overflow", "pixel_need"), res))
        return out
    hard = (rast[..., 3:4] > 0).to(torch.float32)
    depth = backend.interpolate(pos_clip[:, 3:4].contiguous(), rast, tri)
    out.update(hard_mask=_to_hw(hard), depth=_to_hw(depth))
    if texture_fn is None:
        out["mask"] = _to_hw(backend.antialias(hard, rast, pos_clip, tri) if antialias else hard)
        return out
    world = backend.interpolate(v_all.contiguous(), rast, tri)                 # [B,H,W,3]
    img = _colours(world, rast[..., 3] > 0, texture_fn, batched)
    mask, img = _antialiased(backend, hard, img, rast, pos_clip, tri, antialias)
    out.update(mask=_to_hw(mask), rgb=_to_hw(img))
    return out


def _empty_images(b: int, h: int, w: int, v_all: torch.Tensor, texture_fn) -> dict:
    """The images of a batch without a single triangle (zeros, still connected to the vertices and the texture
    field so that their gradients exist)."""
    dev = v_all.device
    zero = torch.zeros(b, 1, h, w, device=dev) + 0.0 * v_all.sum()
    out = {"mask": zero, "hard_mask": zero.detach(), "depth": zero, "rast": torch.zeros(b, h, w, 4, device=dev)}
    if texture_fn is not None:
        probe = texture_fn(torch.zeros(0, 3, device=dev), torch.zeros(0, dtype=torch.long, device=dev))
        out["rgb"] = torch.zeros(b, probe.shape[-1], h, w, device=dev, dtype=probe.dtype) + 0.0 * probe.sum()
    return out


def _colours(world: torch.Tensor, covered: torch.Tensor, texture_fn, batched) -> torch.Tensor:
    """``[B,H,W,C]`` colours of the covered pixels of exactly sized meshes (zero elsewhere), from the batched
    field when there is one, else from ``texture_fn`` over the flat pixel list."""
    b, h, w, _ = world.shape
    if batched is not None:
        # one read of the largest covered count sizes the query buffer (nothing can overflow; the flat path
        # below reads twice: the pixel list, then its per-image counts), rounded up like the padded slots so
        # that the texture query sees few distinct shapes (allocator blocks, kernel variants)
        most = int(covered.reshape(b, -1).sum(1).max())
        return _shade_compacted(world, covered, batched, min(round_slots(most), h * w))[0]
    idx = torch.nonzero(covered.reshape(-1)).squeeze(1)
    sample_index = torch.div(idx, h * w, rounding_mode="floor")
    feats = texture_fn(world.reshape(-1, 3)[idx], sample_index)
    if feats.dim() != 2 or feats.shape[0] != idx.shape[0]:
        raise ValueError(f"render_meshes: texture_fn must return [N={idx.shape[0]}, C], got {tuple(feats.shape)}")
    img = torch.zeros(b * h * w, feats.shape[1], device=world.device, dtype=feats.dtype).index_put((idx,), feats)
    return img.reshape(b, h, w, -1)


def _antialiased(backend: RasterBackend, hard: torch.Tensor, img: torch.Tensor, rast: torch.Tensor,
                 pos_clip: torch.Tensor, tri: torch.Tensor, antialias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, img)`` antialiased in one pass: antialiasing finds silhouette edges from the geometry alone and
    blends every channel with the same weights, so the channels of one call equal those of two calls."""
    if not antialias:
        return hard, img
    both = backend.antialias(torch.cat([hard, img.to(hard.dtype)], -1), rast, pos_clip, tri)
    return both[..., :1], both[..., 1:].to(img.dtype)


def shade_padded(backend: RasterBackend, rast: torch.Tensor, pos_clip: torch.Tensor, tri: torch.Tensor,
                 v_all: torch.Tensor, query, pixels: int, antialias: bool = True) -> tuple[torch.Tensor, ...]:
    """Everything :func:`render_meshes` does after rasterizing a padded batch with a batched texture query, as one
    tensor function without host reads (what a CUDA graph can replay): ``(mask, rgb, depth, hard_mask,
    pixel_overflow [B], pixel_need)``, the images top-down [B,C,H,W]; ``pixels`` as
    :attr:`~get3d.geometry.padded.SurfaceCapacity.pixels`."""
    hard = (rast[..., 3:4] > 0).to(torch.float32)
    depth = backend.interpolate(pos_clip[:, 3:4].contiguous(), rast, tri)
    world = backend.interpolate(v_all.contiguous(), rast, tri)                 # [B,H,W,3]
    img, overflow, need = _shade_compacted(world, rast[..., 3] > 0, query, pixels)
    mask, img = _antialiased(backend, hard, img, rast, pos_clip, tri, antialias)
    return _to_hw(mask), _to_hw(img), _to_hw(depth), _to_hw(hard), overflow, need


def _concat_list(meshes, mvp: torch.Tensor):
    """Exactly sized meshes → one vertex/triangle list with per-image triangle ranges."""
    dev = mvp.device
    verts, faces, sid, ranges = [], [], [], []
    v_off = f_off = 0
    for i, (v, f) in enumerate(meshes):
        if v.dim() != 2 or v.shape[-1] != 3 or f.dim() != 2 or f.shape[-1] != 3:
            raise ValueError(f"render_meshes: mesh {i} must be (verts [V,3], faces [F,3]), got "
                             f"{tuple(v.shape)}, {tuple(f.shape)}")
        verts.append(v.to(device=dev, dtype=torch.float32))
        faces.append(f.to(device=dev, dtype=torch.long) + v_off)
        sid.append(torch.full((v.shape[0],), i, dtype=torch.long, device=dev))
        ranges.append((f_off, f.shape[0]))
        v_off += v.shape[0]
        f_off += f.shape[0]
    v_all = torch.cat(verts, 0)
    tri = torch.cat(faces, 0).to(torch.int32)
    sid_all = torch.cat(sid, 0)
    ranges_t = torch.tensor(ranges, dtype=torch.int32)
    vh = torch.cat([v_all, torch.ones_like(v_all[:, :1])], 1)
    pos_clip = torch.einsum("vij,vj->vi", mvp.to(torch.float32)[sid_all], vh).contiguous()
    return v_all, tri, ranges_t, pos_clip, f_off


def _concat_padded(meshes: PaddedMeshes, mvp: torch.Tensor):
    """Fixed-capacity meshes → the same layout with static sizes: every image owns ``Cf`` triangle slots (the
    unused ones zero-area), so the ranges are known on the host without reading any count from the device."""
    b, cv, _ = meshes.verts.shape
    cf = meshes.faces.shape[1]
    v = meshes.verts.to(torch.float32).reshape(b * cv, 3)
    vh = torch.cat([v, torch.ones_like(v[:, :1])], 1)
    sid = torch.arange(b, device=v.device).repeat_interleave(cv)          # an int count: no device read
    # the same per-vertex product as the list path, so the same vertices land on bit-identical clip positions
    pos_clip = torch.einsum("vij,vj->vi", mvp.to(torch.float32)[sid], vh).contiguous()
    offs = torch.arange(b, device=v.device, dtype=torch.long)[:, None, None] * cv
    tri = (meshes.faces + offs).reshape(b * cf, 3).to(torch.int32)
    ranges_t = torch.tensor([(i * cf, cf) for i in range(b)], dtype=torch.int32)
    return v, tri, ranges_t, pos_clip, b * cf


def _shade_compacted(world: torch.Tensor, covered: torch.Tensor, query, capacity: int):
    """Colour the covered pixels without reading their number on the host: per image, covered pixels go to
    slots ``0..n-1`` of a ``[B, P, 3]`` buffer (a running count), ``query`` colours the buffer (``[B, P, 3] →
    [B, P, C]``) and the colours go back to their pixels.  ``P`` is ``capacity`` (0: every pixel; at most H·W);
    an image with more covered pixels is flagged (``overflow [B]``), and ``need`` is the largest count."""
    b, h, w, _ = world.shape
    n_pix = h * w
    p = n_pix if capacity <= 0 else min(int(capacity), n_pix)
    flat = covered.reshape(b, n_pix)
    slot = torch.cumsum(flat, 1) - 1
    count = flat.sum(1)
    bidx = torch.arange(b, device=world.device)[:, None]
    dest = torch.where(flat & (slot < p), bidx * p + slot, b * p).reshape(-1)
    src = torch.zeros(b * p + 1, dtype=torch.long, device=world.device)
    src.scatter_(0, dest, torch.arange(n_pix, device=world.device).repeat(b))
    src = src[:-1].reshape(b, p)                                          # pixel of each slot (0 when unused)
    used = torch.arange(p, device=world.device)[None] < count[:, None]
    pts = torch.gather(world.reshape(b, n_pix, 3), 1, src[..., None].expand(-1, -1, 3))
    feats = query(pts)                                                    # [B,P,C]
    back = torch.where(used, src, n_pix)                                  # unused slots land in a spare column
    img = feats.new_zeros(b, n_pix + 1, feats.shape[-1]).scatter(1, back[..., None].expand(-1, -1, feats.shape[-1]),
                                                                  feats)
    return img[:, :n_pix].reshape(b, h, w, -1), count > p, count.max()


def ortho_projection(half_width: float = 0.5 * math.sqrt(3.0), near: float = 0.1, far: float = 10.0,
                     device=None) -> torch.Tensor:
    """OpenGL orthographic projection (camera looks down -z) of the view box
    ``[-hw, hw]^2 × [-far, -near]`` → clip cube; ``w`` stays 1."""
    if half_width <= 0 or not (0 <= near < far):
        raise ValueError(f"ortho_projection: need half_width > 0 and 0 <= near < far, got {half_width}, {near}, {far}")
    s = 1.0 / half_width
    return torch.tensor([
        [s, 0.0, 0.0, 0.0],
        [0.0, s, 0.0, 0.0],
        [0.0, 0.0, -2.0 / (far - near), -(far + near) / (far - near)],
        [0.0, 0.0, 0.0, 1.0],
    ], dtype=torch.float32, device=device)


def ortho_view_mvp(directions: torch.Tensor, half_width: float = 0.5 * math.sqrt(3.0),
                   distance: float = 2.0) -> torch.Tensor:
    """World → clip matrices ``[B,4,4]`` for orthographic views of the unit box ``[-0.5, 0.5]^3`` (centred at the
    origin) from the unit-ish ``directions [B,3]`` (camera placed at ``distance * dir`` looking at the origin, +y up).
    The default ``half_width = sqrt(3)/2`` keeps the whole box in view from any direction (LFD silhouettes).
    """
    if directions.dim() != 2 or directions.shape[-1] != 3:
        raise ValueError(f"ortho_view_mvp: directions must be [B,3], got {tuple(directions.shape)}")
    d = directions.to(torch.float64)
    d = d / torch.linalg.norm(d, dim=-1, keepdim=True).clamp_min(1e-12)
    c2w = look_at(d * distance)
    r = 0.5 * math.sqrt(3.0)
    proj = ortho_projection(half_width, max(distance - r - 0.1, 1e-3), distance + r + 0.1).to(torch.float64)
    return (proj @ torch.linalg.inv(c2w)).to(torch.float32)
