"""Marching tets' selections as Triton kernels (CUDA; imported lazily, selected by ``perf.marching_kernel``).

The exactly sized extraction must read its sizes on the host once.  In PyTorch everything after that read is a
chain of ~25 small launches (three ``nonzero_static`` selections, the table lookups and gathers), and the GPU,
drained by the read, idles between them while the host issues each one.  Here the running counts are taken on the
device *before* the read (a tet's face offset, an edge's vertex id), so after it two kernels write the faces and
the crossing edges' endpoints straight into their slots: same faces and vertices, in the same order, as
:func:`get3d.geometry.dmtet.marching_tets`'s PyTorch path.
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


@triton.jit(do_not_specialize=["TOTAL", "T", "E"])
def _faces_kernel(CODE, NTRI, FCUM, FOFF, TE, VCUM, TABLE, FACES, TOTAL, T, E, BLOCK: tl.constexpr):
    """Each valid tet writes its 1–2 triangles at its face offset (the running count of triangles before it):
    corner ``j`` of triangle ``k`` is the sample-local vertex id of grid edge ``te[t, table[code, k, j]]``."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < TOTAL
    n = tl.load(NTRI + i, mask=m, other=0).to(tl.int64)
    m = m & (n > 0)
    c = tl.load(CODE + i, mask=m, other=0).to(tl.int64)
    b = i // T
    t = i - b * T
    off = tl.load(FCUM + i, mask=m, other=0).to(tl.int64) - n + tl.load(FOFF + b, mask=m, other=0)
    for k in tl.static_range(2):
        mk = m & (n > k)
        for j in tl.static_range(3):
            le = tl.load(TABLE + c * 6 + k * 3 + j, mask=mk, other=0)
            ge = tl.load(TE + t * 6 + le, mask=mk, other=0)
            v = tl.load(VCUM + b * E + ge, mask=mk, other=1).to(tl.int64) - 1
            tl.store(FACES + (off + k) * 3 + j, v, mask=mk)


@triton.jit(do_not_specialize=["TOTAL", "E", "NV"])
def _edges_kernel(CROSS, VCUM, VOFF, EDGES, CA, CB, TOTAL, E, NV, BLOCK: tl.constexpr):
    """Each crossing grid edge writes its endpoints (flat ``b·NV + vertex`` ids) at its vertex slot."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < TOTAL
    m = m & (tl.load(CROSS + i, mask=m, other=0) != 0)
    b = i // E
    e = i - b * E
    g = tl.load(VCUM + i, mask=m, other=1).to(tl.int64) - 1 + tl.load(VOFF + b, mask=m, other=0)
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

    def __init__(self, crossing: torch.Tensor, code: torch.Tensor, num_tris: torch.Tensor):
        self.crossing, self.code = crossing.contiguous(), code.contiguous()
        b, t = code.shape
        self.ntri = torch.empty_like(self.code)
        _ntri_kernel[_grid(b * t)](self.code, _byte_table(num_tris), self.ntri, b * t, BLOCK=BLOCK)
        self.vcum = torch.cumsum(self.crossing, 1, dtype=torch.int32)            # [B,E] inclusive vertex ids
        self.fcum = torch.cumsum(self.ntri, 1, dtype=torch.int32)                # [B,T] inclusive face counts
        per = torch.cat([self.vcum[:, -1], self.fcum[:, -1]]).long()
        self.vc, self.fc = per[:b], per[b:]
        self.voff = torch.cumsum(self.vc, 0) - self.vc                           # first slot of each sample
        self.foff = torch.cumsum(self.fc, 0) - self.fc
        self._per = per

    def counts(self) -> list[int]:
        """Vertices per sample, then faces per sample: the one host sync."""
        return self._per.tolist()

    def faces(self, te: torch.Tensor, tri_table: torch.Tensor, total: int) -> torch.Tensor:
        """``[total, 3]`` long: every sample's faces (sample-local vertex ids), sample-major, in tet order."""
        b, t = self.code.shape
        out = torch.empty(total, 3, dtype=torch.long, device=self.code.device)
        _faces_kernel[_grid(b * t)](self.code, self.ntri, self.fcum, self.foff, te.contiguous(), self.vcum,
                                    tri_table.contiguous(), out, b * t, t, self.crossing.shape[1], BLOCK=BLOCK)
        return out

    def endpoints(self, edges: torch.Tensor, nv: int, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat ``b·nv + vertex`` ids of both endpoints of every crossing edge, in vertex-slot order."""
        b, e = self.crossing.shape
        ca = torch.empty(total, dtype=torch.long, device=self.code.device)
        cb = torch.empty_like(ca)
        _edges_kernel[_grid(b * e)](self.crossing.view(torch.uint8), self.vcum, self.voff, edges.contiguous(),
                                    ca, cb, b * e, e, nv, BLOCK=BLOCK)
        return ca, cb
