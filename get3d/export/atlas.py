"""Mesh clean-up and UV atlases (xatlas), run over a pool of processes since xatlas is CPU-bound."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np


@dataclass
class AtlasMesh:
    """A mesh cut along its UV seams: ``verts`` [V, 3], ``faces`` [F, 3], ``uvs`` [V, 2] (OBJ convention)."""

    verts: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray


def weld_vertices(verts: np.ndarray, faces: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices that fall into the same ``tolerance`` grid cell (first one kept); drop faces that
    collapse and unused vertices."""
    if tolerance <= 0 or len(verts) == 0:
        return verts, faces
    keys = np.floor(np.asarray(verts, np.float64) / tolerance + 0.5).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)               # keep the original order of the kept vertices
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    f = rank[inverse.reshape(-1)][faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    return _compact(verts[first[order]], f)


def _compact(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.zeros(len(verts), bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return verts[used], remap[faces].astype(np.int64)


def drop_small_components(verts: np.ndarray, faces: np.ndarray, min_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Remove connected components (sharing vertices) whose surface area is below ``min_fraction`` of the
    whole mesh's area."""
    if min_fraction <= 0 or len(faces) == 0:
        return verts, faces
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(verts)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    t = np.asarray(verts, np.float64)[faces]
    area = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)
    comp_area = np.bincount(label[faces[:, 0]], weights=area, minlength=label.max() + 1)
    keep = comp_area[label[faces[:, 0]]] >= min_fraction * area.sum()
    return _compact(verts, faces[keep])


def clean_mesh(verts: np.ndarray, faces: np.ndarray, weld_tolerance: float = 0.0,
               min_component_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(verts, np.float32).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    v, f = weld_vertices(v, f, weld_tolerance)
    return drop_small_components(v, f, min_component_fraction)


def uv_atlas(verts: np.ndarray, faces: np.ndarray, resolution: int, padding: int) -> AtlasMesh:
    """xatlas charts packed into a ``resolution``² atlas with ``padding`` texels between charts."""
    import xatlas

    v = np.ascontiguousarray(verts, np.float32)
    f = np.ascontiguousarray(faces, np.uint32)
    atlas = xatlas.Atlas()
    atlas.add_mesh(v, f)
    pack = xatlas.PackOptions()
    pack.resolution = int(resolution)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, indices, uvs = atlas[0]
    return AtlasMesh(v[vmapping].astype(np.float32), indices.astype(np.int64), uvs.astype(np.float32))


def _atlas_job(args) -> AtlasMesh:
    verts, faces, resolution, padding = args
    return uv_atlas(verts, faces, resolution, padding)


def _context():
    """fork where there is one: the workers run only numpy + xatlas (no torch), and fork also works from
    interactive sessions and ``python -c``, where forkserver / spawn cannot re-import ``__main__``."""
    import multiprocessing

    return get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def resolve_workers(workers: int) -> int:
    if workers > 0:
        return workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def uv_atlases(meshes: list[tuple[np.ndarray, np.ndarray]], resolution: int, padding: int, workers: int = 0,
               pool: ProcessPoolExecutor | None = None) -> list[AtlasMesh]:
    """Atlases of several meshes, in parallel processes (``workers`` 0 = one per core; 1 = in this process).
    Results do not depend on the number of workers."""
    jobs = [(v, f, resolution, padding) for v, f in meshes]
    n = min(resolve_workers(workers), len(jobs))
    if pool is not None:
        return list(pool.map(_atlas_job, jobs))
    if n <= 1:
        return [_atlas_job(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=n, mp_context=_context()) as ex:
        return list(ex.map(_atlas_job, jobs))


def atlas_pool(workers: int) -> ProcessPoolExecutor | None:
    """A reusable pool for :func:`uv_atlases` (None when one worker suffices)."""
    n = resolve_workers(workers)
    return ProcessPoolExecutor(max_workers=n, mp_context=_context()) if n > 1 else None
