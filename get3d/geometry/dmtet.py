"""DMTet: SDF / deformation post-processing, marching tetrahedra, empty-shape guard, SDF regulariser.

Sign convention: **sdf > 0 is inside** (FlexiCubes uses the opposite sign).

Marching tets: a tet is *valid* when 1–3 of its 4 vertices are occupied; every grid edge whose endpoints differ
in occupancy gets exactly one surface vertex ``v = (p_a·(−s_b) + p_b·s_a) / (s_a − s_b)`` (shared by all tets
around the edge, so the output is watertight inside the grid); each valid tet emits 1 triangle (1 or 3 occupied)
or 2 (2 occupied).  The 16-case table is derived at import from a reference positively oriented tet, with every
triangle wound so its normal points from occupied to empty vertices; since all grid tets are positively
oriented, faces are counter-clockwise seen from outside (positive enclosed volume).  Everything is vectorised
over the whole batch (no per-sample loop) and differentiable w.r.t. SDF and positions.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .tetgrid import TetGrid

SDF_REG_WEIGHT = 0.01
TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _build_table() -> tuple[torch.Tensor, torch.Tensor]:
    ref = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])      # positively oriented
    edge_id = {frozenset(e): i for i, e in enumerate(TET_EDGES)}
    table = -np.ones((16, 2, 3), dtype=np.int64)
    ntri = np.zeros(16, dtype=np.int64)
    for code in range(16):
        occ = [(code >> i) & 1 for i in range(4)]
        ins = [i for i in range(4) if occ[i]]
        out = [i for i in range(4) if not occ[i]]
        if len(ins) in (0, 4):
            continue
        if len(ins) in (1, 3):
            a = ins[0] if len(ins) == 1 else out[0]
            others = [i for i in range(4) if i != a]
            tris = [[edge_id[frozenset((a, o))] for o in others]]
        else:
            a, b = ins
            c, d = out
            q = [edge_id[frozenset(e)] for e in ((a, c), (a, d), (b, d), (b, c))]
            tris = [[q[0], q[1], q[2]], [q[0], q[2], q[3]]]
        direction = ref[out].mean(0) - ref[ins].mean(0)
        for k, t in enumerate(tris):
            p = np.array([ref[list(TET_EDGES[e])].mean(0) for e in t])
            n = np.cross(p[1] - p[0], p[2] - p[0])
            if n @ direction < 0:
                t = [t[0], t[2], t[1]]
            table[code, k] = t
        ntri[code] = len(tris)
    return torch.from_numpy(table), torch.from_numpy(ntri)


TRI_TABLE, NUM_TRIS = _build_table()
_DEVICE_TABLES: dict = {}


def device_tables(dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(NUM_TRIS, TRI_TABLE, occupancy bit weights [1, 2, 4, 8], TET_EDGES)`` on ``dev``, copied once per device:
    a blocking copy from host memory waits for the GPU, so a copy per call is a host sync per call."""
    key = str(dev)
    if key not in _DEVICE_TABLES:
        _DEVICE_TABLES[key] = (NUM_TRIS.to(dev), TRI_TABLE.to(dev), torch.tensor([1, 2, 4, 8], device=dev),
                               torch.tensor(TET_EDGES, device=dev))
    return _DEVICE_TABLES[key]


