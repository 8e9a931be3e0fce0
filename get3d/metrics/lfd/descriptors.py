"""Silhouettes -> descriptors (either path), and meshes -> descriptors in batches."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .core import _OFF3, _OFF5, ART_COEF, FD_N, N_LF, N_VIEW, RES, LFDDescriptor, _centres, _quant
from .fast import (
    _dilate_fast,
    _outside_region,
    _Pixels,
    art_coefficients,
    circularity,
    eccentricity,
    thin,
    trace_contours,
)
from .reference import (
    _contour_mask,
    _dilate,
    _outside_region_reference,
    art_coefficients_reference,
    circularity_reference,
    eccentricity_reference,
    thin_reference,
    trace_contours_reference,
)
from .render import _get_backend, render_meshes_silhouettes


def is_multi_part(sil, contour, reference: bool = False) -> torch.Tensor:
    outside = (_outside_region_reference if reference else _outside_region)(contour)
    fg = sil.sum((1, 2)).double()
    inside = (sil & ~outside).sum((1, 2)).double()
    frac = inside / fg.clamp_min(1)
    return ~(frac > 0.95)


def _bbox_fill(sil) -> torch.Tensor:
    _N, H, W = sil.shape
    ys = torch.arange(H, device=sil.device)
    xs = torch.arange(W, device=sil.device)
    rows, cols = sil.any(2), sil.any(1)
    y0 = torch.where(rows, ys, H).min(1).values
    y1 = torch.where(rows, ys, -1).max(1).values
    x0 = torch.where(cols, xs, W).min(1).values
    x1 = torch.where(cols, xs, -1).max(1).values
    ry = (ys[None] >= y0[:, None]) & (ys[None] <= y1[:, None])
    rx = (xs[None] >= x0[:, None]) & (xs[None] <= x1[:, None])
    return ry[:, :, None] & rx[:, None, :]


def fourier_descriptors(sil, cx, cy, reference: bool = False) -> torch.Tensor:
    """[N, 10] float64 |X_k| / |X_0| (k = 1..10) of the centroid distance along the contour (0 if < 8 points).

    ``reference=True`` runs the original dense implementation (slow; kept to test the fast path against).
    """
    trace = trace_contours_reference if reference else trace_contours
    thin_fn = thin_reference if reference else thin
    dilate = _dilate if reference else _dilate_fast
    _N, _H, _W = sil.shape
    ys, xs, length = trace(sil)
    contour = _contour_mask(ys, xs, length, sil.shape)
    multi = is_multi_part(sil, contour, reference) & (length > 0)
    if bool(multi.any()):
        idx = torch.nonzero(multi)[:, 0]
        y0 = sil[idx]
        buff = dilate(y0, _OFF3)
        t = trace(buff)
        still = is_multi_part(buff, _contour_mask(*t, buff.shape), reference)
        if bool(still.any()):
            if reference:
                buff2 = _dilate(buff, _OFF5)
                t2 = trace(buff2)
                still2 = is_multi_part(buff2, _contour_mask(*t2, buff2.shape), reference) & still
            else:  # only the silhouettes that are still multi-part
                sidx = torch.nonzero(still)[:, 0]
                b2 = _dilate_fast(buff[sidx], _OFF5)
                t2 = trace(b2)
                s2 = is_multi_part(b2, _contour_mask(*t2, b2.shape))
                buff2 = buff.clone()
                buff2[sidx] = b2
                still2 = torch.zeros_like(still)
                still2[sidx] = s2
            buff = torch.where(still[:, None, None], buff2, buff)
            buff = torch.where(still2[:, None, None], _bbox_fill(y0), buff)
        buff = thin_fn(buff, y0)
        ys2, xs2, len2 = trace(buff)
        L = max(ys.shape[1], ys2.shape[1])

        def padto(a):
            return torch.nn.functional.pad(a, (0, L - a.shape[1]), value=-1)
        ys, xs = padto(ys), padto(xs)
        ys[idx], xs[idx], length[idx] = padto(ys2), padto(xs2), len2
    L = ys.shape[1]
    n = torch.arange(L, device=sil.device)
    valid = n[None] < length[:, None]
    dist = torch.sqrt((xs.double() - cx[:, None]) ** 2 + (ys.double() - cy[:, None]) ** 2) * valid
    Nn = length.clamp_min(1).double()
    k = torch.arange(FD_N + 1, device=sil.device, dtype=torch.float64)
    ang = -2 * math.pi * k[None, :, None] * n[None, None, :].double() / Nn[:, None, None]  # [N, 11, L]
    re = (dist[:, None] * torch.cos(ang)).sum(-1)
    im = (dist[:, None] * torch.sin(ang)).sum(-1)
    mag = torch.sqrt(re * re + im * im)
    fd = mag[:, 1:] / mag[:, :1].clamp_min(1e-300)
    half = (length // 2 + 1)[:, None]
    fd = torch.where(k[None, 1:] < half, fd, torch.zeros_like(fd))
    return torch.where((length >= 8)[:, None], fd, torch.zeros_like(fd))


def descriptors_from_silhouettes(sil: torch.Tensor, reference: bool = False) -> LFDDescriptor:
    """``sil`` [M, 10, 10, H, W] bool (row 0 = bottom) -> codes with leading dims [M, 10, 10].

    ``reference=True`` uses the original dense implementation throughout (identical codes, much slower on
    multi-part silhouettes); it is kept as the reference the fast path is tested against.
    """
    M = sil.shape[0]
    s = sil.reshape(-1, sil.shape[-2], sil.shape[-1]).bool()
    H, W = s.shape[-2:]
    cx, cy = _centres(s)
    shp = (M, N_LF, N_VIEW)
    if reference:
        ys, xs = torch.meshgrid(torch.arange(H, device=s.device, dtype=torch.float64),
                                torch.arange(W, device=s.device, dtype=torch.float64), indexing="ij")
        r = torch.sqrt((xs[None] - cx[:, None, None]) ** 2 + (ys[None] - cy[:, None, None]) ** 2)
        rmax = torch.where(s, r, torch.zeros_like(r)).amax((1, 2)).view(-1, N_VIEW).amax(1)  # per light field
        radius = rmax.repeat_interleave(N_VIEW)
        art = _quant(art_coefficients_reference(s, cx, cy, radius))
        fd = _quant(fourier_descriptors(s, cx, cy, reference=True), 512.0)
        cir = _quant(circularity_reference(s))
        ecc = _quant(eccentricity_reference(s, cx, cy))
        return LFDDescriptor(art.view(*shp, ART_COEF), fd.view(*shp, FD_N), cir.view(shp), ecc.view(shp))
    pts = _Pixels(s, cx, cy)
    rmax = pts.rmax().view(-1, N_VIEW).amax(1)
    radius = rmax.repeat_interleave(N_VIEW)
    art = _quant(art_coefficients(s, cx, cy, radius, pts))
    fd = _quant(fourier_descriptors(s, cx, cy), 512.0)
    cir = _quant(circularity(s))
    ecc = _quant(eccentricity(s, cx, cy, pts))
    return LFDDescriptor(art.view(*shp, ART_COEF), fd.view(*shp, FD_N), cir.view(shp), ecc.view(shp))


def mesh_descriptors(meshes, device="cpu", batch: int = 4, backend=None, res: int = RES) -> LFDDescriptor:
    """Descriptors of a list of ``(vertices, faces)``; degenerate meshes get all-zero codes and a warning.

    ``batch`` meshes are rendered together (:func:`render_meshes_silhouettes`) and their ``batch * 100``
    silhouettes go through :func:`descriptors_from_silhouettes` at once (32-64 suit a GPU; the result does not
    depend on ``batch``)."""
    device = torch.device(device)
    backend = backend if backend is not None else _get_backend(device)
    parts = []
    for i in range(0, len(meshes), batch):
        todo = []
        for v, f in meshes[i:i + batch]:
            v = np.asarray(v, dtype=np.float64).reshape(-1, 3)
            f = np.asarray(f).reshape(-1, 3)
            if len(f) == 0 or len(v) == 0 or not np.isfinite(v).all():
                warnings.warn(f"LFD: degenerate mesh ({len(v)} vertices, {len(f)} faces); its silhouettes are empty",
                              RuntimeWarning, stacklevel=2)
                v, f = v[:0], f[:0]
            todo.append((v, f))
        sils = render_meshes_silhouettes(todo, device, backend, res)
        drawn = sils.flatten(1).any(1).tolist()
        for (v, f), d in zip(todo, drawn):
            if len(f) and not d:
                warnings.warn("LFD: mesh renders no pixel (zero area); its descriptors are zero", RuntimeWarning,
                              stacklevel=2)
        parts.append(descriptors_from_silhouettes(sils))
    if not parts:
        z = torch.zeros(0, N_LF, N_VIEW, dtype=torch.uint8)
        return LFDDescriptor(z[..., None].expand(-1, -1, -1, ART_COEF), z[..., None].expand(-1, -1, -1, FD_N), z, z)
    return LFDDescriptor(*(torch.cat([getattr(p, k) for p in parts]) for k in ("art", "fd", "cir", "ecc")))
