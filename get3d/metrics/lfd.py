"""Light Field Distance (Chen et al. 2003) in PyTorch, batched over silhouettes and mesh pairs.

Per mesh (see docs/lfd-validation.md for the comparison with the original C program):

1. centre the bounding box at the origin, scale the largest side to 1;
2. render 10 light fields x 10 orthographic silhouettes of 256x256: cameras on the first 10 vertices of 10
   rotated dodecahedra (radius 1.0705, looking at the origin, up +y, ortho box [-1,1]^2, depth [0,2]);
   the other 10 vertices of each dodecahedron are antipodal (mirror silhouettes) and are not rendered;
3. per silhouette (row 0 = bottom, as OpenGL reads back) with centre = middle of its pixel bounding box:
   - 35 ART magnitudes (angular p < 12, radial r < 3, MPEG-7 order: p=0 r=1,2 then p=1..11 r=0..2), basis
     cos(pi r rho) e^{-i p theta} sampled on a 101x101 lookup table (radius 50) with bilinear interpolation,
     pixel coordinates scaled so the farthest silhouette pixel of the light field's 10 views lies at rho=1,
     averaged over pixels and divided by the (0,0) coefficient;
   - 10 Fourier descriptors: |X_k|/|X_0|, k=1..10, of the centroid-distance signal along the traced outer
     contour (square tracing; multi-part silhouettes are first merged by 3x3, then 5x5 dilation, then their
     bounding box, followed by topology-preserving thinning back inside the silhouette);
   - circularity 4 pi A / P^2 (P = pixels with a background 8-neighbour), clipped to 1;
   - eccentricity ((m20-m02)^2 + 4 m11^2) / (m20+m02)^2 of second moments about the centre, clipped to 1;
   each quantized as min(floor(256 * value), 255) (Fourier descriptors: 256 * 2 * value);
4. view distance = sum|d art| + 2 sum|d fd| + 2|d circ| + |d ecc| (on the 8-bit codes);
   light-field distance = min over the 60 rotations of the dodecahedron of the sum over the 10 views;
   LFD = min over the 10 x 10 light-field pairs.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from get3d import perf

from ._lfd_tables import ANTIPODE_MAP, CAMERAS, THIN_DELETE

RES = 256
N_LF = 10
N_VIEW = 10
ART_ANG, ART_RAD, ART_COEF = 12, 3, 35
LUT_R = 50
LUT_N = 2 * LUT_R + 1
FD_N = 10
_PI = 3.141592653          # the constant the reference program uses
_PI4 = 12.5663704
DESC_DIM = ART_COEF + FD_N + 2


@dataclass
class LFDDescriptor:
    """8-bit codes of one mesh: art [10,10,35], fd [10,10,10], cir [10,10], ecc [10,10] (light field, view, ...)."""

    art: torch.Tensor
    fd: torch.Tensor
    cir: torch.Tensor
    ecc: torch.Tensor

    def vector(self) -> torch.Tensor:
        """[10, 10, 47] float32 vectors whose L1 distance is the view distance (fd and circ pre-weighted by 2)."""
        return torch.cat([self.art.float(), 2 * self.fd.float(), 2 * self.cir.float()[..., None],
                          self.ecc.float()[..., None]], -1)


# ------------------------------------------------------------------------------------------ cameras

def camera_positions() -> torch.Tensor:
    """[10, 10, 3] float64 camera centres of the rendered views."""
    return torch.tensor(CAMERAS, dtype=torch.float64)[:, :N_VIEW]


def alignment_table() -> torch.Tensor:
    """[60, 10] long: for rotation j, view m of one light field is compared with view ``table[j, m]`` of the other.

    Derived here from the dodecahedron: a rotation of the dodecahedron maps vertex 0 to any of the 20 vertices
    and a fixed neighbour of vertex 0 to any of the 3 neighbours of that image: 60 rotations.  Each vertex
    permutation is folded onto the 10 rendered views with the antipode map.
    """
    v = np.array(CAMERAS[0], dtype=np.float64)
    d = np.linalg.norm(v[:, None] - v[None], axis=-1)
    edge = np.sort(d[0])[1]
    nbrs = [np.nonzero(np.abs(d[i] - edge) < 1e-3)[0] for i in range(20)]
    a, b = 0, int(nbrs[0][0])

    def frame(p, q):
        e1 = p / np.linalg.norm(p)
        e2 = q - (q @ e1) * e1
        e2 /= np.linalg.norm(e2)
        return np.stack([e1, e2, np.cross(e1, e2)], 1)

    f0 = frame(v[a], v[b])
    rows = []
    for ia in range(20):
        for ib in nbrs[ia]:
            rot = frame(v[ia], v[ib]) @ f0.T
            img = v @ rot.T
            perm = np.argmin(np.linalg.norm(img[:, None] - v[None], axis=-1), axis=1)
            if np.abs(img - v[perm]).max() > 1e-3 or len(set(perm.tolist())) != 20:
                raise RuntimeError("LFD camera set is not a dodecahedron")
            rows.append([ANTIPODE_MAP[p] for p in perm[:N_VIEW]])
    return torch.tensor(rows, dtype=torch.long)


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


# ------------------------------------------------------------------------------------------ descriptors

def _art_lut(device) -> torch.Tensor:
    """[(LUT_N+1)^2, 2*12*3] real/imag basis values on the LUT grid, zero-padded by one row/column."""
    i = torch.arange(LUT_N + 1, dtype=torch.float64, device=device)
    gx, gy = torch.meshgrid(i - LUT_R, i - LUT_R, indexing="ij")  # LUT index [x][y]
    rad = torch.sqrt(gx * gx + gy * gy)
    ang = torch.atan2(gy, gx)
    p = torch.arange(ART_ANG, dtype=torch.float64, device=device)[:, None, None, None]
    r = torch.arange(ART_RAD, dtype=torch.float64, device=device)[None, :, None, None]
    radial = torch.cos(rad * _PI * r / LUT_R)
    re = radial * torch.cos(ang * p)
    im = radial * torch.sin(ang * p)
    inside = (rad < LUT_R) & (gx <= LUT_R) & (gy <= LUT_R)
    re, im = re * inside, im * inside
    return torch.cat([re.reshape(ART_ANG * ART_RAD, -1), im.reshape(ART_ANG * ART_RAD, -1)], 0).T.contiguous()


def _centres(sil: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Middle of the pixel bounding box per silhouette; -1 when nothing (or only column 0) is drawn."""
    _N, H, W = sil.shape
    cols = sil.any(1)
    rows = sil.any(2)
    xs = torch.arange(W, device=sil.device)
    ys = torch.arange(H, device=sil.device)
    maxx = torch.where(cols, xs, -1).max(1).values
    minx = torch.where(cols, xs, W).min(1).values
    maxy = torch.where(rows, ys, -1).max(1).values
    miny = torch.where(rows, ys, H).min(1).values
    ok = maxx > 0
    cx = torch.where(ok, (maxx + minx).double() / 2, torch.full_like(maxx, -1, dtype=torch.float64))
    cy = torch.where(ok, (maxy + miny).double() / 2, torch.full_like(maxy, -1, dtype=torch.float64))
    return cx, cy


