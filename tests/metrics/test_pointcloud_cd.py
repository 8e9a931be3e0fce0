import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from get3d.metrics.chamfer import chamfer_matrix, chamfer_pair
from get3d.metrics.coverage import coverage_mmd
from get3d.metrics.pointcloud import normalize_scale, sample_surface


def _box():
    import trimesh
    return trimesh.creation.box((2.0, 1.0, 0.5))


def test_sampling_scale_and_determinism():
    b = _box()
    p = sample_surface(b.vertices + 3.0, b.faces, 2048, seed=1)
    q = sample_surface(b.vertices + 3.0, b.faces, 2048, seed=1)
    assert p.shape == (2048, 3) and np.array_equal(p, q)
    ext = p.max(0) - p.min(0)
    assert abs(ext.max() - 1.0) < 0.02
    assert p.min() >= 1.0 - 1e-5  # no centring: the +3 offset survives the scaling ((3 - 1) / 2)


def test_sampling_area_uniform():
    import trimesh
    b = trimesh.creation.box((1.0, 1.0, 1.0))
    p = sample_surface(b.vertices, b.faces, 60000, seed=0, normalize=False)
    # each of the 6 faces gets ~1/6 of the points
    face = np.argmax(np.abs(p), axis=1) * 2 + (p[np.arange(len(p)), np.argmax(np.abs(p), axis=1)] > 0)
    frac = np.bincount(face, minlength=6) / len(p)
    assert np.allclose(frac, 1 / 6, atol=0.01)


def test_degenerate_meshes():
    with pytest.warns(RuntimeWarning):
        assert sample_surface(np.zeros((0, 3)), np.zeros((0, 3), int), 16).shape == (16, 3)
    with pytest.warns(RuntimeWarning):  # one zero-area triangle
        p = sample_surface(np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0.0]]), np.array([[0, 1, 2]]), 8)
    assert np.isfinite(p).all()
    one = sample_surface(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.0]]), np.array([[0, 1, 2]]), 32)
    assert np.isfinite(one).all() and one.shape == (32, 3)
    with pytest.raises(ValueError, match="vertices"):
        sample_surface(np.zeros((3, 3)), np.array([[0, 1, 5]]), 8)
    assert normalize_scale(np.ones((4, 3))).shape == (4, 3)


def _cd_kdtree(x, y):
    dx, _ = cKDTree(y).query(x)
    dy, _ = cKDTree(x).query(y)
    return (dx ** 2).mean() + (dy ** 2).mean()


def test_chamfer_matches_kdtree():
    rng = np.random.default_rng(0)
    gen = rng.random((5, 300, 3)).astype(np.float32)
    ref = rng.random((4, 256, 3)).astype(np.float32)
    m = chamfer_matrix(torch.from_numpy(gen), torch.from_numpy(ref), device="cpu", pair_chunk=3)
    brute = np.array([[_cd_kdtree(g, r) for r in ref] for g in gen])
    assert np.allclose(m.numpy(), brute, rtol=1e-4, atol=1e-6)
    assert float(chamfer_pair(torch.from_numpy(gen[0]), torch.from_numpy(gen[0]))) < 1e-6


def _cov_mmd_brute(d):
    G, R = d.shape
    covered = set()
    for g in range(G):
        covered.add(min(range(R), key=lambda r: d[g, r]))
    mmd = sum(min(d[g, r] for g in range(G)) for r in range(R)) / R
    return 100.0 * len(covered) / R, mmd


def test_cov_mmd_brute_force():
    rng = np.random.default_rng(1)
    for G, R in [(7, 5), (3, 9), (10, 10)]:
        d = rng.random((G, R))
        cov, mmd = _cov_mmd_brute(d)
        r = coverage_mmd(d)
        assert r["cov"] == pytest.approx(cov) and r["mmd"] == pytest.approx(mmd)
    assert coverage_mmd(np.array([[1.0]]), scale=1e3)["mmd"] == pytest.approx(1e3)
    assert np.isnan(coverage_mmd(np.zeros((0, 3)))["cov"])


def test_cd_metric_through_registry():
    import trimesh
    from get3d.metrics import MetricContext, compute_metrics
    meshes = [(m.vertices, m.faces) for m in (trimesh.creation.box((1, 1, 1)), trimesh.creation.icosphere(1))]
    ctx = MetricContext(real_meshes=lambda: meshes, fake_meshes=lambda: meshes, num_points=256)
    out = compute_metrics(["cd"], ctx)
    assert out["cov_cd"] == 100.0 and 0 < out["mmd_cd"] < 30.0  # x1e3; 256-point resamples of the same shape
