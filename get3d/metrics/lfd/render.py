"""Silhouettes: 10 light fields x 10 orthographic views of each normalised mesh, rendered in batches."""
from __future__ import annotations

import numpy as np
import torch

from .core import N_LF, N_VIEW, RES, camera_positions

# ------------------------------------------------------------------------------------------ rendering

def normalize_mesh(vertices: torch.Tensor) -> torch.Tensor:
    lo, hi = vertices.min(0).values, vertices.max(0).values
    side = (hi - lo).max()
    if not torch.isfinite(side) or side <= 0:
        return vertices - (lo + hi) / 2
    return (vertices - (lo + hi) / 2) / side


def view_clip_matrices(device) -> torch.Tensor:
    """[100, 4, 4] float64 world -> clip for the 100 views (gluLookAt to the origin, up +y; glOrtho(-1,1,-1,1,0,2))."""
    from get3d.cameras import look_at

    eye = camera_positions().reshape(-1, 3)
    w2c = torch.linalg.inv(look_at(eye))
    proj = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, -1.0, -1.0], [0, 0, 0, 1.0]], dtype=torch.float64)
    return (proj @ w2c).to(device)


def _get_backend(device):
    try:
        from get3d.raster import get_backend  # type: ignore[attr-defined]
        return get_backend("auto", device)
    except (ImportError, AttributeError):
        pass
    try:
        from get3d.raster.torch_backend import TorchRasterBackend
        return TorchRasterBackend(device)
    except ImportError:
        return None


def _fallback_silhouettes(clip: torch.Tensor, tri: torch.Tensor, res: int) -> torch.Tensor:
    """Coverage-only rasterization (pixel centres, edge functions) when no project backend is importable."""
    B = clip.shape[0]
    xs = (torch.arange(res, device=clip.device, dtype=torch.float64) * 2 + 1) / res - 1
    py, px = torch.meshgrid(xs, xs, indexing="ij")
    px, py = px.reshape(-1), py.reshape(-1)
    out = torch.zeros(B, res * res, dtype=torch.bool, device=clip.device)
    xy = clip[..., :2].double()
    for f0 in range(0, tri.shape[0], 64):
        t = tri[f0:f0 + 64].long()
        p = xy[:, t]  # [B, f, 3, 2]
        for b in range(B):
            a0, a1, a2 = p[b, :, 0], p[b, :, 1], p[b, :, 2]

            def ef(u, w):
                return (w[:, 0:1] - u[:, 0:1]) * (py[None] - u[:, 1:2]) - (w[:, 1:2] - u[:, 1:2]) * (px[None] - u[:, 0:1])
            e0, e1, e2 = ef(a0, a1), ef(a1, a2), ef(a2, a0)
            inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
            area = ((a1 - a0)[:, 0] * (a2 - a0)[:, 1] - (a1 - a0)[:, 1] * (a2 - a0)[:, 0]).abs() > 0
            out[b] |= (inside & area[:, None]).any(0)
    return out.view(B, res, res)


def render_silhouettes(vertices, faces, device="cpu", backend=None, res: int = RES) -> torch.Tensor:
    """[10, 10, res, res] bool silhouettes (row 0 = bottom) of one mesh.  Empty mesh -> all False."""
    return render_meshes_silhouettes([(vertices, faces)], device, backend, res)[0]


def _normalized_np(v: np.ndarray) -> np.ndarray:
    """:func:`normalize_mesh` on the host (the same IEEE operations, so the same float64 values)."""
    lo, hi = v.min(0), v.max(0)
    side = (hi - lo).max()
    if not np.isfinite(side) or side <= 0:
        return v - (lo + hi) / 2
    return (v - (lo + hi) / 2) / side


def render_meshes_silhouettes(meshes, device="cpu", backend=None, res: int = RES,
                              max_images: int = 800) -> torch.Tensor:
    """[M, 10, 10, res, res] bool silhouettes of a list of ``(vertices, faces)``, many meshes per raster call.

    The 100 views of every mesh are packed in the backend's range mode: one vertex array holding each
    (mesh, view)'s clip-space positions, one triangle list with per-image ``(first, count)`` ranges, at most
    ``max_images`` images per call.  Clip positions are computed per mesh exactly as for a single mesh (same
    float64 ops, then float32), so each silhouette equals :func:`render_silhouettes` of its mesh.  Meshes
    without vertices or faces render empty; a face index out of range raises ValueError.
    """
    device = torch.device(device)
    M = len(meshes)
    out = torch.zeros(M, N_LF * N_VIEW, res, res, dtype=torch.bool, device=device)
    items = []
    for i, (vertices, faces) in enumerate(meshes):
        v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
        f = np.asarray(faces).reshape(-1, 3).astype(np.int64)
        if v.shape[0] == 0 or f.shape[0] == 0:
            continue
        if f.min() < 0 or f.max() >= v.shape[0]:
            raise ValueError(f"render_silhouettes: faces index vertex {int(f.max())} of a {v.shape[0]}-vertex mesh")
        items.append((i, _normalized_np(v), f))
    if not items:
        return out.view(M, N_LF, N_VIEW, res, res)
    vc = view_clip_matrices(device)
    backend = backend if backend is not None else _get_backend(device)
    nv = N_LF * N_VIEW
    per_call = max(1, max_images // nv)
    for c0 in range(0, len(items), per_call):
        chunk = items[c0:c0 + per_call]
        clips, tris, ranges = [], [], []
        vbase = tbase = 0
        for _, vn, f in chunk:
            vt = torch.from_numpy(vn).to(device)
            vh = torch.cat([vt, torch.ones_like(vt[:, :1])], 1)
            clips.append(torch.einsum("bij,vj->bvi", vc, vh).float().reshape(-1, 4))  # [100 * V, 4]
            V, Fn = vn.shape[0], f.shape[0]
            tris.append((f[None] + (vbase + V * np.arange(nv))[:, None, None]).reshape(-1, 3))
            ranges.append(np.stack([tbase + Fn * np.arange(nv), np.full(nv, Fn)], 1))
            vbase += nv * V
            tbase += nv * Fn
        idx = torch.tensor([i for i, _, _ in chunk], device=device)
        if backend is None:
            sil = torch.cat([_fallback_silhouettes(cl.view(nv, -1, 4).double(), torch.from_numpy(f).to(device), res)
                             for cl, (_, _, f) in zip(clips, chunk)])
        else:
            pos = torch.cat(clips).contiguous()
            tri = torch.from_numpy(np.concatenate(tris).astype(np.int32)).to(device)
            rng = torch.from_numpy(np.concatenate(ranges).astype(np.int32))
            sil = backend.rasterize(pos, tri, (res, res), ranges=rng)[..., 3] > 0
        out[idx] = sil.view(len(chunk), nv, res, res)
    return out.view(M, N_LF, N_VIEW, res, res)