def _quant(x: torch.Tensor, scale: float = 256.0) -> torch.Tensor:
    return torch.clamp(torch.floor(x * scale), 0, 255).to(torch.uint8)



def _art_magnitudes(coef: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """ART sums ``[N, 72]`` (real, imaginary) over ``count`` pixels → the 35 normalised magnitudes in MPEG-7 order."""
    N = coef.shape[0]
    cnt = count.clamp_min(1)[:, None]
    re, im = coef[:, :36] / cnt, -coef[:, 36:] / cnt
    mag = torch.sqrt(re * re + im * im).view(N, ART_ANG, ART_RAD)
    mag = mag / mag[:, :1, :1].clamp_min(1e-300)
    mag = torch.where(count[:, None, None] > 0, mag, torch.zeros_like(mag))
    flat = mag.reshape(N, -1)
    order = [0 * ART_RAD + r for r in (1, 2)] + [p * ART_RAD + r for p in range(1, ART_ANG) for r in range(ART_RAD)]
    return flat[:, order]

def art_coefficients_reference(sil: torch.Tensor, cx, cy, radius) -> torch.Tensor:
    """[N, 35] float64 ART magnitudes; ``radius`` [N] is the light field's farthest-pixel radius."""
    N, H, W = sil.shape
    dev = sil.device
    ys, xs = torch.meshgrid(torch.arange(H, device=dev, dtype=torch.float64),
                            torch.arange(W, device=dev, dtype=torch.float64), indexing="ij")
    rr = torch.where(radius > 0, LUT_R / radius, torch.zeros_like(radius))
    tx = (xs[None] - cx[:, None, None]) * rr[:, None, None] + LUT_R
    ty = (ys[None] - cy[:, None, None]) * rr[:, None, None] + LUT_R
    ix = torch.trunc(tx).clamp(0, LUT_N - 1)
    iy = torch.trunc(ty).clamp(0, LUT_N - 1)
    dx, dy = tx - ix, ty - iy
    m = sil.double()
    ix, iy = ix.long(), iy.long()
    stride = LUT_N + 1
    base = ix * stride + iy
    w = torch.zeros(N, stride * stride, dtype=torch.float64, device=dev)
    for off, wt in ((0, (1 - dx) * (1 - dy)), (stride, dx * (1 - dy)), (1, (1 - dx) * dy), (stride + 1, dx * dy)):
        w.scatter_add_(1, (base + off).reshape(N, -1), (wt * m).reshape(N, -1))
    coef = w @ _art_lut(dev)  # [N, 72] sums of real and imaginary parts
    count = m.sum((1, 2))
    return _art_magnitudes(coef, count)


def eccentricity_reference(sil, cx, cy) -> torch.Tensor:
    _N, H, W = sil.shape
    ys, xs = torch.meshgrid(torch.arange(H, device=sil.device, dtype=torch.float64),
                            torch.arange(W, device=sil.device, dtype=torch.float64), indexing="ij")
    m = sil.double()
    dx = xs[None] - cx[:, None, None]
    dy = ys[None] - cy[:, None, None]
    i02 = (m * dy * dy).sum((1, 2))
    i11 = (m * dx * dy).sum((1, 2))
    i20 = (m * dx * dx).sum((1, 2))
    den = (i20 + i02) ** 2
    ecc = ((i20 - i02) ** 2 + 4 * i11 ** 2) / torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(m.sum((1, 2)) > 1, ecc.clamp(max=1), torch.zeros_like(ecc))


def _shift(x: torch.Tensor, dy: int, dx: int, fill=False) -> torch.Tensor:
    """out[y, x] = x[y + dy, x + dx] (``fill`` outside)."""
    _N, H, W = x.shape
    out = torch.full_like(x, fill)
    ys, yd = (slice(max(dy, 0), H + min(dy, 0)), slice(max(-dy, 0), H + min(-dy, 0)))
    xs, xd = (slice(max(dx, 0), W + min(dx, 0)), slice(max(-dx, 0), W + min(-dx, 0)))
    out[:, yd, xd] = x[:, ys, xs]
    return out


def circularity_reference(sil) -> torch.Tensor:
    m = sil
    edge = torch.zeros_like(m)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                edge |= m & ~_shift(m, dy, dx, fill=True)  # outside the image counts as foreground
    area = m.sum((1, 2)).double()
    per = edge.sum((1, 2)).double()
    cir = _PI4 * area / torch.where(per > 0, per * per, torch.ones_like(per))
    return torch.where(per > 0, cir.clamp(max=1), torch.zeros_like(cir))


# contour tracing ------------------------------------------------------------------------------------------
# direction d: 0 = +y ("down" in the reference's memory order), 1 = +x, 2 = -y, 3 = -x.  Candidates P1..P3.
_NEXT = torch.tensor([[(1, -1), (1, 0), (1, 1)], [(1, 1), (0, 1), (-1, 1)],
                      [(-1, 1), (-1, 0), (-1, -1)], [(-1, -1), (0, -1), (1, -1)]])  # (dy, dx)
_NEXT_DIR = torch.tensor([[3, 0, 0], [0, 1, 1], [1, 2, 2], [2, 3, 3]])


def trace_contours_reference(sil: torch.Tensor, max_steps: int | None = None):
    """Square-tracing of the outer contour from the first foreground pixel in memory order.

    Returns ``(ys, xs, length)``: [N, L] long coordinates (the start pixel appears first and last) and [N]
    lengths (-1 when there is no pixel or the start pixel is isolated).
    """
    N, H, W = sil.shape
    dev = sil.device
    pad = torch.zeros(N, H + 2, W + 2, dtype=torch.bool, device=dev)
    pad[:, 1:-1, 1:-1] = sil
    flat = pad.view(N, -1)
    Wp = W + 2
    has = sil.view(N, -1).any(1)
    start = torch.argmax(sil.view(N, -1).to(torch.uint8), 1)
    sy, sx = start // W + 1, start % W + 1
    spos = sy * Wp + sx
    rowsN = torch.arange(N, device=dev)

    def at(pos):
        return flat[rowsN, pos]

    may_loss = at(spos + Wp - 1) & ~at(spos + Wp) & (at(spos + Wp + 1) | at(spos + 1))
    nxt = (_NEXT[..., 0] * Wp + _NEXT[..., 1]).to(dev)  # [4,3] flat offsets
    nd = _NEXT_DIR.to(dev)
    order_d = (torch.arange(4, device=dev)[:, None] + torch.arange(4, device=dev)[None]) % 4  # [dir, j] -> d
    pos = spos.clone()
    cur = torch.zeros(N, dtype=torch.long, device=dev)
    active = has.clone()
    length = torch.where(has, torch.ones_like(cur), -torch.ones_like(cur))
    trail = [spos.clone()]
    max_steps = max_steps if max_steps is not None else H * W
    step = 0
    while bool(active.any()) and step < max_steps:
        step += 1
        ds = order_d[cur]                       # [N, 4] directions tried in order
        cand = pos[:, None, None] + nxt[ds]     # [N, 4, 3]
        fg = flat.gather(1, cand.view(N, -1)).view(N, 12)
        anyfg = fg.any(1)
        k = torch.argmax(fg.to(torch.uint8), 1)
        dsel = ds.gather(1, (k // 3)[:, None])[:, 0]
        isel = k % 3
        newpos = cand.view(N, 12).gather(1, k[:, None])[:, 0]
        newdir = nd[dsel, isel]
        fail = active & ~anyfg
        length = torch.where(fail, -torch.ones_like(length), length)
        active = active & anyfg
        pos = torch.where(active, newpos, pos)
        cur = torch.where(active, newdir, cur)
        length = length + active.long()
        trail.append(torch.where(active, pos, torch.full_like(pos, -1)))
        done = active & (pos == spos) & (~may_loss | (cur != 1))
        active = active & ~done
    if bool(active.any()):
        warnings.warn("trace_contours: contour did not close within max_steps", RuntimeWarning, stacklevel=2)
        length = torch.where(active, -torch.ones_like(length), length)
    tr = torch.stack(trail, 1)
    ys = torch.where(tr >= 0, tr // Wp - 1, tr)
    xs = torch.where(tr >= 0, tr % Wp - 1, tr)
    return ys, xs, length


def _contour_mask(ys, xs, length, shape) -> torch.Tensor:
    N, H, W = shape
    mask = torch.zeros(N, H * W, dtype=torch.bool, device=ys.device)
    ok = (ys >= 0) & (length[:, None] > 0)
    idx = torch.where(ok, ys * W + xs, torch.zeros_like(ys))
    mask.scatter_(1, idx, ok)
    return mask.view(N, H, W)


def _outside_region_reference(contour: torch.Tensor) -> torch.Tensor:
    """Pixels 4-connected to the image border without crossing a contour pixel (border always included)."""
    N, H, W = contour.shape
    border = torch.zeros_like(contour)
    border[:, 0] = border[:, -1] = True
    border[:, :, 0] = border[:, :, -1] = True
    free = ~contour | border
    if contour.device.type == "cpu":
        from scipy import ndimage

        out = np.zeros((N, H, W), dtype=bool)
        fr = free.numpy()
        bd = border[0].numpy()
        for n in range(N):
            lab, _ = ndimage.label(fr[n])
            ids = np.unique(lab[bd & fr[n]])
            out[n] = np.isin(lab, ids[ids > 0])
        return torch.from_numpy(out)
    out = border.clone()
    while True:
        prev = out
        for _ in range(16):
            grown = out | _shift(out, 1, 0) | _shift(out, -1, 0) | _shift(out, 0, 1) | _shift(out, 0, -1)
            out = grown & free
        if torch.equal(out, prev):
            return out


def is_multi_part(sil, contour, reference: bool = False) -> torch.Tensor:
    outside = (_outside_region_reference if reference else _outside_region)(contour)
    fg = sil.sum((1, 2)).double()
    inside = (sil & ~outside).sum((1, 2)).double()
    frac = inside / fg.clamp_min(1)
    return ~(frac > 0.95)


def _dilate(x, offsets) -> torch.Tensor:
    _N, H, W = x.shape
    out = x.clone()
    inner = torch.zeros_like(x)
    inner[:, 2:H - 2, 2:W - 2] = True
    for dy, dx in offsets:
        out |= _shift(x, dy, dx) & inner
    return out


_OFF3 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
_OFF5 = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if abs(dy) + abs(dx) < 4]


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


# thinning neighbours in the reference's order k=1..8: +x, -y, -x, +y, (+y,+x), (-y,+x), (-y,-x), (+y,-x)
_THIN_NB = [(0, 1), (-1, 0), (0, -1), (1, 0), (1, 1), (-1, 1), (-1, -1), (1, -1)]
_THIN_SIDES = [1, 3, 2, 0]  # reference side order 2,4,3,1 -> indices into _THIN_NB


def thin_reference(buff: torch.Tensor, sil: torch.Tensor, max_iter: int = 10_000) -> torch.Tensor:
    """Peel pixels of ``buff`` that are background in ``sil`` while keeping topology (parallel per side)."""
    N, H, W = buff.shape
    table = torch.tensor(list(THIN_DELETE), dtype=torch.bool, device=buff.device)
    inner = torch.zeros_like(buff)
    inner[:, 1:H - 1, 1:W - 1] = True
    flag = buff.clone()
    src = buff.clone()
    for _ in range(max_iter):
        change = False
        for side in _THIN_SIDES:
            idx = torch.zeros(N, H, W, dtype=torch.long, device=buff.device)
            for k, (dy, dx) in enumerate(_THIN_NB):
                idx |= _shift(flag, dy, dx).long() << k
            sy, sx = _THIN_NB[side]
            dele = flag & ~_shift(flag, sy, sx) & table[idx] & ~sil & inner
            if bool(dele.any()):
                change = True
                src = src & ~dele
                flag = flag & src
        if not change:
            break
    return src


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


# ------------------------------------------------------------------------------------------ fast path
# Same results as the *_reference functions above, computed on foreground pixels only (ART, moments), with
# table-driven contour tracing, a frontier-based parallel thinning and a batched flood fill.

GPU_ALGORITHMS: bool | None = None
"""Which variant of the loop-heavy steps to run: ``None`` = by device (CUDA: the launch/sync-light variants:
flood fill by run sweeps, thinning with one host sync per sub-pass; CPU: scipy labelling and the work-list
thinning), ``True``/``False`` to force one (tests run the GPU variants on CPU).  Both give identical codes."""


def _gpu_style(device) -> bool:
    return torch.device(device).type != "cpu" if GPU_ALGORITHMS is None else bool(GPU_ALGORITHMS)


class _few_threads:
    """Run a loop of many small CPU ops on one intra-op thread (thread hand-offs dominate them otherwise,
    badly so on a busy machine); no-op on GPU."""

    def __init__(self, device):
        self.cpu = torch.device(device).type == "cpu"

    def __enter__(self):
        if self.cpu:
            self.n = torch.get_num_threads()
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.cpu:
            torch.set_num_threads(self.n)


class _Pixels:
    """Foreground pixels of a silhouette batch in memory order: silhouette index, x, y and offsets to the centre."""

    def __init__(self, sil, cx, cy):
        N, _H, W = sil.shape
        nz = torch.nonzero(sil.reshape(N, -1))
        self.N = N
        self.n = nz[:, 0]
        p = nz[:, 1]
        self.y = (p // W).double()
        self.x = (p % W).double()
        self.dx = self.x - cx[self.n]
        self.dy = self.y - cy[self.n]
        # pixels per silhouette as a dense reduction: bincount of the pixel list's silhouette ids is an atomic
        # histogram into few bins (8 % of the GPU time of descriptor extraction at batch 64)
        self.count = sil.reshape(N, -1).sum(1)

    def sum(self, w) -> torch.Tensor:
        return torch.zeros(self.N, dtype=torch.float64, device=self.n.device).index_add_(0, self.n, w)

    def rmax(self) -> torch.Tensor:
        r = torch.sqrt(self.dx ** 2 + self.dy ** 2)
        return torch.zeros(self.N, dtype=torch.float64, device=r.device).scatter_reduce_(0, self.n, r, "amax")


def art_coefficients(sil: torch.Tensor, cx, cy, radius, pts: _Pixels | None = None) -> torch.Tensor:
    """[N, 35] float64 ART magnitudes (as :func:`art_coefficients_reference`, foreground pixels only)."""
    N = sil.shape[0]
    dev = sil.device
    pts = pts if pts is not None else _Pixels(sil, cx, cy)
    rr = torch.where(radius > 0, LUT_R / radius, torch.zeros_like(radius))[pts.n]
    tx = pts.dx * rr + LUT_R
    ty = pts.dy * rr + LUT_R
    ix = torch.trunc(tx).clamp(0, LUT_N - 1)
    iy = torch.trunc(ty).clamp(0, LUT_N - 1)
    dx, dy = tx - ix, ty - iy
    stride = LUT_N + 1
    base = pts.n * (stride * stride) + ix.long() * stride + iy.long()
    w = torch.zeros(N * stride * stride, dtype=torch.float64, device=dev)
    for off, wt in ((0, (1 - dx) * (1 - dy)), (stride, dx * (1 - dy)), (1, (1 - dx) * dy), (stride + 1, dx * dy)):
        w.scatter_add_(0, base + off, wt)
    coef = w.view(N, -1) @ _art_lut(dev)
    return _art_magnitudes(coef, pts.count.double())


def eccentricity(sil, cx, cy, pts: _Pixels | None = None) -> torch.Tensor:
    """As :func:`eccentricity_reference` (moments are sums of multiples of 1/4: exact in any order)."""
    pts = pts if pts is not None else _Pixels(sil, cx, cy)
    i02 = pts.sum(pts.dy * pts.dy)
    i11 = pts.sum(pts.dx * pts.dy)
    i20 = pts.sum(pts.dx * pts.dx)
    count = pts.count
    den = (i20 + i02) ** 2
    ecc = ((i20 - i02) ** 2 + 4 * i11 ** 2) / torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(count > 1, ecc.clamp(max=1), torch.zeros_like(ecc))


def _padded(x: torch.Tensor, p: int, fill: bool) -> torch.Tensor:
    N, H, W = x.shape
    out = torch.full((N, H + 2 * p, W + 2 * p), fill, dtype=x.dtype, device=x.device)
    out[:, p:p + H, p:p + W] = x
    return out


def circularity(sil) -> torch.Tensor:
    """As :func:`circularity_reference` (slices of one padded copy instead of shifted copies)."""
    _N, H, W = sil.shape
    pad = _padded(sil, 1, True)
    interior = sil.clone()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                interior &= pad[:, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
    area = sil.sum((1, 2)).double()
    per = (sil & ~interior).sum((1, 2)).double()
    cir = _PI4 * area / torch.where(per > 0, per * per, torch.ones_like(per))
    return torch.where(per > 0, cir.clamp(max=1), torch.zeros_like(cir))


def _dilate_fast(x, offsets) -> torch.Tensor:
    """As :func:`_dilate`: OR of shifted copies, kept 2 pixels inside the image."""
    _N, H, W = x.shape
    pad = _padded(x, 2, False)
    out = x.clone()
    acc = torch.zeros_like(x)
    for dy, dx in offsets:
        acc |= pad[:, 2 + dy:2 + dy + H, 2 + dx:2 + dx + W]
    out[:, 2:H - 2, 2:W - 2] |= acc[:, 2:H - 2, 2:W - 2]
    return out


# 8-neighbour bit order used by the tracing lookup table
_NB8 = [(1, -1), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1)]


def _trace_lut() -> torch.Tensor:
    """[4 * 256] long: (direction, 8-neighbour code) -> 4 * neighbour index (8 = none) + new direction."""
    lut = torch.full((4 * 256,), 32, dtype=torch.long)
    for cur in range(4):
        for code in range(256):
            for j in range(4):
                d = (cur + j) % 4
                hit = None
                for i in range(3):
                    nb = _NB8.index(tuple(_NEXT[d, i].tolist()))
                    if code >> nb & 1:
                        hit = 4 * nb + int(_NEXT_DIR[d, i])
                        break
                if hit is not None:
                    lut[cur * 256 + code] = hit
                    break
    return lut


_TRACE_LUT = _trace_lut()


def trace_contours(sil: torch.Tensor, max_steps: int | None = None):
    """As :func:`trace_contours_reference`: one table lookup per step (direction x 8-neighbourhood code)."""
    with _few_threads(sil.device):
        return _trace(sil, max_steps)


def _trace(sil: torch.Tensor, max_steps: int | None):
    """Square tracing of the whole batch without a per-step loop.

    A tracing state is (contour pixel, direction); its successor is one table lookup (direction x
    8-neighbourhood code), so the successor of *every* state of every silhouette is computed at once.  States
    live on the fg pixels that have a background 8-neighbour (every pixel a trace can visit: the pixel on its
    left is background).  Two absorbing states end a trace: "closed" (per silhouette: back on the start pixel,
    with the stopping rule of :func:`trace_contours_reference`) and "failed" (isolated start pixel).  The state
    sequence of each silhouette is then built by doubling: ``seq <- [seq, J[seq]]``, ``J <- J[J]`` (J = the
    2^k-step successor), one host check per doubling round (about log2 of the longest contour).
    """
    N, H, W = sil.shape
    dev = sil.device
    Hp, Wp = H + 2, W + 2
    F = Hp * Wp
    max_steps = max_steps if max_steps is not None else H * W
    pp = _padded(sil, 2, False).to(torch.uint8)
    code = torch.zeros(N, Hp, Wp, dtype=torch.uint8, device=dev)
    for b, (dy, dx) in enumerate(_NB8):
        code |= pp[:, 1 + dy:1 + dy + Hp, 1 + dx:1 + dx + Wp] << b
    fg = pp[:, 1:1 + Hp, 1:1 + Wp].bool()
    flat_fg = fg.reshape(-1)
    has = sil.reshape(N, -1).any(1)
    start = torch.argmax(sil.reshape(N, -1).to(torch.uint8), 1)
    spos = (start // W + 1) * Wp + start % W + 1                       # per silhouette, padded frame
    rowsN = torch.arange(N, device=dev)
    gstart = rowsN * F + spos

    def at(pos):
        return flat_fg[rowsN * F + pos]

    may_loss = at(spos + Wp - 1) & ~at(spos + Wp) & (at(spos + Wp + 1) | at(spos + 1))
    g = torch.nonzero((fg & (code != 255)).reshape(-1))[:, 0]       # contour-able pixels, global padded index
    P = g.numel()
    idmap = torch.full((N * F,), -1, dtype=torch.int32, device=dev)
    idmap[g] = torch.arange(P, dtype=torch.int32, device=dev)
    lut = _TRACE_LUT.to(dev)
    offs = torch.tensor([dy * Wp + dx for dy, dx in _NB8] + [0], device=dev)
    e = lut[(torch.arange(4, device=dev) * 256)[None] + code.reshape(-1)[g].long()[:, None]]   # [P, 4]
    newpos = g[:, None] + offs[e >> 2]
    newdir = e & 3
    n_of = g // F
    fail_state, closed0 = 4 * P, 4 * P + 1
    closes = (newpos == gstart[n_of][:, None]) & (~may_loss[n_of][:, None] | (newdir != 1))
    nxt = 4 * idmap[torch.where(e < 32, newpos, g[:, None])].long() + newdir
    succ = torch.where(e >= 32, fail_state, torch.where(closes, closed0 + n_of[:, None], nxt)).reshape(-1)
    jump = torch.cat([succ, torch.full((1,), fail_state, device=dev), closed0 + rowsN])
    # padded-frame position of each state (the start pixel for "closed", -1 for "failed")
    spos_of = torch.cat([(g - n_of * F)[:, None].expand(P, 4).reshape(-1), torch.full((1,), -1, device=dev), spos])
    s0 = torch.where(has, 4 * idmap[gstart].long().clamp_min(0), torch.full_like(spos, fail_state))
    seq = s0[:, None]
    limit = max_steps + 1
    while seq.shape[1] < limit:
        if bool((seq[:, -1] >= fail_state).all()):
            break
        seq = torch.cat([seq, jump[seq]], 1)
        jump = jump[jump]
    seq = seq[:, :limit]
    absorbed = seq >= fail_state
    closed = absorbed.any(1)
    end = torch.where(closed, torch.argmax(absorbed.to(torch.uint8), 1), torch.full_like(spos, seq.shape[1] - 1))
    ok = closed & (seq[rowsN, end] > fail_state)
    length = torch.where(ok, end + 1, -torch.ones_like(end))
    if not bool(closed.all()):
        warnings.warn("trace_contours: contour did not close within max_steps", RuntimeWarning, stacklevel=3)
        width = seq.shape[1]
    else:
        width = int(end.max()) + 1 if N else 1
    seq = seq[:, :width]
    tr = spos_of[seq]
    tr[:, 0] = spos
    tr = torch.where(torch.arange(width, device=dev)[None] <= end[:, None], tr, torch.full_like(tr, -1))
    ys = torch.where(tr >= 0, tr // Wp - 1, tr)
    xs = torch.where(tr >= 0, tr % Wp - 1, tr)
    return ys, xs, length


_CROSS = [(1, 0), (-1, 0), (0, 1), (0, -1)]


def _outside_region(contour: torch.Tensor) -> torch.Tensor:
    """As :func:`_outside_region_reference`: one labelling of the whole stack (CPU) or row/column run sweeps
    (:func:`_outside_sweeps`, GPU)."""
    N, _H, _W = contour.shape
    border = torch.zeros_like(contour)
    border[:, 0] = border[:, -1] = True
    border[:, :, 0] = border[:, :, -1] = True
    free = ~contour | border
    if N == 0:
        return border
    if not _gpu_style(contour.device):
        from scipy import ndimage

        st = np.zeros((3, 3, 3), dtype=bool)
        st[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
        fr = free.numpy()
        lab, n = ndimage.label(fr, structure=st)
        keep = np.zeros(n + 1, dtype=bool)
        keep[lab[border.numpy()]] = True
        keep[0] = False
        return torch.from_numpy(keep[lab])
    return _outside_sweeps(free, border)


def _triton_sweep(out, dim: int):
    """``perf.lfd_sweep``: on CUDA each flood-fill sweep as Triton kernels (:mod:`get3d.metrics.lfd_triton`, same
    result; 114 vs 101 single-part meshes/s on an H100), or the PyTorch scans (also the CPU path)."""
    if perf.active().lfd_sweep != "triton":
        return None
    try:
        from get3d.metrics import lfd_triton
    except ImportError:  # no Triton
        return None
    return lfd_triton if lfd_triton.supports(out, dim) else None


def _sweep(out, run, free, dim: int):
    """``out`` grown along ``dim`` over whole runs of free pixels (``run``: run id, non-decreasing along dim)."""
    fast = _triton_sweep(out, dim) if out.is_cuda else None
    if fast is not None:
        return fast.sweep(out, run, free, dim)
    big = torch.iinfo(run.dtype).max
    fwd = torch.cummax(torch.where(out, run, -1), dim).values == run
    bwd = torch.cummin(torch.where(out, run, big).flip(dim), dim).values.flip(dim) == run
    return out | (free & (fwd | bwd))


def _outside_sweeps(free: torch.Tensor, border: torch.Tensor, check: int = 1) -> torch.Tensor:
    """Free pixels 4-connected to the border: alternate row and column sweeps, each growing the region over
    whole runs of free pixels at once (a prefix max of run ids), until a round of ``check`` sweep pairs adds
    nothing (one host sync per round; a few rounds for any real contour).  ``check=1`` needs half the sweeps of
    ``check=2`` on the benchmark's single-part meshes (4 vs 8 per batch; 18 vs 28 for fragmented ones) with the
    same number of syncs for single-part meshes, and the sweeps' scans are a third of the GPU time."""
    blocked = ~free
    run_x = blocked.cumsum(2, dtype=torch.int16)
    run_y = blocked.cumsum(1, dtype=torch.int16)
    out = border.clone()
    count = out.sum()
    while True:
        for _ in range(check):
            out = _sweep(out, run_x, free, 2)
            out = _sweep(out, run_y, free, 1)
        new = out.sum()
        if bool(new == count):
            return out
        count = new


def thin(buff: torch.Tensor, sil: torch.Tensor, max_iter: int = 10_000) -> torch.Tensor:
    """As :func:`thin_reference`: the same parallel sub-passes (sides in the program's order 2, 4, 3, 1; the
    deletion table looked up on the 8-neighbourhood codes at the start of each sub-pass), evaluated only on a
    work list instead of every pixel.

    The 8-neighbourhood codes of all pixels are kept up to date incrementally (a deleted pixel clears one bit in
    each of its 8 neighbours).  A pixel's deletability for a side depends only on its code (and the fixed masks),
    so a pixel that was evaluated for all 4 sides with its current code and kept can be dropped from the work
    list until one of its neighbours is deleted.  Work list entries carry a count of sub-passes left (4, reset
    when the code changes).
    """
    if _gpu_style(buff.device):
        return _thin_dense_list(buff, sil, max_iter)
    with _few_threads(buff.device):
        return _thin(buff, sil, max_iter)


def _thin_setup(buff: torch.Tensor, sil: torch.Tensor):
    """Shared start of both thinning variants: the deletion table, the pixels thinning may touch (interior,
    outside the silhouette), each pixel's 8-neighbour code and whether one of its 4 side neighbours is 0."""
    N, H, W = buff.shape
    dev = buff.device
    table = torch.tensor(list(THIN_DELETE), dtype=torch.bool, device=dev)
    inner = torch.zeros(N, H, W, dtype=torch.bool, device=dev)
    inner[:, 1:H - 1, 1:W - 1] = True
    allowed = inner & ~sil.bool()
    pad = _padded(buff, 1, False)
    code = torch.zeros(N, H, W, dtype=torch.int32, device=dev)
    bg4 = torch.zeros_like(buff)
    for k, (dy, dx) in enumerate(_THIN_NB):
        nbk = pad[:, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
        code |= nbk.to(torch.int32) << k
        if k < 4:
            bg4 |= ~nbk
    return table, allowed, code, bg4


def _thin(buff: torch.Tensor, sil: torch.Tensor, max_iter: int) -> torch.Tensor:
    N, H, W = buff.shape
    dev = buff.device
    if N == 0 or H < 3 or W < 3:
        return buff.clone()
    flag = buff.reshape(-1).to(torch.uint8).clone()
    table, allowed, code, bg4 = _thin_setup(buff, sil)
    allowed, code = allowed.reshape(-1), code.reshape(-1)
    cand = torch.nonzero((buff & bg4).reshape(-1) & allowed)[:, 0]
    ttl = torch.zeros(N * H * W, dtype=torch.int8, device=dev)  # sub-passes left before leaving the work list
    ttl[cand] = 4
    listed = ttl > 0
    nb_off = [dy * W + dx for dy, dx in _THIN_NB]
    nb_off_t = torch.tensor(nb_off, device=dev)
    check = 1 if dev.type == "cpu" else 8
    for it in range(max_iter):
        change = torch.zeros((), dtype=torch.bool, device=dev)
        for side in _THIN_SIDES:
            if cand.numel() == 0:
                break
            c = code[cand]
            dele = ((c >> side) & 1 == 0) & table[c.long()]
            d = cand[dele]
            ttl[cand] -= 1
            if dev.type != "cpu" or d.numel():
                change |= dele.any()
                flag[d] = 0
                ttl[d] = 0
                for k, off in enumerate(nb_off):               # pixels whose bit k is d (no duplicates)
                    q = d - off
                    code[q] = code[q] - (1 << k)
                p = (d[:, None] - nb_off_t[None]).reshape(-1)   # their codes changed: back on the work list
                p = p[(flag[p] == 1) & allowed[p]]
                ttl[p] = 4
                fresh = torch.unique(p[~listed[p]])
                listed[fresh] = True
            else:
                fresh = cand[:0]
            keep = ttl[cand] > 0
            listed[cand[~keep]] = False
            cand = torch.cat([cand[keep], fresh])
        if (it + 1) % check == 0 and not bool(change):
            break
    return flag.view(N, H, W).bool()


def _thin_dense_list(buff: torch.Tensor, sil: torch.Tensor, max_iter: int) -> torch.Tensor:
    """:func:`_thin` with its work list kept as a dense "sub-passes left" map (``ttl > 0`` = listed): each
    sub-pass is a fixed sequence of kernels over the listed pixels and one ``nonzero`` (the only host sync).
    Rejected/absent entries are redirected to a dummy slot at the end of each flat array instead of being
    compacted away.  Same deletions as :func:`_thin` (all effects of a sub-pass depend on the codes at its start)."""
    N, H, W = buff.shape
    dev = buff.device
    if N == 0 or H < 3 or W < 3:
        return buff.clone()
    n = N * H * W
    dummy = n
    table, allowed, code, bg4 = _thin_setup(buff, sil)
    allowed = torch.cat([allowed.reshape(-1), torch.zeros(1, dtype=torch.bool, device=dev)])
    code = torch.cat([code.reshape(-1), torch.zeros(1, dtype=torch.int32, device=dev)])
    flag = torch.cat([buff.reshape(-1).to(torch.uint8), torch.zeros(1, dtype=torch.uint8, device=dev)])
    ttl = torch.where(torch.cat([(buff & bg4).reshape(-1), torch.zeros(1, dtype=torch.bool, device=dev)]) & allowed,
                      4, 0).to(torch.int8)
    nb_off = torch.tensor([dy * W + dx for dy, dx in _THIN_NB], device=dev)
    bits = torch.tensor([-(1 << k) for k in range(8)], dtype=torch.int32, device=dev)
    for _ in range(max_iter):
        for side in _THIN_SIDES:
            cand = torch.nonzero(ttl[:n] > 0)[:, 0]
            if cand.numel() == 0:
                return flag[:n].view(N, H, W).bool()
            c = code[cand]
            dele = ((c >> side) & 1 == 0) & table[c.long()]
            ttl[cand] = torch.where(dele, 0, ttl[cand] - 1).to(torch.int8)
            d = torch.where(dele, cand, dummy)
            flag[d] = 0
            q = torch.where(dele[:, None], cand[:, None] - nb_off[None], dummy)   # [K, 8] neighbours (bit k)
            code.index_add_(0, q.reshape(-1), bits.expand_as(q).reshape(-1))
            p = q.reshape(-1)
            ttl[torch.where((flag[p] == 1) & allowed[p], p, dummy)] = 4
    return flag[:n].view(N, H, W).bool()


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


# ------------------------------------------------------------------------------------------ matching

def lfd_matrix(a: LFDDescriptor | torch.Tensor, b: LFDDescriptor | torch.Tensor, device=None,
               pair_block: int = 1024) -> torch.Tensor:
    """[A, B] LFD between two descriptor sets (float32 on CPU; integer-valued)."""
    va = a.vector() if isinstance(a, LFDDescriptor) else a
    vb = b.vector() if isinstance(b, LFDDescriptor) else b
    if device is None:
        device = "cuda" if torch.cuda.is_available() else va.device
    A, B = va.shape[0], vb.shape[0]
    out = torch.empty(A, B, dtype=torch.float32)
    if A == 0 or B == 0:
        return out
    align = alignment_table().to(device)                       # [60, 10]
    gidx = (torch.arange(N_VIEW, device=device)[None] * N_VIEW + align)  # index into (src view m, dest view)
    va = va.to(device).reshape(A, N_LF * N_VIEW, DESC_DIM)
    vb = vb.to(device).reshape(B, N_LF * N_VIEW, DESC_DIM)
    bb = max(1, min(B, pair_block))
    ab = max(1, pair_block // bb)
    for i in range(0, A, ab):
        x = va[i:i + ab]
        for j in range(0, B, bb):
            y = vb[j:j + bb]
            d = torch.cdist(x.reshape(1, -1, DESC_DIM), y.reshape(1, -1, DESC_DIM), p=1)[0]
            # [a, s, m, b, t, n]: src light field s view m vs dest light field t view n
            d = d.view(x.shape[0], N_LF, N_VIEW, y.shape[0], N_LF, N_VIEW).permute(0, 3, 1, 4, 2, 5)
            d = d.reshape(x.shape[0], y.shape[0], N_LF, N_LF, N_VIEW * N_VIEW)
            err = d[..., gidx].sum(-1)                            # [a, b, s, t, 60]
            out[i:i + x.shape[0], j:j + y.shape[0]] = err.flatten(2).min(-1).values.float().cpu()
    return out


def lfd(mesh_a, mesh_b, device="cpu") -> float:
    """LFD between two meshes ``(vertices, faces)``."""
    d = mesh_descriptors([mesh_a, mesh_b], device)
    return float(lfd_matrix(LFDDescriptor(d.art[:1], d.fd[:1], d.cir[:1], d.ecc[:1]),
                            LFDDescriptor(d.art[1:], d.fd[1:], d.cir[1:], d.ecc[1:]), device=device)[0, 0])
