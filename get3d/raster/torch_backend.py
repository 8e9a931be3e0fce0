"""Pure-PyTorch rasterizer with nvdiffrast's conventions (runs on CPU, or any torch device).

How it works
------------
*Coverage* (no autograd): every (image, triangle) pair gets a pixel bounding box; the boxes are expanded into
fragments in chunks of at most ``max_fragments`` (bounding memory), each fragment is tested, and a per-pixel
depth test keeps the nearest fragment (smallest ``z/w``; exact ties go to the **lowest triangle id**, so the
result is deterministic).

* Triangles whose three vertices lie inside the depth range (``w >= |z|``) are handled like nvdiffrast's
  CudaRaster fast path: screen positions are snapped to a 1/16-pixel grid (round to nearest even, as
  ``cvt.rni``) and coverage uses exact integer edge functions with a fill rule for samples exactly on an edge
  (an edge shared by two triangles covers each such sample exactly once: no gaps, no double hits).
  Degenerate (zero snapped area) triangles are dropped.
* Triangles crossing the near/far planes or ``w = 0`` use homogeneous rasterization (Olano & Greer): the
  perspective-correct barycentrics of the pixel ray are ``a / sum(a)`` with the 2-D homogeneous edge
  functions ``a``; a sample is covered when all ``a_i`` share a sign, the interpolated ``w`` is positive and the
  interpolated ``z/w`` lies in ``[-1, 1]``.  That is exactly clipping against the near and far planes (and
  correct for vertices behind the camera), without snapping.
* Triangles completely outside one frustum plane are culled.

*Output* (with autograd): for covered pixels the winner's ``(u, v)`` are recomputed from ``pos`` with the same
formula nvdiffrast's gradient kernel differentiates, so ``interpolate`` → loss sends gradients to ``pos``.

Antialiasing re-implements nvdiffrast's analytic method (see :mod:`get3d.raster.base`), vectorised over all
discontinuity pixel pairs; the blend weight is an autograd expression of the silhouette edge's two vertices.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import RasterBackend, check_inputs

_SUBPIX = 16          # CudaRaster: CR_SUBPIXEL_LOG2 = 4
_SNAP_LIMIT = 32767   # snapped coordinates must fit in S16 for the fast path


def _signbit(x: torch.Tensor) -> torch.Tensor:
    return torch.signbit(x)


def _same_sign(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _signbit(a) == _signbit(b)


class TorchRasterBackend(RasterBackend):
    """Vectorised, chunked rasterizer in PyTorch (see module docstring)."""

    name = "torch"

    def __init__(self, device: str | torch.device = "cpu", max_fragments: int = 1 << 21):
        self.device = torch.device(device)
        if max_fragments < 1024:
            raise ValueError(f"TorchRasterBackend: max_fragments must be >= 1024, got {max_fragments}")
        self.max_fragments = int(max_fragments)

    # ------------------------------------------------------------------ rasterize
    @staticmethod
    def _pairs(pos: torch.Tensor, tri: torch.Tensor, ranges: torch.Tensor | None, b: int):
        """(image index, triangle id, flat vertex indices [K,3], flat positions [N,4]) of every pair to draw."""
        dev = pos.device
        tri_l = tri.to(device=dev, dtype=torch.long)
        f = tri_l.shape[0]
        if pos.dim() == 3:
            v = pos.shape[1]
            img = torch.arange(b, device=dev).repeat_interleave(f)
            tid = torch.arange(f, device=dev).repeat(b)
            vidx = tri_l[tid] + (img * v)[:, None]
            return img, tid, vidx, pos.reshape(-1, 4)
        if ranges is None:
            ranges = torch.tensor([[0, f]], dtype=torch.int64)
        r = ranges.long().cpu()
        counts = r[:, 1]
        img = torch.arange(b).repeat_interleave(counts).to(dev)
        starts = r[:, 0].repeat_interleave(counts)
        local = torch.arange(int(counts.sum())) - (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
        tid = (starts + local).to(dev)
        return img, tid, tri_l[tid], pos

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, resolution: Sequence[int],
                  ranges: torch.Tensor | None = None) -> torch.Tensor:
        b, h, w = check_inputs(pos, tri, resolution, ranges)
        if pos.dtype != torch.float32:
            raise ValueError(f"rasterize: pos must be float32, got {pos.dtype}")
        img, tid, vidx, pos_flat = self._pairs(pos, tri, ranges, b)
        dev = pos.device
        rast = torch.zeros(b * h * w, 4, dtype=torch.float32, device=dev)
        if vidx.shape[0] == 0:
            return rast.reshape(b, h, w, 4)
        with torch.no_grad():
            best_k, best_z = self._coverage(pos_flat.detach(), vidx, img, h, w, b)
        pix = torch.nonzero(best_k >= 0).squeeze(1)
        if pix.numel() == 0:
            return rast.reshape(b, h, w, 4)
        k = best_k[pix]
        px = (pix % w).to(torch.float32)
        py = ((pix // w) % h).to(torch.float32)
        fx = (2.0 * px + 1.0) / w - 1.0
        fy = (2.0 * py + 1.0) / h - 1.0
        p = pos_flat[vidx[k]]                               # [N,3,4] with autograd
        qx = p[..., 0] - fx[:, None] * p[..., 3]
        qy = p[..., 1] - fy[:, None] * p[..., 3]
        a0 = qx[:, 1] * qy[:, 2] - qy[:, 1] * qx[:, 2]
        a1 = qx[:, 2] * qy[:, 0] - qy[:, 2] * qx[:, 0]
        a2 = qx[:, 0] * qy[:, 1] - qy[:, 0] * qx[:, 1]
        at = a0 + a1 + a2
        # As nvdiffrast: the forward value is clamped to [0, 1] (pixels that the snapped coverage test accepts
        # can lie a hair outside the float triangle), while the gradient is that of the unclamped barycentric
        # with a small epsilon on the area (nvdiffrast's rasterize backward uses 1 / (at + 1e-6 sign(at))).
        at_grad = at + torch.where(at >= 0, 1e-6, -1e-6)
        u_grad, v_grad = a0 / at_grad, a1 / at_grad
        with torch.no_grad():
            u_fwd = (a0 / at).clamp(0.0, 1.0)
            v_fwd = (a1 / at).clamp(0.0, 1.0)
        u = u_grad + (u_fwd - u_grad).detach()
        v = v_grad + (v_fwd - v_grad).detach()
        vals = torch.stack([u, v, best_z[pix].to(torch.float32), (tid[k] + 1).to(torch.float32)], 1)
        rast = rast.index_put((pix,), vals)
        return rast.reshape(b, h, w, 4)

    def _coverage(self, pos: torch.Tensor, vidx: torch.Tensor, img: torch.Tensor, h: int, w: int, b: int):
        """Per-pixel winner ``(best_k, best_z)`` of all (image, triangle) pairs (see module docstring)."""
        dev = pos.device
        v32 = pos[vidx]                                           # [K,3,4] float32
        x, y, z, ww = v32.unbind(-1)
        rcp, sx, sy, area, keep_fast, slow = _classify_and_snap(x, y, z, ww, h, w)
        lx, ly, bw, counts = _pixel_boxes(x, y, ww, rcp, sx, sy, keep_fast, slow, h, w)
        edges = _fast_edge_functions(sx, sy, area)
        hc = _homogeneous_coefficients(x, y, z, ww)

        npix = b * h * w
        best_z = torch.full((npix,), float("inf"), dtype=torch.float64, device=dev)
        best_k = torch.full((npix,), -1, dtype=torch.long, device=dev)
        scratch_z = torch.full((npix,), float("inf"), dtype=torch.float64, device=dev)
        scratch_k = torch.full((npix,), _BIG_K, dtype=torch.long, device=dev)
        for kk, cnt in _fragment_chunks(counts, self.max_fragments, dev):
            rep, px, py = _expand_fragments(kk, cnt, lx, ly, bw, dev)
            cov, zw = _fragment_coverage(rep, px, py, keep_fast, edges, hc, h, w)
            if not bool(cov.any()):
                continue
            pix = (img[rep] * h + py) * w + px
            _depth_test(best_z, best_k, scratch_z, scratch_k, pix[cov], zw[cov], rep[cov])
        return best_k, best_z

    # ------------------------------------------------------------------ interpolate
    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        return interpolate_torch(attr, rast, tri)

    # ------------------------------------------------------------------ antialias
    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor,
                  tri: torch.Tensor) -> torch.Tensor:
        return antialias_torch(color, rast, pos, tri)


# ---------------------------------------------------------------------- coverage steps (all without autograd)
_BIG_K = torch.iinfo(torch.long).max


def _classify_and_snap(x, y, z, ww, h: int, w: int):
    """Frustum cull, fast/slow path split and 1/16-pixel snapping of the fast path's screen positions."""
    # Frustum cull: all three vertices outside the same plane.
    cull = ((ww < x).all(1) | (ww < -x).all(1) | (ww < y).all(1) | (ww < -y).all(1)
            | (ww < z).all(1) | (ww < -z).all(1))
    fast = (ww >= z.abs()).all(1) & (ww > 0).all(1) & ~cull
    rcp = 1.0 / torch.where(ww > 0, ww, torch.ones_like(ww))
    sx = torch.round(x * rcp * float(w * _SUBPIX // 2))
    sy = torch.round(y * rcp * float(h * _SUBPIX // 2))
    fast &= (sx.abs() <= _SNAP_LIMIT).all(1) & (sy.abs() <= _SNAP_LIMIT).all(1)
    sx = torch.where(fast[:, None], sx, torch.zeros_like(sx)).long()
    sy = torch.where(fast[:, None], sy, torch.zeros_like(sy)).long()
    area = (sx[:, 1] - sx[:, 0]) * (sy[:, 2] - sy[:, 0]) - (sy[:, 1] - sy[:, 0]) * (sx[:, 2] - sx[:, 0])
    keep_fast = fast & (area != 0)
    slow = ~fast & ~cull
    return rcp, sx, sy, area, keep_fast, slow


def _pixel_boxes(x, y, ww, rcp, sx, sy, keep_fast, slow, h: int, w: int):
    """Inclusive pixel bounding boxes: left/top corner ``lx, ly``, width ``bw`` and fragment ``counts`` per pair."""
    # Pixel bounding boxes (inclusive).
    biasx, biasy = w * _SUBPIX // 2 - _SUBPIX // 2, h * _SUBPIX // 2 - _SUBPIX // 2
    lx = torch.div(sx.min(1).values + biasx + _SUBPIX - 1, _SUBPIX, rounding_mode="floor")
    hx = torch.div(sx.max(1).values + biasx, _SUBPIX, rounding_mode="floor")
    ly = torch.div(sy.min(1).values + biasy + _SUBPIX - 1, _SUBPIX, rounding_mode="floor")
    hy = torch.div(sy.max(1).values + biasy, _SUBPIX, rounding_mode="floor")
    # Slow path: projected box with a 1-pixel margin when all w > 0, else the whole screen.
    allpos = (ww > 0).all(1)
    ndcx = (x * rcp).double()
    ndcy = (y * rcp).double()
    big = float(4 * max(h, w) + 8)
    slx = torch.floor((ndcx.min(1).values + 1) * 0.5 * w - 1).clamp(-big, big).long()
    shx = torch.ceil((ndcx.max(1).values + 1) * 0.5 * w + 1).clamp(-big, big).long()
    sly = torch.floor((ndcy.min(1).values + 1) * 0.5 * h - 1).clamp(-big, big).long()
    shy = torch.ceil((ndcy.max(1).values + 1) * 0.5 * h + 1).clamp(-big, big).long()
    slx = torch.where(allpos, slx, torch.zeros_like(slx))
    sly = torch.where(allpos, sly, torch.zeros_like(sly))
    shx = torch.where(allpos, shx, torch.full_like(shx, w - 1))
    shy = torch.where(allpos, shy, torch.full_like(shy, h - 1))
    lx = torch.where(slow, slx, lx).clamp(min=0)
    ly = torch.where(slow, sly, ly).clamp(min=0)
    hx = torch.where(slow, shx, hx).clamp(max=w - 1)
    hy = torch.where(slow, shy, hy).clamp(max=h - 1)
    active = (keep_fast | slow) & (lx <= hx) & (ly <= hy)
    bw = (hx - lx + 1).clamp(min=0)
    counts = torch.where(active, bw * (hy - ly + 1).clamp(min=0), torch.zeros_like(bw))
    return lx, ly, bw, counts


def _fast_edge_functions(sx, sy, area):
    """Integer edge functions for the fast path: ``(ek0, ekx, eky, tie_ok)``."""
    # Integer edge functions for the fast path: e_i(c) = K0 + Kx*cx + Ky*cy (edge i = vertices i+1 -> i+2),
    # oriented so the triangle has positive area; tie rule for samples exactly on an edge.
    sgn = torch.where(area < 0, -1, 1)
    ia, ib = [1, 2, 0], [2, 0, 1]
    ax, ay, bx_, by_ = sx[:, ia], sy[:, ia], sx[:, ib], sy[:, ib]
    ek0 = (ax * by_ - ay * bx_) * sgn[:, None]
    ekx = (ay - by_) * sgn[:, None]
    eky = (bx_ - ax) * sgn[:, None]
    ddx, ddy = (bx_ - ax) * sgn[:, None], (by_ - ay) * sgn[:, None]
    tie_ok = (ddy < 0) | ((ddy == 0) & (ddx > 0))
    return ek0, ekx, eky, tie_ok


def _homogeneous_coefficients(x, y, z, ww):
    """Float64 ``[K,6,3]`` coefficients of the slow path's homogeneous edge functions (see below)."""
    # Homogeneous (float64) coefficients: rows a0, a1, a2, sum(a), sum(a*z), sum(a*w) as c0 + c1*fx + c2*fy.
    ia, ib = [1, 2, 0], [2, 0, 1]
    xd, yd, zd, wd = x.double(), y.double(), z.double(), ww.double()
    xa, ya, wa = xd[:, ia], yd[:, ia], wd[:, ia]
    xb, yb, wb = xd[:, ib], yd[:, ib], wd[:, ib]
    coef = torch.stack([xa * yb - ya * xb, ya * wb - wa * yb, wa * xb - xa * wb], -1)   # [K,3(i),3]
    csum = coef.sum(1)
    cz = (coef * zd[:, :, None]).sum(1)
    cw = (coef * wd[:, :, None]).sum(1)
    return torch.cat([coef, csum[:, None], cz[:, None], cw[:, None]], 1)                # [K,6,3]


def _fragment_chunks(counts, max_fragments: int, dev):
    """Yield ``(kk, cnt)``: consecutive pair ids with their non-zero fragment counts, ~``max_fragments`` a chunk."""
    k_all = counts.shape[0]
    cum = torch.cumsum(counts, 0)
    cum_cpu = cum.cpu()
    total = int(cum_cpu[-1]) if k_all else 0
    start_k, done = 0, 0
    while done < total:
        end_k = int(torch.searchsorted(cum_cpu, torch.tensor(done + max_fragments), right=True))
        end_k = max(end_k, start_k + 1)
        while end_k < k_all and int(cum_cpu[end_k - 1]) == done:
            end_k += 1
        kk = torch.arange(start_k, end_k, device=dev)
        cnt = counts[kk]
        kk, cnt = kk[cnt > 0], cnt[cnt > 0]
        start_k = end_k
        if kk.numel() == 0:
            continue
        done = int(cum_cpu[end_k - 1])
        yield kk, cnt


def _expand_fragments(kk, cnt, lx, ly, bw, dev):
    """Fragments of a chunk: pair id ``rep`` and pixel ``(px, py)`` of each."""
    rep = torch.repeat_interleave(kk, cnt)
    first = torch.cumsum(cnt, 0) - cnt
    local = torch.arange(rep.shape[0], device=dev) - torch.repeat_interleave(first, cnt)
    bwr = bw[rep]
    px = lx[rep] + local % bwr
    py = ly[rep] + torch.div(local, bwr, rounding_mode="floor")
    return rep, px, py


def _fragment_coverage(rep, px, py, keep_fast, edges, hc, h: int, w: int):
    """Coverage ``cov`` of each fragment (exact integers on the fast path, homogeneous on the slow) and its ``z/w``."""
    ek0, ekx, eky, tie_ok = edges
    fxd = (2.0 * px.double() + 1.0) / w - 1.0
    fyd = (2.0 * py.double() + 1.0) / h - 1.0
    c = hc[rep]                                                         # [N,6,3]
    vals = c[..., 0] + c[..., 1] * fxd[:, None] + c[..., 2] * fyd[:, None]   # [N,6]
    a = vals[:, :3]
    s, zn, wn = vals[:, 3], vals[:, 4], vals[:, 5]
    is_fast = keep_fast[rep]
    # fast path coverage (exact integers)
    cxs = px * _SUBPIX + _SUBPIX // 2 - w * _SUBPIX // 2
    cys = py * _SUBPIX + _SUBPIX // 2 - h * _SUBPIX // 2
    e = ek0[rep] + ekx[rep] * cxs[:, None] + eky[rep] * cys[:, None]
    cov_fast = ((e > 0) | ((e == 0) & tie_ok[rep])).all(1)
    # slow path coverage (homogeneous)
    zw = zn / torch.where(wn == 0, torch.ones_like(wn), wn)
    cov_slow = (((a >= 0).all(1) | (a <= 0).all(1)) & (s != 0) & (wn / torch.where(s == 0, torch.ones_like(s), s) > 0)
                & (zw >= -1.0) & (zw <= 1.0))
    cov = torch.where(is_fast, cov_fast, cov_slow)
    return cov, zw


def _depth_test(best_z, best_k, scratch_z, scratch_k, pix, zf, kf) -> None:
    """Merge covered fragments into ``best_z/best_k`` in place: nearest ``z/w``, exact ties to the lowest id."""
    better = zf < best_z[pix]
    pix, zf, kf = pix[better], zf[better], kf[better]
    if pix.numel() == 0:
        return
    scratch_z.scatter_reduce_(0, pix, zf, reduce="amin")
    m = zf == scratch_z[pix]
    scratch_z[pix] = float("inf")
    pix, zf, kf = pix[m], zf[m], kf[m]
    scratch_k.scatter_reduce_(0, pix, kf, reduce="amin")
    m = kf == scratch_k[pix]
    scratch_k[pix] = _BIG_K
    pix, zf, kf = pix[m], zf[m], kf[m]
    best_z[pix] = zf
    best_k[pix] = kf


def interpolate_torch(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """nvdiffrast ``interpolate`` in PyTorch (works with any backend's ``rast``)."""
    if rast.dim() != 4 or rast.shape[-1] != 4:
        raise ValueError(f"interpolate: rast must be [B,H,W,4], got {tuple(rast.shape)}")
    b, h, w, _ = rast.shape
    if attr.dim() == 2:
        attr_flat, per_image_v = attr, 0
    elif attr.dim() == 3:
        if attr.shape[0] == 1:
            attr_flat, per_image_v = attr[0], 0
        elif attr.shape[0] == b:
            attr_flat, per_image_v = attr.reshape(-1, attr.shape[-1]), attr.shape[1]
        else:
            raise ValueError(f"interpolate: attr batch {attr.shape[0]} does not match rast batch {b}")
    else:
        raise ValueError(f"interpolate: attr must be [V,C] or [B,V,C], got {tuple(attr.shape)}")
    c = attr_flat.shape[-1]
    flat = rast.reshape(-1, 4)
    ids = flat[:, 3].detach().long() - 1
    pix = torch.nonzero(ids >= 0).squeeze(1)
    out = torch.zeros(b * h * w, c, dtype=attr.dtype, device=attr.device)
    if pix.numel() == 0:
        return out.reshape(b, h, w, c) + 0.0 * attr_flat.sum()
    t = tri.to(device=attr.device, dtype=torch.long)[ids[pix]]
    if per_image_v:
        t = t + (torch.div(pix, h * w, rounding_mode="floor") * per_image_v)[:, None]
    u = flat[pix, 0:1].to(attr.dtype)
    v = flat[pix, 1:2].to(attr.dtype)
    a0, a1, a2 = attr_flat[t[:, 0]], attr_flat[t[:, 1]], attr_flat[t[:, 2]]
    val = u * a0 + v * a1 + (1.0 - u - v) * a2
    out = out.index_put((pix,), val)
    return out.reshape(b, h, w, c)


def opposite_vertices(tri: torch.Tensor) -> torch.Tensor:
    """For triangle ``t`` and edge ``i`` (vertices ``i+1, i+2``), the vertex of the other triangle across that
    edge, or -1 if the edge has no neighbour (boundary), more than one (non-manifold) or the triangle is
    degenerate — those edges always count as potential silhouettes, as in nvdiffrast.  Topology is by index."""
    tri_l = tri.long()
    f = tri_l.shape[0]
    dev = tri_l.device
    if f == 0:
        return torch.empty(0, 3, dtype=torch.long, device=dev)
    ea, eb = tri_l[:, [1, 2, 0]], tri_l[:, [2, 0, 1]]
    lo, hi = torch.minimum(ea, eb), torch.maximum(ea, eb)
    nv = int(tri_l.max()) + 2
    keys = lo * nv + hi
    degen = (tri_l[:, 0] == tri_l[:, 1]) | (tri_l[:, 1] == tri_l[:, 2]) | (tri_l[:, 2] == tri_l[:, 0])
    keys = torch.where(degen[:, None], -1 - torch.arange(3 * f, device=dev).reshape(f, 3), keys).reshape(-1)
    order = torch.argsort(keys, stable=True)
    sk = keys[order]
    _, counts = torch.unique_consecutive(sk, return_counts=True)
    size = torch.repeat_interleave(counts, counts)
    start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    j = torch.arange(3 * f, device=dev)
    partner = torch.where(j == start, j + 1, j - 1)
    own = tri_l.reshape(-1)
    op_sorted = torch.where(size == 2, own[order[partner.clamp(max=3 * f - 1)]], torch.full_like(j, -1))
    op = torch.empty_like(op_sorted)
    op[order] = op_sorted
    return op.reshape(f, 3)


def antialias_torch(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
                    opposite: torch.Tensor | None = None) -> torch.Tensor:
    """nvdiffrast's analytic antialiasing in PyTorch (see :mod:`get3d.raster.base`)."""
    if color.dim() != 4 or color.shape[:3] != rast.shape[:3]:
        raise ValueError(f"antialias: color {tuple(color.shape)} must be [B,H,W,C] matching rast {tuple(rast.shape)}")
    b, h, w, c = color.shape
    dev = color.device
    tri_l = tri.to(device=dev, dtype=torch.long)
    if tri_l.shape[0] == 0:
        return color + 0.0 * pos.sum()
    instance = pos.dim() == 3
    nverts = pos.shape[1] if instance else 0
    pos_flat = pos.reshape(-1, 4)
    rd = rast.detach()
    ids = rd[..., 3]
    zs = rd[..., 2]
    pairs = _discontinuity_pairs(ids, h, w)
    if pairs is None:
        return color + 0.0 * pos.sum()
    bi, x0, y0, d, pixel0, pixel1, t, is1 = _edge_owner_triangles(ids, zs, pairs, tri_l.shape[0])
    rx = x0 + (is1 & ~d).long()
    ry = y0 + (is1 & d).long()
    ds = torch.where(is1, -1.0, 1.0).to(torch.float32)
    if opposite is None:
        opposite = opposite_vertices(tri_l)
    vi, op = _triangle_and_opposite_vertices(tri_l, opposite, t, bi, instance, nverts)
    xh, yh = 0.5 * w, 0.5 * h
    fx = (rx.to(torch.float32) + 0.5 - xh)[:, None]
    fy = (ry.to(torch.float32) + 0.5 - yh)[:, None]
    di, valid = _silhouette_edges(pos_flat, vi, op, d, ds, fx, fy, xh, yh)
    sel = torch.nonzero(valid).squeeze(1)
    if sel.numel() == 0:
        return color + 0.0 * pos.sum()
    di, d, ds, pixel0, pixel1 = di[sel], d[sel], ds[sel], pixel0[sel], pixel1[sel]
    fx, fy, vi = fx[sel, 0], fy[sel, 0], vi[sel]
    alpha = _blend_weight(pos_flat, vi, di, d, ds, fx, fy, xh, yh)
    target = torch.where(alpha.detach() > 0, pixel0, pixel1)
    cf = color.reshape(-1, c)
    delta = alpha[:, None].to(color.dtype) * (cf[pixel1] - cf[pixel0])
    out = cf.index_add(0, target, delta)
    return out.reshape(b, h, w, c)


def _discontinuity_pairs(ids: torch.Tensor, h: int, w: int):
    """Horizontal then vertical neighbour pixel pairs whose triangle ids differ:
    ``(bi, x0, y0, d, pixel0, pixel1)`` with ``d`` True for vertical pairs; None if there are none."""
    bi_r, y_r, x_r = torch.nonzero(ids[:, :, :-1] != ids[:, :, 1:], as_tuple=True)
    bi_d, y_d, x_d = torch.nonzero(ids[:, :-1, :] != ids[:, 1:, :], as_tuple=True)
    if bi_r.numel() + bi_d.numel() == 0:
        return None
    bi = torch.cat([bi_r, bi_d])
    x0 = torch.cat([x_r, x_d])
    y0 = torch.cat([y_r, y_d])
    d = torch.cat([torch.zeros_like(bi_r, dtype=torch.bool), torch.ones_like(bi_d, dtype=torch.bool)])
    x1 = x0 + (~d).long()
    y1 = y0 + d.long()
    pixel0 = (bi * h + y0) * w + x0
    pixel1 = (bi * h + y1) * w + x1
    return bi, x0, y0, d, pixel0, pixel1


def _edge_owner_triangles(ids: torch.Tensor, zs: torch.Tensor, pairs, num_tri: int):
    """For each pair, the triangle ``t`` whose edge is tested (the nearer one when both pixels are covered) and
    ``is1`` (it is pixel1's); pairs without a valid triangle are dropped.  Returns the pair tuple + ``t, is1``."""
    bi, x0, y0, d, pixel0, pixel1 = pairs
    ids_f, zs_f = ids.reshape(-1), zs.reshape(-1)
    t0 = ids_f[pixel0].long() - 1
    t1 = ids_f[pixel1].long() - 1
    z0, z1 = zs_f[pixel0], zs_f[pixel1]
    t = torch.where(t0 >= 0, t0, t1)
    both = (t0 >= 0) & (t1 >= 0)
    t = torch.where(both, torch.where(z0 < z1, t0, t1), t)
    is1 = t == t1
    ok = (t >= 0) & (t < num_tri)
    sel = torch.nonzero(ok).squeeze(1)
    return tuple(q[sel] for q in (bi, x0, y0, d, pixel0, pixel1, t, is1))


def _triangle_and_opposite_vertices(tri_l, opposite, t, bi, instance: bool, nverts: int):
    """Flat vertex indices ``vi [N,3]`` of triangle ``t`` and ``op [N,3]`` across each edge (``vi`` if none)."""
    vi = tri_l[t]
    op = opposite[t]
    if instance:
        base = (bi * nverts)[:, None]
        vi = vi + base
        op = torch.where(op >= 0, op + base, op)
    op = torch.where(op >= 0, op, vi)
    return vi, op


@torch.no_grad()
def _silhouette_edges(pos_flat, vi, op, d, ds, fx, fy, xh: float, yh: float):
    """Without autograd: the edge ``di`` of each triangle that crosses the pair's segment, and whether it is a
    ``valid`` silhouette crossing."""
    dev = vi.device
    pd = pos_flat.detach()
    p, o = pd[vi], pd[op]
    X = p[..., 0] / p[..., 3] * xh - fx
    Y = p[..., 1] / p[..., 3] * yh - fy
    OX = o[..., 0] / o[..., 3] * xh - fx
    OY = o[..., 1] / o[..., 3] * yh - fy
    xa, ya = X[:, [1, 2, 0]], Y[:, [1, 2, 0]]          # edge i start (vertex i+1)
    xb, yb = X[:, [2, 0, 1]], Y[:, [2, 0, 1]]          # edge i end (vertex i+2)
    bb = (X[:, 1] - X[:, 0]) * (Y[:, 2] - Y[:, 0]) - (X[:, 2] - X[:, 0]) * (Y[:, 1] - Y[:, 0])
    wing = (xa - OX) * (yb - OY) - (xb - OX) * (ya - OY)
    sil = _same_sign(wing, bb[:, None])
    dcol = d[:, None]
    sxa, sya = torch.where(dcol, ya, xa), torch.where(dcol, xa, ya)
    sxb, syb = torch.where(dcol, yb, xb), torch.where(dcol, xb, yb)
    dxe, dye = sxb - sxa, syb - sya
    dnum = ds[:, None] * (sxa * dye - sya * dxe)
    excl = _same_sign(sya, syb)
    dnum = torch.where(excl, torch.full_like(dnum, -float("inf")), dnum)
    dye = torch.where(excl, torch.ones_like(dye), dye)
    ratio = dnum / dye
    di = torch.argmax(ratio, 1)
    r = torch.arange(di.shape[0], device=dev)
    dc = ratio[r, di]
    eps = 0.0625
    valid = sil[r, di] & (dye[r, di].abs() >= dxe[r, di].abs()) & (dc > -eps) & (dc < 1.0 + eps)
    return di, valid


def _blend_weight(pos_flat, vi, di, d, ds, fx, fy, xh: float, yh: float):
    """Signed blend weight ``alpha`` (with autograd) from silhouette edge ``di``'s two vertices."""
    r = torch.arange(di.shape[0], device=vi.device)
    p1 = pos_flat[vi[r, (di + 1) % 3]]
    p2 = pos_flat[vi[r, (di + 2) % 3]]
    ax_ = p1[:, 0] / p1[:, 3] * xh - fx
    ay_ = p1[:, 1] / p1[:, 3] * yh - fy
    bx_ = p2[:, 0] / p2[:, 3] * xh - fx
    by_ = p2[:, 1] / p2[:, 3] * yh - fy
    ax, ay = torch.where(d, ay_, ax_), torch.where(d, ax_, ay_)
    bx, by = torch.where(d, by_, bx_), torch.where(d, bx_, by_)
    dxl, dyl = bx - ax, by - ay
    dc = ds * (ax * dyl - ay * dxl) / dyl
    dc = dc.clamp(0.0, 1.0)
    alpha = ds * (0.5 - dc)
    return alpha
