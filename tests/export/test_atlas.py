"""Clean-up (weld, small components) and xatlas atlases, in this process and in a pool."""
from __future__ import annotations

import numpy as np
import trimesh

from get3d.export.atlas import clean_mesh, drop_small_components, uv_atlas, uv_atlases, weld_vertices


def _two_boxes():
    big = trimesh.creation.box((0.5, 0.5, 0.5))
    small = trimesh.creation.box((0.05, 0.05, 0.05))
    small.apply_translation((1, 0, 0))
    v = np.concatenate([big.vertices, small.vertices]).astype(np.float32)
    f = np.concatenate([big.faces, small.faces + len(big.vertices)]).astype(np.int64)
    return v, f, big


def test_drop_small_components_keeps_the_big_one():
    v, f, big = _two_boxes()
    v2, f2 = drop_small_components(v, f, 0.05)
    assert len(f2) == len(big.faces) and len(v2) == len(big.vertices)
    assert drop_small_components(v, f, 0.0)[1].shape == f.shape


def test_weld_merges_split_vertices():
    box = trimesh.creation.box((0.5, 0.5, 0.5))
    v = box.vertices[box.faces].reshape(-1, 3).astype(np.float32)       # every face with its own vertices
    f = np.arange(len(v)).reshape(-1, 3)
    v2, f2 = weld_vertices(v + np.float32(1e-7), f, 1e-5)
    assert len(v2) == 8 and len(f2) == 12
    assert trimesh.Trimesh(v2, f2, process=False).is_watertight
    v3, f3 = clean_mesh(v, f, weld_tolerance=1e-5, min_component_fraction=0.5)
    assert len(v3) == 8 and len(f3) == 12


def test_atlas_covers_unit_square_and_pool_matches_inline():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    v, f = sphere.vertices.astype(np.float32), sphere.faces.astype(np.int64)
    a = uv_atlas(v, f, 128, 2)
    assert a.uvs.min() >= 0 and a.uvs.max() <= 1 and len(a.faces) == len(f)
    # every atlas triangle is an input triangle (vertices only duplicated along seams)
    assert np.allclose(np.sort(a.verts[a.faces].reshape(-1, 9), 1), np.sort(v[f].reshape(-1, 9), 1))
    inline = uv_atlases([(v, f), (v * 2, f)], 128, 2, workers=1)
    pooled = uv_atlases([(v, f), (v * 2, f)], 128, 2, workers=2)
    for x, y in zip(inline, pooled):
        np.testing.assert_array_equal(x.uvs, y.uvs)
        np.testing.assert_array_equal(x.faces, y.faces)
