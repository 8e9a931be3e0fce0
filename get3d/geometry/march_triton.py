"""Marching tets' selections as Triton kernels (CUDA; imported lazily, selected by ``perf.marching_kernel``).

The exactly sized extraction must read its sizes on the host once.  In PyTorch everything after that read is a
chain of ~25 small launches (three ``nonzero_static`` selections, the table lookups and gathers), and the GPU,
drained by the read, idles between them while the host issues each one.  Here the running counts are taken on the
device *before* the read (a tet's face offset, an edge's vertex id), so after it two kernels write the faces and
the crossing edges' endpoints straight into their slots: same faces and vertices, in the same order, as
:func:`get3d.geometry.dmtet.marching_tets`'s PyTorch path.

The fixed-capacity extraction (:func:`get3d.geometry.padded.marching_tets_padded`) uses the same kernels with
per-sample slots: nothing is read, a slot past the capacity is not written (the sample is flagged by its count),
and its ~90 shape-static PyTorch ops (dense scatters over every tet and edge) become ~40.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit(do_not_specialize=["TOTAL"])
def _ntri_kernel(CODE, NUM_TRIS, NTRI, TOTAL, BLOCK: tl.constexpr):
    """Triangles of every tet (0, 1 or 2) from its occupancy case, as bytes."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < TOTAL
    c = tl.load(CODE + i, mask=m, other=0).to(tl.int32)
    tl.store(NTRI + i, tl.load(NUM_TRIS + c, mask=m, other=0), mask=m)


@triton.jit(do_not_specialize=["TOTAL", "T", "E", "CF", "CV"])
def _faces_kernel(CODE, NTRI, FCUM, FOFF, TE, VCUM, TABLE, FACES, TOTAL, T, E, CF, CV, PADDED: tl.constexpr,
                  BLOCK: tl.constexpr):
    """Each valid tet writes its 1–2 triangles at its face offset (the running count of triangles before it):
    corner ``j`` of triangle ``k`` is the sample-local vertex id of grid edge ``te[t, table[code, k, j]]``.
    Exact: sample ``b``'s faces start at ``FOFF[b]``.  ``PADDED``: at ``b·CF``; a triangle past slot ``CF`` is
    not written and a vertex id past ``CV`` becomes 0 (an overflowing sample's faces stay indexable)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < TOTAL
    n = tl.load(NTRI + i, mask=m, other=0).to(tl.int64)
    m = m & (n > 0)
    c = tl.load(CODE + i, mask=m, other=0).to(tl.int64)
    b = i // T
    t = i - b * T
    off = tl.load(FCUM + i, mask=m, other=0).to(tl.int64) - n
    if PADDED:
        base = b * CF
    else:
        base = tl.load(FOFF + b, mask=m, other=0)
    for k in tl.static_range(2):
        mk = m & (n > k)
        if PADDED:
            mk = mk & (off + k < CF)
        for j in tl.static_range(3):
            le = tl.load(TABLE + c * 6 + k * 3 + j, mask=mk, other=0)
            ge = tl.load(TE + t * 6 + le, mask=mk, other=0)
            v = tl.load(VCUM + b * E + ge, mask=mk, other=1).to(tl.int64) - 1
            if PADDED:
                v = tl.where(v < CV, v, 0)
            tl.store(FACES + (base + off + k) * 3 + j, v, mask=mk)


@triton.jit(do_not_specialize=["TOTAL", "E", "NV", "CV"])
def _edges_kernel(CROSS, VCUM, VOFF, EDGES, CA, CB, TOTAL, E, NV, CV, PADDED: tl.constexpr, BLOCK: tl.constexpr):
    """Each crossing grid edge writes its endpoints (flat ``b·NV + vertex`` ids) at its vertex slot: exact, sample
    ``b``'s slots start at ``VOFF[b]``; ``PADDED``, at ``b·CV``, and a slot past ``CV`` is not written."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < TOTAL
    m = m & (tl.load(CROSS + i, mask=m, other=0) != 0)
    b = i // E
    e = i - b * E
    g = tl.load(VCUM + i, mask=m, other=1).to(tl.int64) - 1
    if PADDED:
        m = m & (g < CV)
        g = g + b * CV
    else:
        g = g + tl.load(VOFF + b, mask=m, other=0)
    base = b * NV
    tl.store(CA + g, tl.load(EDGES + e * 2, mask=m, other=0) + base, mask=m)
    tl.store(CB + g, tl.load(EDGES + e * 2 + 1, mask=m, other=0) + base, mask=m)


def _grid(total: int):
    return (triton.cdiv(total, BLOCK),)


_BYTE_TABLES: dict = {}


def _byte_table(num_tris: torch.Tensor) -> torch.Tensor:
    key = str(num_tris.device)
    if key not in _BYTE_TABLES:
        _BYTE_TABLES[key] = num_tris.to(torch.uint8)
    return _BYTE_TABLES[key]


