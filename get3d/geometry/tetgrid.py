"""Conforming tetrahedral grids for DMTet, generated here at any resolution and cached on disk.

Construction: the cube ``[-0.5, 0.5]^3`` is cut into ``n = res // 2`` cells per axis (vertex spacing ``2/res``,
the spacing GET3D's ``tet_res`` implies, so ``Δv = tanh(x)/tet_res`` moves a vertex at most half a cell), and
every cell is split into 6 tetrahedra along its main diagonal (Kuhn/Freudenthal subdivision).  Because every
cell uses the same diagonal direction, the face diagonals of neighbouring cells agree: the grid is conforming.
All tets are positively oriented (``det[v1-v0, v2-v0, v3-v0] > 0``).

Sizes next to the public Quartet grids of GET3D:

====  ===========================  ===========================
res   this grid: vertices / tets    Quartet (public): verts / tets
====  ===========================  ===========================
64    35,937 / 196,608  (n = 32)    36,562 / 192,492
90    97,336 / 546,750  (n = 45)    98,653 / 532,314
100   132,651 / 750,000 (n = 50)    134,302 / 729,162
====  ===========================  ===========================

The "centre vertex" (for the empty-shape guard) is the grid vertex nearest the box centre (exactly the centre
when ``n`` is even); boundary vertices are those on the faces of the box.
"""
from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from get3d.io import atomic_write_npz

CACHE_VERSION = 1


@dataclass
class TetGrid:
    """Grid vertices ``verts [V,3]`` (already scaled), ``tets [T,4]``, unique ``edges [E,2]``, ``centre`` index,
    ``boundary [V]`` bool mask, ``res`` (GET3D tet_res) and ``scale``."""

    verts: torch.Tensor
    tets: torch.Tensor
    edges: torch.Tensor
    centre: int
    boundary: torch.Tensor
    res: int
    scale: float

    def to(self, device) -> TetGrid:
        return TetGrid(self.verts.to(device), self.tets.to(device), self.edges.to(device), self.centre,
                       self.boundary.to(device), self.res, self.scale)


def _kuhn_tets() -> np.ndarray:
    """6 tets of the unit cell as corner offsets ``[6,4,3]``, positively oriented."""
    out = []
    for perm in itertools.permutations(range(3)):
        p = np.zeros(3, dtype=np.int64)
        path = [p.copy()]
        for ax in perm:
            p[ax] += 1
            path.append(p.copy())
        t = np.stack(path)
        if np.linalg.det((t[1:] - t[0]).astype(np.float64)) < 0:
            t = t[[0, 2, 1, 3]]
        out.append(t)
    return np.stack(out)


def build_tet_grid_arrays(res: int) -> dict:
    """Unscaled arrays of the grid at ``res`` (see module docstring)."""
    if int(res) != res or res < 2:
        raise ValueError(f"tet grid resolution must be an integer >= 2, got {res}")
    n = int(res) // 2
    m = n + 1
    ijk = np.stack(np.meshgrid(np.arange(m), np.arange(m), np.arange(m), indexing="ij"), -1).reshape(-1, 3)
    verts = (ijk / n - 0.5).astype(np.float32)
    cells = np.stack(np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 3)
    offs = _kuhn_tets()                                                   # [6,4,3]
    corner = cells[:, None, None, :] + offs[None]                         # [C,6,4,3]
    tets = (corner[..., 0] * m + corner[..., 1]) * m + corner[..., 2]
    tets = tets.reshape(-1, 4).astype(np.int64)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    e = np.concatenate([tets[:, list(p)] for p in pairs], 0)
    e = np.sort(e, 1)
    edges = np.unique(e, axis=0)
    boundary = ((ijk == 0) | (ijk == n)).any(1)
    centre = int(np.argmin(np.linalg.norm(verts, axis=1)))
    return {"version": np.int64(CACHE_VERSION), "res": np.int64(res), "verts": verts, "tets": tets,
            "edges": edges, "centre": np.int64(centre), "boundary": boundary}


def default_cache_dir() -> Path:
    return Path(os.environ.get("GET3D_CACHE_DIR", Path.home() / ".cache" / "get3d")) / "tetgrids"


def _load_npz(path: Path, res: int) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        if int(d["version"]) != CACHE_VERSION or int(d["res"]) != res:
            raise ValueError(f"version/res mismatch ({int(d['version'])}, {int(d['res'])})")
        for k in ("verts", "tets", "edges", "centre", "boundary"):
            if k not in d:
                raise ValueError(f"missing key {k!r}")
        if d["tets"].ndim != 2 or d["tets"].shape[1] != 4 or d["tets"].max() >= d["verts"].shape[0]:
            raise ValueError("bad tets array")
        return d
    except Exception as exc:  # noqa: BLE001 - corrupt / truncated / foreign file
        warnings.warn(f"tet grid cache {path} is unreadable ({exc}); rebuilding it")
        return None


def load_tet_grid(res: int, scale: float = 1.0, device="cpu", cache_dir: str | Path | None = None,
                  use_cache: bool = True) -> TetGrid:
    """The grid at ``res`` scaled to ``[-0.5, 0.5]^3 * scale``; cached as ``tetgrid_res{res}.npz``."""
    if scale <= 0:
        raise ValueError(f"tet grid scale must be > 0, got {scale}")
    res = int(res)
    d = None
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"tetgrid_res{res}.npz"
    if use_cache and path.exists():
        d = _load_npz(path, res)
    if d is None:
        d = build_tet_grid_arrays(res)
        if use_cache:
            try:
                atomic_write_npz(path, **d)
            except OSError as exc:
                warnings.warn(f"could not write tet grid cache {path}: {exc}")
    return TetGrid(
        verts=torch.from_numpy(np.asarray(d["verts"], dtype=np.float32) * float(scale)).to(device),
        tets=torch.from_numpy(np.asarray(d["tets"], dtype=np.int64)).to(device),
        edges=torch.from_numpy(np.asarray(d["edges"], dtype=np.int64)).to(device),
        centre=int(d["centre"]),
        boundary=torch.from_numpy(np.asarray(d["boundary"], dtype=bool)).to(device),
        res=res, scale=float(scale))
