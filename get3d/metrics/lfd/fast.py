"""The fast path: the same codes as :mod:`.reference`, computed on foreground pixels only (ART, moments), with
table-driven contour tracing, a frontier-based parallel thinning and a batched flood fill (Triton sweeps on CUDA)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from get3d import perf

from .._lfd_tables import THIN_DELETE
from .core import _PI4, LUT_N, LUT_R, _art_lut, _art_magnitudes
from .reference import _NEXT, _NEXT_DIR, _THIN_NB, _THIN_SIDES


def _gpu_style(device) -> bool:
    """``perf.lfd_algorithms``: the launch/sync-light variants of the loop-heavy steps (flood fill by run sweeps,
    thinning with one host sync per sub-pass) or the CPU ones (scipy labelling, work-list thinning); ``auto``:
    by device.  Both give identical codes."""
    mode = perf.active().lfd_algorithms
    return torch.device(device).type != "cpu" if mode == "auto" else mode == "gpu"


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
