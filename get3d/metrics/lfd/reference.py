"""The reference path: straight ports of the original C program's per-silhouette steps (ART, moments,
circularity, square contour tracing, flood fill, thinning), one silhouette at a time.  The fast path is tested
against these."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .._lfd_tables import THIN_DELETE
from .core import _PI4, LUT_N, LUT_R, _art_lut, _art_magnitudes


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


def _dilate(x, offsets) -> torch.Tensor:
    _N, H, W = x.shape
    out = x.clone()
    inner = torch.zeros_like(x)
    inner[:, 2:H - 2, 2:W - 2] = True
    for dy, dx in offsets:
        out |= _shift(x, dy, dx) & inner
    return out


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
