"""Rendering for previews and the export FID: exported (UV-textured) meshes and the generator's texture field,
on the project's raster backends, with the cameras of :mod:`get3d.cameras`."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from get3d import cameras
from get3d.cameras import flip_rows


def orbit_mvp(azimuth_deg: Sequence[float], elevation_deg: float, radius: float = cameras.RADIUS,
              fovy_deg: float = cameras.FOVY_DEG, device=None) -> torch.Tensor:
    """World → clip ``[N, 4, 4]`` of cameras on the GET3D sphere looking at the origin."""
    az = torch.tensor([math.radians(a) for a in azimuth_deg], dtype=torch.float64)
    po = torch.full_like(az, math.pi / 2 - math.radians(elevation_deg))
    c2w = cameras.camera_to_world(az, po, radius)
    return cameras.mvp_from_c2w(c2w, fovy_deg).float().to(device)


def mvp_from_c2w(c2w, fovy_deg: float = cameras.FOVY_DEG, device=None) -> torch.Tensor:
    return cameras.mvp_from_c2w(torch.as_tensor(c2w, dtype=torch.float64), fovy_deg).float().to(device)


@torch.no_grad()
def render_textured(backend, meshes: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
                    mvp: torch.Tensor, resolution: int, antialias: bool = True) -> dict:
    """Render ``B`` UV-textured meshes ``(verts [V,3], faces [F,3], uvs [V,2] OBJ convention, texture
    [T,T,3] uint8 top-down)``, mesh ``b`` through ``mvp[b]``; bilinear texture lookup (texel centres at +0.5).

    Returns top-down ``rgb`` [B,3,H,W] in [0, 1] (black background), ``mask`` [B,1,H,W] (antialiased) and
    ``hard_mask``, plus ``uv`` [B,H,W,2] (top-down, zero where empty)."""
    dev = mvp.device
    b, h = len(meshes), int(resolution)
    verts, tris, uvs, sid, ranges = [], [], [], [], []
    v_off = f_off = 0
    for i, (v, f, uv, _) in enumerate(meshes):
        verts.append(v.to(dev, torch.float32))
        tris.append(f.to(dev, torch.long) + v_off)
        uvs.append(uv.to(dev, torch.float32))
        sid.append(torch.full((v.shape[0],), i, dtype=torch.long, device=dev))
        ranges.append((f_off, f.shape[0]))
        v_off += v.shape[0]
        f_off += f.shape[0]
    v_all, tri = torch.cat(verts), torch.cat(tris).to(torch.int32).contiguous()
    vh = torch.cat([v_all, torch.ones_like(v_all[:, :1])], 1)
    pos = torch.einsum("vij,vj->vi", mvp.float()[torch.cat(sid)], vh).contiguous()
    if f_off == 0:
        z = torch.zeros(b, 1, h, h, device=dev)
        return {"rgb": z.expand(-1, 3, -1, -1).clone(), "mask": z, "hard_mask": z, "uv": torch.zeros(b, h, h, 2)}
    rast = backend.rasterize(pos, tri, (h, h), ranges=torch.tensor(ranges, dtype=torch.int32))
    hard = (rast[..., 3:4] > 0).float()
    uv = backend.interpolate(torch.cat(uvs).contiguous(), rast, tri)            # [B,H,W,2]
    textures = torch.stack([m[3].to(dev) for m in meshes]).permute(0, 3, 1, 2).float() / 255.0
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], -1)           # v = 1 → top row (y = -1)
    rgb = F.grid_sample(textures, grid, mode="bilinear", padding_mode="border", align_corners=False)
    rgb = rgb.permute(0, 2, 3, 1) * hard
    mask = hard
    if antialias:
        rgb = backend.antialias(rgb.contiguous(), rast, pos, tri)
        mask = backend.antialias(hard, rast, pos, tri)
    hw = lambda x: flip_rows(x).permute(0, 3, 1, 2).contiguous()
    return {"rgb": hw(rgb), "mask": hw(mask), "hard_mask": hw(hard), "uv": flip_rows(uv * hard)}


@torch.no_grad()
def render_field(backend, meshes: Sequence[tuple[torch.Tensor, torch.Tensor]], texture_fn, mvp: torch.Tensor,
                 resolution: int) -> dict:
    """The generator's own rendering of its meshes: texture field queried per covered pixel
    (:func:`get3d.raster.render.render_meshes`), as in training and FID-3D."""
    from get3d.evaluate.generate import empty_safe
    from get3d.raster.render import render_meshes

    return render_meshes(backend, [(v.float(), f.long()) for v, f in meshes], mvp, resolution,
                         texture_fn=empty_safe(texture_fn))


def to_uint8(rgb01: torch.Tensor) -> torch.Tensor:
    return (rgb01.detach().float() * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)


def on_background(rgb: torch.Tensor, mask: torch.Tensor, background: float = 1.0) -> torch.Tensor:
    """Composite a black-background render over a flat grey level (previews)."""
    return rgb + (1.0 - mask) * background