def tet_codes(occ: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    """Each tet's occupancy case ``[B,T]`` (uint8 0..15, bit ``i`` set when vertex ``i`` is inside) from ``occ [B,V]``
    (bool).  Byte arithmetic: an int64 product and sum over ``[B,T,4]`` moved eight times the bytes.  Index tables
    with ``.long()`` of it (a uint8 index would be read as a mask)."""
    o = occ.to(torch.uint8)[:, tets]
    return o[..., 0] | (o[..., 1] << 1) | (o[..., 2] << 2) | (o[..., 3] << 3)


def occupancy(sdf: torch.Tensor, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(occ [B,V], crossing [B,E])``: which vertices are inside, and which grid edges change sign (each carries
    one surface vertex)."""
    occ = sdf > 0
    return occ, occ[:, edges[:, 0]] != occ[:, edges[:, 1]]


def counts_per_sample(sample: torch.Tensor, batch: int) -> torch.Tensor:
    """``torch.bincount(sample, minlength=batch)`` for ids known to be ``< batch``, without its host sync (bincount
    reads the largest id back to size its output)."""
    return torch.zeros(batch, dtype=torch.long, device=sample.device).scatter_add_(
        0, sample.long(), torch.ones_like(sample, dtype=torch.long))


def deform_vertices(grid_verts: torch.Tensor, deformation: torch.Tensor, tet_res: int,
                    multiplier: float = 1.0) -> torch.Tensor:
    """``v = grid + tanh(x) / (tet_res · multiplier)`` (multiplier 1 for DMTet, 2 for FlexiCubes)."""
    return grid_verts + torch.tanh(deformation) / (float(tet_res) * float(multiplier))


def empty_shape_guard(sdf: torch.Tensor, centre: int, boundary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For samples whose SDF has one sign everywhere: detach the sample, **add** ``1 − min s`` at the centre
    vertex (making it ≥ +1, inside) and ``−1 − max s`` at the boundary vertices (≤ −1, outside), so marching
    tets always yields a surface; the per-sample loss ``mean|s|`` (0 for normal samples) pulls it back.
    (Adding rather than setting keeps the guarantee when ``min s > 1``.)  Returns ``(sdf [B,V], loss [B])``."""
    if sdf.dim() != 2:
        raise ValueError(f"empty_shape_guard: sdf must be [B,V], got {tuple(sdf.shape)}")
    pos = (sdf > 0).sum(1)
    empty = (pos == 0) | (pos == sdf.shape[1])
    loss = sdf.abs().mean(1) * empty.to(sdf.dtype)
    smin = sdf.detach().min(1).values
    smax = sdf.detach().max(1).values
    # where() with the boolean mask, not mask indexing (which runs nonzero: a host sync per call)
    fixed = sdf.detach() + torch.where(boundary.to(sdf.device)[None, :], (-1.0 - smax)[:, None], 0.0)
    fixed[:, centre] += 1.0 - smin  # the centre is not a boundary vertex
    return torch.where(empty[:, None], fixed, sdf), loss


def sdf_reg_loss(sdf: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits over unique grid edges whose endpoint signs differ, both directions, mean over all such
    edges of the batch (``s_i`` against ``1[s_j > 0]`` plus ``s_j`` against ``1[s_i > 0]``); 0 if none."""
    if sdf.dim() == 1:
        sdf = sdf[None]
    s = sdf[:, edges]                                                     # [B,E,2]
    mask = (s[..., 0] > 0) != (s[..., 1] > 0)
    if s.is_cuda:
        return _sdf_reg_masked(s, mask)
    if not bool(mask.any()):
        return sdf.sum() * 0.0
    a, b = s[..., 0][mask], s[..., 1][mask]
    return (F.binary_cross_entropy_with_logits(a, (b > 0).to(a.dtype))
            + F.binary_cross_entropy_with_logits(b, (a > 0).to(b.dtype)))


def _sdf_reg_masked(s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`sdf_reg_loss` without a host sync (no ``mask.any()`` / boolean indexing): masked sums over the
    count (0 when no edge crosses). Used on CUDA; the CPU keeps the original op order."""
    a, b = s[..., 0], s[..., 1]
    la = F.binary_cross_entropy_with_logits(a, (b > 0).to(a.dtype), reduction="none")
    lb = F.binary_cross_entropy_with_logits(b, (a > 0).to(b.dtype), reduction="none")
    cnt = mask.sum().clamp_min(1).to(s.dtype)
    return (torch.where(mask, la, 0.0).sum() + torch.where(mask, lb, 0.0).sum()) / cnt


def batched_field(verts: torch.Tensor, sdf: torch.Tensor, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(verts [B,V,3], sdf [B,V])`` from a shared ``verts [V,3]`` and/or an unbatched ``sdf [V]``; checked."""
    if sdf.dim() == 1:
        sdf = sdf[None]
    b, nv = sdf.shape
    if verts.dim() == 2:
        verts = verts[None].expand(b, -1, -1)
    if verts.shape[:2] != (b, nv) or verts.shape[-1] != 3:
        raise ValueError(f"{who}: verts {tuple(verts.shape)} does not match sdf {tuple(sdf.shape)}")
    return verts, sdf


_GRID_CACHE: dict = {}


def _cached(kind: str, tensors: tuple[torch.Tensor, ...], dev: torch.device, build):
    """``build()`` once per (kind, the caller's tensors, target device); the entry keeps the tensors alive, so their
    addresses stay unique.  Keyed on the caller's tensors, not on copies made per call, so the cache stays small."""
    key = (kind, str(dev)) + tuple((t.data_ptr(), tuple(t.shape), str(t.device)) for t in tensors)
    hit = _GRID_CACHE.get(key)
    if hit is None:
        hit = _GRID_CACHE[key] = (tensors, build())
    return hit[1]


def tet_mesh_edges(tets: torch.Tensor, dev: torch.device | None = None) -> torch.Tensor:
    """Sorted unique edges ``[E, 2]`` (``a < b``) of a tet mesh on ``dev`` (default: ``tets``'), as
    :class:`TetGrid` stores them (cached per tensor and device)."""
    dev = tets.device if dev is None else torch.device(dev)

    def build():
        t = tets.to(dev).long()
        return torch.unique(torch.sort(t[:, device_tables(dev)[3]], -1).values.reshape(-1, 2), dim=0)
    return _cached("edges", (tets,), dev, build)


def tet_edge_ids(tets: torch.Tensor, edges: torch.Tensor, dev: torch.device | None = None) -> torch.Tensor:
    """``[T, 6]`` index into the sorted unique ``edges [E, 2]`` of each tet's edges, in :data:`TET_EDGES` order,
    on ``dev`` (default: ``tets``'; cached per grid tensors and device)."""
    dev = tets.device if dev is None else torch.device(dev)

    def build():
        t, e = tets.to(dev).long(), edges.to(dev).long()
        nv = int(max(int(t.max()), int(e.max())) + 1)
        ev = torch.sort(t[:, device_tables(dev)[3]], -1).values                    # [T,6,2]
        key_t = ev[..., 0] * nv + ev[..., 1]
        key_e = e[:, 0] * nv + e[:, 1]
        if not bool((key_e[1:] > key_e[:-1]).all()):
            raise ValueError("tet_edge_ids: edges must be unique and sorted (as TetGrid.edges)")
        ids = torch.searchsorted(key_e, key_t.reshape(-1)).reshape(-1, 6)
        if not bool((key_e[ids.clamp(max=key_e.numel() - 1)] == key_t).all()):
            raise ValueError("tet_edge_ids: a tet edge is missing from the grid's edge list")
        return ids
    return _cached("tet_edge_ids", (tets, edges), dev, build)


def marching_tets(verts: torch.Tensor, sdf: torch.Tensor, tets: torch.Tensor,
                  edges: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Iso-surfaces ``sdf = 0`` of a batch: ``verts [V,3]`` (shared) or ``[B,V,3]``, ``sdf [V]`` or ``[B,V]``,
    the grid's ``tets [T,4]`` and its sorted unique ``edges [E,2]`` (derived from ``tets`` when not given).
    Returns ``B`` pairs ``(verts [Ni,3], faces [Fi,3] long)``; ``Fi`` may be 0.

    Vertices come in grid-edge order, faces in tet order.  Every count is taken on the device over the whole grid
    and read back with one copy (the only host sync); the rest selects at the known sizes, on CUDA with two Triton
    kernels (``perf.marching_kernel``), else with ``nonzero_static``.
    """
    verts, sdf = batched_field(verts, sdf, "marching_tets")
    b, nv = sdf.shape
    dev = sdf.device
    if edges is None:
        edges = tet_mesh_edges(tets, dev)
    te = tet_edge_ids(tets, edges, dev)                                  # [T,6] tet → grid edge
    tets, edges = tets.to(dev), edges.to(dev).long()
    num_tris, tri_table, _, _ = device_tables(dev)
    with torch.no_grad():
        occ, crossing = occupancy(sdf, edges)
        code = tet_codes(occ, tets)                                      # [B,T] uint8
        fast = marching_kernels() if dev.type == "cuda" else None
        if fast is not None:
            sel = fast.Selection(crossing, code, num_tris)
            counts = sel.counts()                                        # the one sync
            v_counts, f_counts = counts[:b], counts[b:]
            if sum(f_counts) == 0:                                       # no valid tet: no crossing edge either
                return _empty_meshes(verts, sdf, b)
            faces = sel.faces(te, tri_table, sum(f_counts))
            ca, cb = sel.endpoints(edges, nv, sum(v_counts))
        else:
            v_counts, f_counts, faces, ca, cb = _select(crossing, code, te, edges, nv)
            if faces is None:
                return _empty_meshes(verts, sdf, b)
    # index_select, not [ca]: its backward is an index_add, where indexing's accumulating index_put sorts the ids
    vf = verts.reshape(-1, 3)
    sf = sdf.reshape(-1)
    sa, sb = sf.index_select(0, ca)[:, None], sf.index_select(0, cb)[:, None]
    pts = (vf.index_select(0, ca) * (-sb) + vf.index_select(0, cb) * sa) / (sa - sb)
    return list(zip(pts.split(v_counts), faces.split(f_counts)))


def marching_kernels():
    """``perf.marching_kernel``: after the count read, the faces and vertex endpoints written by two Triton
    kernels (:mod:`get3d.geometry.march_triton`), or PyTorch's selections (also the CPU path)."""
    from get3d import perf
    if perf.active().marching_kernel != "triton":
        return None
    try:
        from get3d.geometry import march_triton
    except ImportError:  # no Triton
        return None
    return march_triton


def _empty_meshes(verts: torch.Tensor, sdf: torch.Tensor, b: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    empty = torch.zeros(0, 3, dtype=torch.long, device=sdf.device)
    return [(verts.new_zeros(0, 3) + 0.0 * sdf.sum(), empty) for _ in range(b)]


def _select(crossing: torch.Tensor, code: torch.Tensor, te: torch.Tensor, edges: torch.Tensor, nv: int):
    """PyTorch's selections: ``(v_counts, f_counts, faces [F,3], ca [N], cb [N])`` with flat ``b·nv + vertex``
    endpoint ids; ``faces`` is None when no tet is valid.  One host read of every count."""
    b = crossing.shape[0]
    dev = crossing.device
    num_tris, tri_table, _, _ = device_tables(dev)
    vid = torch.cumsum(crossing, 1) - 1                                  # each crossing edge's vertex id
    ntri = num_tris[code.long()]
    valid = ntri > 0
    counts = torch.cat([crossing.sum(1), ntri.sum(1), valid.sum().reshape(1)]).tolist()   # the one sync
    v_counts, f_counts, n_valid = counts[:b], counts[b:2 * b], counts[-1]
    if n_valid == 0:
        return v_counts, f_counts, None, None, None
    bi, ti = torch.nonzero_static(valid, size=n_valid).unbind(1)        # sample-major, then tet order
    c = code[bi, ti].long()
    table = tri_table[c].clamp(min=0)                                    # [N,2,3] local edge ids
    gedge = torch.gather(te[ti][:, None, :].expand(-1, 2, -1), 2, table)
    tri_v = vid[bi[:, None, None], gedge]                                # [N,2,3] sample-local vertex ids
    keep = torch.arange(2, device=dev)[None] < num_tris[c][:, None]
    keep_idx = torch.nonzero_static(keep.reshape(-1), size=sum(f_counts)).squeeze(1)
    faces = tri_v.reshape(-1, 3)[keep_idx]
    flat = torch.nonzero_static(crossing.reshape(-1), size=sum(v_counts)).squeeze(1)
    e = edges[flat % edges.shape[0]]
    base = (flat // edges.shape[0] * nv)[:, None]
    ca, cb = (e + base).unbind(1)
    return v_counts, f_counts, faces, ca, cb


def dmtet_fields(grid: TetGrid, sdf: torch.Tensor, deformation: torch.Tensor | None = None, multiplier: float = 1.0,
                 guard: bool = True) -> dict:
    """The shape-static half of :func:`dmtet_extract` (deformed grid, empty-shape guard, SDF regulariser): dense
    work over the grid with no host sync on CUDA, so it can be captured.  Returns ``verts``, ``sdf``, ``sdf_reg``,
    ``empty_loss``."""
    if sdf.dim() == 1:
        sdf = sdf[None]
    verts = grid.verts.to(sdf.device)[None].expand(sdf.shape[0], -1, -1)
    if deformation is not None:
        verts = deform_vertices(verts, deformation, grid.res, multiplier)
    empty_loss = torch.zeros(sdf.shape[0], device=sdf.device, dtype=sdf.dtype)
    if guard:
        sdf, empty_loss = empty_shape_guard(sdf, grid.centre, grid.boundary.to(sdf.device))
    reg = sdf_reg_loss(sdf, grid.edges.to(sdf.device))
    return {"verts": verts, "sdf": sdf, "sdf_reg": reg, "empty_loss": empty_loss}


def march(grid: TetGrid, verts: torch.Tensor, sdf: torch.Tensor, capacity=None):
    """Marching tets over the grid's (deformed) ``verts [B,V,3]`` and ``sdf [B,V]``: exactly sized meshes, or
    with a ``capacity`` a :class:`~get3d.geometry.padded.PaddedMeshes` batch extracted without host syncs."""
    if capacity is None:
        return marching_tets(verts, sdf, grid.tets, grid.edges)
    from .padded import marching_tets_padded
    return marching_tets_padded(verts, sdf, grid.tets, grid.edges, capacity)


def dmtet_extract(grid: TetGrid, sdf: torch.Tensor, deformation: torch.Tensor | None = None,
                  multiplier: float = 1.0, guard: bool = True, capacity=None) -> dict:
    """Full DMTet step for a batch: deform the grid, apply the empty-shape guard, march tets, regularise.

    ``sdf [B,V]`` (raw network output, > 0 inside), ``deformation [B,V,3]`` raw (or None).  Returns a dict with
    ``meshes`` (list of ``(verts, faces)``), ``verts`` [B,V,3] deformed grid, ``sdf`` (guarded),
    ``sdf_reg`` (BCE regulariser, unweighted; GET3D weight :data:`SDF_REG_WEIGHT`), ``empty_loss`` [B].
    With a ``capacity`` (:class:`get3d.geometry.padded.SurfaceCapacity`) the meshes are a
    :class:`~get3d.geometry.padded.PaddedMeshes` batch extracted without host syncs (check its ``overflow``).
    """
    out = dmtet_fields(grid, sdf, deformation, multiplier, guard)
    out["meshes"] = march(grid, out["verts"], out["sdf"], capacity)
    return out
