"""Marching tets into fixed-capacity buffers, with no host synchronisation.

:func:`get3d.geometry.dmtet.marching_tets` returns exactly sized meshes, so the host must learn the sizes (a few
``nonzero``/``unique`` calls and one copy of the counts per call): the CPU waits for the GPU twice per training
step and nothing after the extraction can be captured.  This variant writes every sample into slots of a fixed
capacity (``[B, Cv, 3]`` vertices, ``[B, Cf, 3]`` faces) using only dense, shape-static operations over the grid:

- a surface vertex for every grid edge whose endpoints differ in occupancy; its slot is the running count of such
  edges (a cumulative sum over the grid's static unique edge list), so vertices keep the edge order;
- every valid tet's 1 or 2 triangles, at the running count of triangles over the tets (tet order, then table
  order), with vertex ids looked up through the grid's static tet → edge map.

The surface is therefore the same as :func:`~get3d.geometry.dmtet.marching_tets`'s (same vertices in the same
order, same faces in the same order; a test checks it), followed by padding: unused vertex slots at the origin,
unused face slots ``(k, k, k)`` (zero area: a rasterizer draws nothing).  Counts and an overflow flag stay on the
device.  A sample whose surface does not fit is **flagged, never cut silently**: the caller reads the flag with
values it reads anyway and re-runs with a larger :class:`SurfaceCapacity`.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .dmtet import batched_field, device_tables, marching_kernels, occupancy, tet_codes, tet_edge_ids


def round_slots(need: int, factor: float = 1.0) -> int:
    """``factor`` × ``need`` slots, rounded up to a multiple of 1,024 (fewer distinct buffer shapes)."""
    return math.ceil(max(1, need) * factor / 1024.0) * 1024


#: per phase, how much of the largest recent need the capacity still provisions for (an envelope with a
#: half-life of ~350 phases): an untrained generator's largest surface often grows by more than 1.5x from one
#: phase to the next, so sizing to the last need alone overflowed in most steps (13 re-runs in 17 on the paper recipe)
PEAK_DECAY = 0.998


@dataclass
class SurfaceCapacity:
    """Per-sample slot counts of the padded extraction (vertices, faces) and of the covered pixels whose colour
    the renderer queries (``pixels``; 0 = every pixel); grown after an overflow (the caller re-runs).

    It also keeps a decaying envelope of the needs it was shown (:meth:`grow`, :meth:`fit`), so that it sizes
    to the largest recent surface rather than to the last one."""

    verts: int
    faces: int
    pixels: int = 0
    peak: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0], repr=False)  # verts, faces, pixels

    def __post_init__(self):
        if self.verts < 1 or self.faces < 1 or self.pixels < 0:
            raise ValueError(f"SurfaceCapacity: verts and faces must be >= 1 and pixels >= 0, got {self.verts}, "
                             f"{self.faces}, {self.pixels}")

    def _observe(self, needs) -> list[float]:
        self.peak = [max(float(n), p * PEAK_DECAY) for n, p in zip(needs, self.peak)]
        return self.peak

    def grow(self, need_verts: int, need_faces: int, need_pixels: int = 0, factor: float = 2.0) -> None:
        """At least ``factor`` × the need and the recent envelope (rounded up to a multiple of 1,024: fewer
        distinct shapes); 2x, so a surface that keeps growing does not overflow on every phase."""
        pv, pf, pp = self._observe((need_verts, need_faces, need_pixels))
        self.verts = max(self.verts, round_slots(pv, factor))
        self.faces = max(self.faces, round_slots(pf, factor))
        if self.pixels and need_pixels > self.pixels:
            self.pixels = max(self.pixels, round_slots(pp, factor))

    def fit(self, need_verts: int, need_faces: int, need_pixels: int = 0, factor: float = 1.5,
            slack: float = 1.5) -> bool:
        """Shrink each capacity above ``slack`` × the fitted size (``factor`` × the envelope of recent needs,
        rounded like :meth:`grow`) to that size, so the dense padded work follows the surfaces' real size instead
        of the generous start; the envelope and the slack keep a capacity from shrinking below a size the
        surfaces still reach. ``pixels`` 0 (every pixel) stays. Returns whether anything changed."""
        changed = False
        peaks = self._observe((need_verts, need_faces, need_pixels))
        for name, peak in zip(("verts", "faces", "pixels"), peaks):
            have, size = getattr(self, name), round_slots(peak, factor)
            if have and have > slack * size:
                setattr(self, name, size)
                changed = True
        return changed


class PaddedMeshes(Sequence):
    """A batch of meshes in fixed-capacity slots.

    ``verts [B, Cv, 3]``, ``faces [B, Cf, 3]`` (int64, indices local to the sample; unused slots ``(k, k, k)``),
    ``num_verts [B]`` / ``num_faces [B]`` (device tensors: the sizes the surface really has) and ``overflow [B]``
    (bool: the sample's surface needed more slots than it got, so its slots hold only part of it).

    It is also a sequence of ``(verts [Vi, 3], faces [Fi, 3])`` pairs cut to the real sizes, so code written for
    lists of meshes takes it unchanged (indexing reads the sizes: a host sync; the renderer does not index).
    """

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor, num_verts: torch.Tensor, num_faces: torch.Tensor,
                 overflow: torch.Tensor, capacity: SurfaceCapacity | None = None):
        self.verts, self.faces = verts, faces
        self.num_verts, self.num_faces, self.overflow = num_verts, num_faces, overflow
        #: the capacity object these slots came from (the renderer reads its ``pixels``)
        self.capacity = capacity or SurfaceCapacity(int(verts.shape[1]), int(faces.shape[1]))
        self._sizes: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return int(self.verts.shape[0])

    def _real_sizes(self) -> list[tuple[int, int]]:
        if self._sizes is None:
            if bool(self.overflow.any()):
                raise OverflowError(f"PaddedMeshes: {int(self.overflow.sum())} sample(s) did not fit capacity "
                                    f"{self.capacity}; re-run with a larger capacity")
            nv, nf = torch.stack([self.num_verts, self.num_faces]).tolist()
            self._sizes = list(zip(nv, nf))
        return self._sizes

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        nv, nf = self._real_sizes()[i]
        return self.verts[i, :nv], self.faces[i, :nf]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(len(self)):
            yield self[i]


def marching_tets_padded(verts: torch.Tensor, sdf: torch.Tensor, tets: torch.Tensor, edges: torch.Tensor,
                         capacity: SurfaceCapacity) -> PaddedMeshes:
    """:func:`~get3d.geometry.dmtet.marching_tets` into fixed-capacity slots (see the module docstring).

    ``verts [V,3]`` or ``[B,V,3]``, ``sdf [B,V]`` (> 0 inside), the grid's ``tets [T,4]`` and sorted unique
    ``edges [E,2]``.  Differentiable w.r.t. ``verts`` and ``sdf`` like the exact version."""
    verts, sdf = batched_field(verts, sdf, "marching_tets_padded")
    b = sdf.shape[0]
    dev = sdf.device
    cv, cf = int(capacity.verts), int(capacity.faces)
    te = tet_edge_ids(tets, edges, dev)                                   # [T,6]
    tets, edges = tets.to(dev), edges.to(dev).long()
    fast = marching_kernels() if dev.type == "cuda" else None
    if fast is not None:
        return _padded_by_kernels(fast, verts, sdf, tets, edges, te, capacity)
    bidx = torch.arange(b, device=dev)[:, None]
    with torch.no_grad():
        occ, crossing = occupancy(sdf, edges)                             # [B,V], [B,E]
        vid = torch.cumsum(crossing, 1) - 1                               # slot of each crossing edge
        num_verts = crossing.sum(1)
        dump_v = b * cv                                                   # one spare slot takes what does not fit
        to_slot = torch.where(crossing & (vid < cv), bidx * cv + vid, dump_v).reshape(-1)
        slot_edge = torch.zeros(b * cv + 1, dtype=torch.long, device=dev)
        slot_edge.scatter_(0, to_slot, torch.arange(edges.shape[0], device=dev).repeat(b))
        slot_edge = slot_edge[:-1].reshape(b, cv)
        slot_used = torch.arange(cv, device=dev)[None] < num_verts[:, None]

        num_tris, tri_table, _, _ = device_tables(dev)
        code = tet_codes(occ, tets)                                       # [B,T] uint8
        ntri = num_tris[code.long()]                                      # [B,T]
        first = torch.cumsum(ntri, 1) - ntri                              # slot of the tet's first triangle
        num_faces = ntri.sum(1)
        # the valid tets (1 or 2 triangles each, so at most Cf of them fit) are packed into Cf slots first: the
        # table lookups below then run over the slots, not over every tet of the grid
        valid = ntri > 0
        tslot = torch.cumsum(valid, 1) - 1
        dump_f = b * cf
        to_tslot = torch.where(valid & (tslot < cf), bidx * cf + tslot, dump_f).reshape(-1)
        slot_tet = torch.zeros(b * cf + 1, dtype=torch.long, device=dev)
        slot_tet.scatter_(0, to_tslot, torch.arange(tets.shape[0], device=dev).repeat(b))
        slot_tet = slot_tet[:-1].reshape(b, cf)
        tet_used = torch.arange(cf, device=dev)[None] < valid.sum(1)[:, None]
        c = torch.gather(code, 1, slot_tet).long()                        # [B,Cf]
        nt = torch.where(tet_used, num_tris[c], 0)
        f0 = torch.gather(first, 1, slot_tet)
        table = tri_table[c]                                              # [B,Cf,2,3] local edge ids (-1 unused)
        gedge = torch.gather(te[slot_tet][:, :, None, :].expand(-1, -1, 2, -1), 3, table.clamp(min=0))
        tri_v = torch.gather(vid, 1, gedge.reshape(b, -1)).reshape(gedge.shape)
        tri_v = torch.where(tri_v < cv, tri_v, 0)       # an overflowing sample's faces stay indexable
        pos = f0[..., None] + torch.arange(2, device=dev)                 # [B,Cf,2]
        keep = (torch.arange(2, device=dev) < nt[..., None]) & (pos < cf)
        to_face = torch.where(keep, bidx[..., None] * cf + pos, dump_f).reshape(-1)
        # unused slots (k, k, k), k = slot mod Cv: zero area, and no two share an edge key (a rasterizer's
        # edge hash, e.g. nvdiffrast's antialias, would chain thousands of identical (0, 0) keys)
        faces = (torch.arange(b * cf + 1, device=dev) % cv)[:, None].repeat(1, 3)
        faces.scatter_(0, to_face[:, None].expand(-1, 3), tri_v.reshape(-1, 3))
        faces = faces[:-1].reshape(b, cf, 3)
        overflow = (num_verts > cv) | (num_faces > cf)

    ea, eb = edges[slot_edge, 0], edges[slot_edge, 1]                     # [B,Cv]
    sa = torch.gather(sdf, 1, ea)[..., None]
    sb = torch.gather(sdf, 1, eb)[..., None]
    va = torch.gather(verts, 1, ea[..., None].expand(-1, -1, 3))
    vb = torch.gather(verts, 1, eb[..., None].expand(-1, -1, 3))
    pts = _slot_points(va, vb, sa, sb, slot_used[..., None])
    return PaddedMeshes(pts, faces, num_verts, num_faces, overflow, capacity)


def _slot_points(va: torch.Tensor, vb: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor,
                 used: torch.Tensor) -> torch.Tensor:
    """The zero crossing of each used slot's edge ``[B,Cv,3]``; unused slots at the origin, dividing by 1 (no
    0/0 in the backward)."""
    denom = torch.where(used, sa - sb, torch.ones_like(sa))
    return torch.where(used, (va * (-sb) + vb * sa) / denom, torch.zeros_like(va))


def _padded_by_kernels(fast, verts: torch.Tensor, sdf: torch.Tensor, tets: torch.Tensor, edges: torch.Tensor,
                       te: torch.Tensor, capacity: SurfaceCapacity) -> PaddedMeshes:
    """:func:`marching_tets_padded` with ``perf.marching_kernel: triton``: the slots written by the kernels of
    :mod:`get3d.geometry.march_triton` (~40 ops instead of ~90; same slots, same values)."""
    b, nv = sdf.shape
    cv, cf = int(capacity.verts), int(capacity.faces)
    num_tris, tri_table, _, _ = device_tables(sdf.device)
    with torch.no_grad():
        occ, crossing = occupancy(sdf, edges)
        sel = fast.Selection(crossing, tet_codes(occ, tets), num_tris, exact=False)
        faces = sel.padded_faces(te, tri_table, cf, cv)
        ca, cb = sel.padded_endpoints(edges, nv, cv)
        used = (torch.arange(cv, device=sdf.device)[None] < sel.num_verts[:, None])[..., None]    # [B,Cv,1]
        overflow = (sel.num_verts > cv) | (sel.num_faces > cf)
    sf, vf = sdf.reshape(-1), verts.reshape(-1, 3)
    sa, sb = sf.index_select(0, ca).view(b, cv, 1), sf.index_select(0, cb).view(b, cv, 1)
    va, vb = vf.index_select(0, ca).view(b, cv, 3), vf.index_select(0, cb).view(b, cv, 3)
    return PaddedMeshes(_slot_points(va, vb, sa, sb, used), faces, sel.num_verts, sel.num_faces, overflow, capacity)