class Selection:
    """The device-side counts of one batch, taken before the host read: ``counts()`` is that read."""

    def __init__(self, crossing: torch.Tensor, code: torch.Tensor, num_tris: torch.Tensor, exact: bool = True):
        self.crossing, self.code = crossing.contiguous(), code.contiguous()
        b, t = code.shape
        self.ntri = torch.empty_like(self.code)
        _ntri_kernel[_grid(b * t)](self.code, _byte_table(num_tris), self.ntri, b * t, BLOCK=BLOCK)
        self.vcum = torch.cumsum(self.crossing, 1, dtype=torch.int32)            # [B,E] inclusive vertex ids
        self.fcum = torch.cumsum(self.ntri, 1, dtype=torch.int32)                # [B,T] inclusive face counts
        self._per = torch.cat([self.vcum[:, -1], self.fcum[:, -1]]).long()      # vertices, faces per sample
        self.num_verts, self.num_faces = self._per[:b], self._per[b:]
        self.voff = self.foff = self._per                                        # unused by the padded kernels
        if exact:                                                                # first slot of each sample
            self.voff = torch.cumsum(self.num_verts, 0) - self.num_verts
            self.foff = torch.cumsum(self.num_faces, 0) - self.num_faces

    def counts(self) -> list[int]:
        """Vertices per sample, then faces per sample: the one host sync."""
        return self._per.tolist()

    def faces(self, te: torch.Tensor, tri_table: torch.Tensor, total: int) -> torch.Tensor:
        """``[total, 3]`` long: every sample's faces (sample-local vertex ids), sample-major, in tet order."""
        b, t = self.code.shape
        out = torch.empty(total, 3, dtype=torch.long, device=self.code.device)
        _faces_kernel[_grid(b * t)](self.code, self.ntri, self.fcum, self.foff, te.contiguous(), self.vcum,
                                    tri_table.contiguous(), out, b * t, t, self.crossing.shape[1], 0, 0,
                                    PADDED=False, BLOCK=BLOCK)
        return out

    def endpoints(self, edges: torch.Tensor, nv: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat ``b·nv + vertex`` ids of both endpoints of every crossing edge, in vertex-slot order."""
        b, e = self.crossing.shape
        ca = torch.empty(total, dtype=torch.long, device=self.code.device)
        cb = torch.empty_like(ca)
        _edges_kernel[_grid(b * e)](self.crossing.view(torch.uint8), self.vcum, self.voff, edges.contiguous(),
                                    ca, cb, b * e, e, nv, 0, PADDED=False, BLOCK=BLOCK)
        return ca, cb

    def padded_faces(self, te: torch.Tensor, tri_table: torch.Tensor, cf: int, cv: int) -> torch.Tensor:
        """``[B, cf, 3]`` long: each sample's faces in its first slots (vertex ids past ``cv`` as 0); unused slots
        ``(k, k, k)`` with ``k`` = slot mod ``cv``, as :func:`get3d.geometry.padded.marching_tets_padded`."""
        b, t = self.code.shape
        out = _unused_faces(b, cf, cv, self.code.device).clone()
        _faces_kernel[_grid(b * t)](self.code, self.ntri, self.fcum, self.foff, te.contiguous(), self.vcum,
                                    tri_table.contiguous(), out, b * t, t, self.crossing.shape[1], cf, cv,
                                    PADDED=True, BLOCK=BLOCK)
        return out

    def padded_endpoints(self, edges: torch.Tensor, nv: int, cv: int) -> torch.Tensor:
        """``[2, B·cv]`` flat ``b·nv + vertex`` ids of each vertex slot's edge endpoints (0 in unused slots)."""
        b, e = self.crossing.shape
        out = torch.zeros(2, b * cv, dtype=torch.long, device=self.code.device)
        _edges_kernel[_grid(b * e)](self.crossing.view(torch.uint8), self.vcum, self.voff, edges.contiguous(),
                                    out[0], out[1], b * e, e, nv, cv, PADDED=True, BLOCK=BLOCK)
        return out


_UNUSED: dict = {}


def _unused_faces(b: int, cf: int, cv: int, dev: torch.device) -> torch.Tensor:
    """The padded faces' unused-slot pattern ``(k, k, k)``, ``k`` = slot mod ``cv`` (zero area, and no two slots
    share an edge key), built once per shape and device."""
    key = (b, cf, cv, str(dev))
    if key not in _UNUSED:
        if len(_UNUSED) > 16:       # capacities change over a run; keep only recent shapes
            _UNUSED.clear()
        _UNUSED[key] = (torch.arange(b * cf, device=dev) % cv)[:, None].repeat(1, 3).reshape(b, cf, 3)
    return _UNUSED[key]
