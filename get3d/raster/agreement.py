"""Backend-agreement checks (torch rasterizer vs nvdiffrast), shared by the GPU tests and bench/gpu_raster.py."""
from __future__ import annotations

import math

import torch

from get3d import cameras

from .base import RasterBackend


def uv_sphere(n_lat: int, n_lon: int, radius: float = 0.4, noise: float = 0.0,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed, welded UV sphere with ``2 * n_lon * (n_lat - 1)`` triangles; optional radial noise."""
    th = torch.linspace(0, math.pi, n_lat + 1)[1:-1]
    ph = torch.linspace(0, 2 * math.pi, n_lon + 1)[:-1]
    t, p = torch.meshgrid(th, ph, indexing="ij")
    ring = torch.stack([torch.sin(t) * torch.cos(p), torch.cos(t), torch.sin(t) * torch.sin(p)], -1).reshape(-1, 3)
    verts = torch.cat([torch.tensor([[0.0, 1.0, 0.0]]), ring, torch.tensor([[0.0, -1.0, 0.0]])])
    if noise > 0:
        verts = verts * (1 + noise * (torch.rand(verts.shape[0], 1, generator=generator) - 0.5))
    verts = verts * radius
    faces = []
    top, bottom = 0, verts.shape[0] - 1

    def idx(i, j):
        return 1 + i * n_lon + (j % n_lon)

    for j in range(n_lon):
        faces.append((top, idx(0, j + 1), idx(0, j)))
        faces.append((bottom, idx(n_lat - 2, j), idx(n_lat - 2, j + 1)))
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            faces.append((a, b, d))
            faces.append((a, d, c))
    return verts, torch.tensor(faces, dtype=torch.int32)


def geodesic_sphere(n_tris: int, radius: float = 0.35, noise: float = 0.0,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Icosphere with about ``n_tris`` well-shaped triangles (20·4^k), optional radial noise."""
    import trimesh

    k = max(0, round(math.log(max(n_tris, 20) / 20, 4)))
    m = trimesh.creation.icosphere(subdivisions=k, radius=1.0)
    verts = torch.tensor(m.vertices, dtype=torch.float32)
    if noise > 0:
        verts = verts * (1 + noise * (torch.rand(verts.shape[0], 1, generator=generator) - 0.5))
    return verts * radius, torch.tensor(m.faces, dtype=torch.int32)


def random_scene(batch: int, n_tris: int, seed: int, device, kind: str = "geodesic") -> tuple[torch.Tensor, torch.Tensor]:
    """Instance-mode scene: a noisy welded sphere (~n_tris triangles) seen by ``batch`` prior cameras.

    ``kind="geodesic"``: well-shaped triangles (the agreement criterion); ``kind="uv"``: a UV sphere whose
    polar caps are thin slivers (a stress case: barycentrics of slivers are ill-conditioned in float32)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "geodesic":
        v, f = geodesic_sphere(n_tris, radius=0.35, noise=0.3, generator=g)
    else:
        n_lon = max(8, int(math.sqrt(n_tris)))
        n_lat = max(3, n_tris // (2 * n_lon) + 1)
        v, f = uv_sphere(n_lat, n_lon, radius=0.35, noise=0.3, generator=g)
    v = v + (torch.rand(1, 3, generator=g) - 0.5) * 0.2
    az, polar = cameras.CameraPrior(0.0, 45.0).sample(batch, generator=g)
    c2w = cameras.camera_to_world(az.double(), polar.double())
    mvp = cameras.mvp_from_c2w(c2w).float()
    vh = torch.cat([v, torch.ones(v.shape[0], 1)], 1)
    pos = torch.einsum("bij,vj->bvi", mvp, vh)
    return pos.to(device).contiguous(), f.to(device)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    den = a.norm() * b.norm()
    return float((a @ b) / den) if den > 0 else float("nan")


def compare_backends(ref: RasterBackend, test: RasterBackend, pos: torch.Tensor, tri: torch.Tensor,
                     resolution: int, seed: int = 0) -> dict:
    """Agreement of ``test`` against ``ref`` on one scene: triangle ids, interpolated attributes (where ids
    agree), and position-gradient cosine for an interpolate loss and an antialias loss."""
    g = torch.Generator().manual_seed(seed)
    res = (resolution, resolution)
    attr = torch.rand(pos.shape[1], 3, generator=g).to(pos.device)
    w_img = torch.randn(pos.shape[0], resolution, resolution, 3, generator=g).to(pos.device)
    out = {}
    rasts, grads_i, grads_a, interps = [], [], [], []
    # The interpolation gradient is a property of the triangle a pixel lies in: compare it where both backends
    # picked the same triangle (ties on shared edges may go to either neighbour; those pixels are counted by
    # "pixels_agree").  With random per-pixel weights the per-vertex sums cancel, so a handful of pixels whose
    # triangle differs would otherwise decide the cosine.
    with torch.no_grad():
        same_tri = (ref.rasterize(pos, tri, res)[..., 3] == test.rasterize(pos, tri, res)[..., 3])[..., None]
    for bk in (ref, test):
        p = pos.detach().clone().requires_grad_(True)
        rast = bk.rasterize(p, tri, res)
        col = bk.interpolate(attr, rast, tri)
        (gi,) = torch.autograd.grad((col * w_img * same_tri).sum(), p, retain_graph=True)
        mask = (rast[..., 3:] > 0).float()
        aa = bk.antialias(torch.cat([mask, col.detach()], -1).contiguous(), rast, p, tri)
        (ga,) = torch.autograd.grad((aa * torch.cat([w_img[..., :1], w_img], -1)).sum(), p)
        rasts.append(rast.detach())
        interps.append(col.detach())
        grads_i.append(gi)
        grads_a.append(ga)
    ids0, ids1 = rasts[0][..., 3], rasts[1][..., 3]
    same = ids0 == ids1
    both = same & (ids0 > 0)
    out["pixels_agree"] = float(same.float().mean())
    out["covered"] = float((ids0 > 0).float().mean())
    err = (interps[0] - interps[1]).abs().amax(-1)[both]
    out["max_attr_err"] = float(err.max()) if err.numel() else 0.0
    # float32 barycentrics of nearly-degenerate pixels (a cancelling 2x2 determinant) differ by rounding / FMA
    # contraction between the two implementations; the 99.9th percentile is the robust agreement figure.
    out["q999_attr_err"] = float(torch.quantile(err.double().cpu(), 0.999)) if err.numel() else 0.0
    out["max_zw_err"] = float((rasts[0][..., 2] - rasts[1][..., 2]).abs()[both].max()) if bool(both.any()) else 0.0
    out["grad_cos_interp"] = _cos(grads_i[0], grads_i[1])
    out["grad_cos_aa"] = _cos(grads_a[0], grads_a[1])
    return out
