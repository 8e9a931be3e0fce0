import math
import warnings

import numpy as np
import pytest
import torch

from get3d import cameras
from get3d.geometry import (
    dmtet_extract,
    empty_shape_guard,
    euler_characteristic,
    flexicubes_extract,
    is_watertight,
    load_tet_grid,
    make_cube_grid,
    marching_tets,
    mesh_area,
    sdf_reg_loss,
    signed_volume,
)
from get3d.geometry.tetgrid import build_tet_grid_arrays
from get3d.raster import TorchRasterBackend, render_meshes


@pytest.fixture(scope="module")
def grid64(tmp_path_factory):
    return load_tet_grid(64, cache_dir=tmp_path_factory.mktemp("tg"))


def _check_closed(v, f, chi):
    assert f.shape[0] > 0
    assert euler_characteristic(v, f) == chi
    assert is_watertight(f)
    assert signed_volume(v, f) > 0


def test_tetgrid_conforming_and_oriented():
    d = build_tet_grid_arrays(8)
    n = 4
    assert d["verts"].shape[0] == (n + 1) ** 3 and d["tets"].shape[0] == 6 * n ** 3
    v = d["verts"][d["tets"]].astype(np.float64)
    assert (np.linalg.det(v[:, 1:] - v[:, :1]) > 0).all()
    assert abs(np.abs(np.linalg.det(v[:, 1:] - v[:, :1])).sum() / 6 - 1.0) < 1e-9  # fills the unit cube
    faces = np.sort(np.concatenate([d["tets"][:, [1, 2, 3]], d["tets"][:, [0, 2, 3]], d["tets"][:, [0, 1, 3]],
                                    d["tets"][:, [0, 1, 2]]]), 1)
    _, counts = np.unique(faces, axis=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2} and (counts == 1).sum() == 6 * n * n * 2
    assert np.allclose(d["verts"][d["centre"]], 0)
    bnd = d["boundary"]
    assert bnd.sum() == (n + 1) ** 3 - (n - 1) ** 3
    assert np.allclose(np.abs(d["verts"][bnd]).max(1), 0.5)


def test_tetgrid_cache_atomic_and_corrupt(tmp_path):
    g = load_tet_grid(6, scale=2.0, cache_dir=tmp_path)
    path = tmp_path / "tetgrid_res6.npz"
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == ["tetgrid_res6.npz"]
    assert torch.allclose(g.verts.abs().max(), torch.tensor(1.0))
    g2 = load_tet_grid(6, cache_dir=tmp_path)
    assert torch.equal(g2.tets, g.tets)
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        g3 = load_tet_grid(6, cache_dir=tmp_path)
    assert torch.equal(g3.tets, g.tets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_tet_grid(6, cache_dir=tmp_path)  # rebuilt file is valid again
    with pytest.raises(ValueError):
        load_tet_grid(1, cache_dir=tmp_path)


def test_dmtet_sphere(grid64):
    r = 0.3
    sdf = r - grid64.verts.norm(dim=-1)
    (v, f), = marching_tets(grid64.verts, sdf, grid64.tets)
    _check_closed(v, f, 2)
    assert abs(mesh_area(v, f).item() / (4 * math.pi * r * r) - 1) < 0.02
    # outward normals: every face normal points away from the centre
    n = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1)
    assert ((n * v[f].mean(1)).sum(-1) > 0).all()
    # vertices lie on the sphere (linear interpolation error only)
    assert (v.norm(dim=-1) - r).abs().max() < 0.01


def test_dmtet_torus_and_hole(grid64):
    p = grid64.verts
    q = torch.stack([torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2) - 0.25, p[:, 1]], -1)
    torus = 0.1 - q.norm(dim=-1)
    (v, f), = marching_tets(p, torus, grid64.tets)
    _check_closed(v, f, 0)
    plate = torch.stack([0.1 - p[:, 2].abs(), 0.35 - p[:, 0].abs(), 0.35 - p[:, 1].abs(),
                         torch.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2) - 0.12], -1).min(-1).values
    (v, f), = marching_tets(p, plate, grid64.tets)
    _check_closed(v, f, 0)


def test_dmtet_batch_matches_single_and_empty(grid64):
    p = grid64.verts
    s1 = 0.3 - p.norm(dim=-1)
    s2 = 0.2 - (p - 0.05).abs().max(-1).values
    s3 = -torch.ones_like(s1)
    out = marching_tets(p, torch.stack([s1, s2, s3]), grid64.tets)
    for (v, f), s in zip(out[:2], (s1, s2)):
        (v1, f1), = marching_tets(p, s, grid64.tets)
        assert torch.allclose(v, v1) and torch.equal(f, f1)
    assert out[2][1].shape == (0, 3) and out[2][0].shape == (0, 3)


def test_marching_tets_builds_no_constant_tensors_per_call(grid64, monkeypatch):
    """The case tables reach the device once: on CUDA a blocking copy from host memory is a host sync per call."""
    p = grid64.verts
    sdf = 0.3 - p.norm(dim=-1)
    first = marching_tets(p, sdf, grid64.tets)
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(a) or real(*a, **k))
    again = marching_tets(p, sdf, grid64.tets)
    assert made == []
    assert torch.equal(first[0][1], again[0][1]) and torch.equal(first[0][0], again[0][0])


def test_empty_shape_guard_and_sdf_reg(grid64):
    p = grid64.verts
    ok = (0.3 - p.norm(dim=-1)).requires_grad_(True)
    neg = torch.full_like(ok, -0.5).requires_grad_(True)
    pos = torch.full_like(ok, 2.0).requires_grad_(True)
    sdf, loss = empty_shape_guard(torch.stack([ok, neg, pos]), grid64.centre, grid64.boundary)
    assert torch.equal(sdf[0], ok) and loss[0] == 0
    assert loss[1].item() == pytest.approx(0.5) and loss[2].item() == pytest.approx(2.0)
    for i in (1, 2):
        assert sdf[i, grid64.centre] >= 1 and (sdf[i, grid64.boundary] <= -1).all()
    meshes = marching_tets(p, sdf, grid64.tets)
    assert all(f.shape[0] > 0 for _, f in meshes)
    (loss.sum() + sdf[0].sum()).backward()
    assert neg.grad.abs().sum() > 0  # only via the guard loss
    # regulariser: hand-computed on a 3-vertex example
    s = torch.tensor([[1.0, -2.0, 3.0]])
    e = torch.tensor([[0, 1], [1, 2], [0, 2]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    a = torch.tensor([1.0, -2.0])
    b = torch.tensor([-2.0, 3.0])
    want = bce(a, (b > 0).float()) + bce(b, (a > 0).float())
    assert torch.allclose(sdf_reg_loss(s, e), want)
    assert sdf_reg_loss(torch.ones(1, 3), e) == 0


def test_dmtet_gradients_from_rendered_mask_and_rgb(tmp_path):
    grid = load_tet_grid(24, cache_dir=tmp_path)
    sdf = (0.3 - grid.verts.norm(dim=-1))[None].clone().requires_grad_(True)
    deform = torch.zeros(1, grid.verts.shape[0], 3, requires_grad=True)
    tex = torch.zeros(3, requires_grad=True)
    out = dmtet_extract(grid, sdf, deform)
    c2w = cameras.camera_to_world(torch.tensor([0.4]), torch.tensor([1.2]))
    img = render_meshes(TorchRasterBackend(), out["meshes"], cameras.mvp_from_c2w(c2w), 48,
                        texture_fn=lambda pts, s: torch.sigmoid(pts * 3 + tex))
    img["mask"].sum().backward(retain_graph=True)
    assert sdf.grad.abs().sum() > 0 and deform.grad.abs().sum() > 0
    # growing the silhouette: increasing SDF (more inside) should increase the mask area on average
    assert sdf.grad.sum() > 0
    img["rgb"].sum().backward()
    assert tex.grad.abs().sum() > 0


def test_flexicubes_sphere_and_gradients():
    g = make_cube_grid(32)
    r = 0.3
    sdf = g.verts.norm(dim=-1) - r                     # FlexiCubes: negative inside
    for training in (True, False):
        out = flexicubes_extract(g, sdf, training=training)
        v, f = out["meshes"][0]
        _check_closed(v, f, 2)
        assert abs(mesh_area(v, f).item() / (4 * math.pi * r * r) - 1) < 0.02
    torus_q = torch.stack([torch.sqrt(g.verts[:, 0] ** 2 + g.verts[:, 2] ** 2) - 0.25, g.verts[:, 1]], -1)
    v, f = flexicubes_extract(g, torus_q.norm(dim=-1) - 0.1)["meshes"][0]
    _check_closed(v, f, 0)
    g = make_cube_grid(16)
    s = (g.verts.norm(dim=-1) - r)[None].clone().requires_grad_(True)
    d = torch.zeros(1, g.verts.shape[0], 3, requires_grad=True)
    w = torch.zeros(1, g.cubes.shape[0], 21, requires_grad=True)
    out = flexicubes_extract(g, s, d, w)
    c2w = cameras.camera_to_world(torch.tensor([0.4]), torch.tensor([1.2]))
    img = render_meshes(TorchRasterBackend(), out["meshes"], cameras.mvp_from_c2w(c2w), 48)
    (img["mask"].sum() + out["dev_loss"] + out["sdf_reg"]).backward()
    assert s.grad.abs().sum() > 0 and d.grad.abs().sum() > 0 and w.grad.abs().sum() > 0
    empty = flexicubes_extract(g, torch.ones(2, g.verts.shape[0]))
    assert all(f.shape[0] == 0 for _, f in empty["meshes"])


def test_mesh_helpers():
    import trimesh
    box = trimesh.creation.box(extents=(1, 2, 3))
    v, f = torch.tensor(box.vertices), torch.tensor(box.faces)
    assert mesh_area(v, f).item() == pytest.approx(22.0)
    assert signed_volume(v, f).item() == pytest.approx(6.0)
    assert euler_characteristic(v, f) == 2 and is_watertight(f)
    assert not is_watertight(f[:-1])


def test_sdf_reg_sync_free_path_matches_reference():
    """The CUDA path of sdf_reg_loss (masked sums, no host sync) is the same function incl. gradients."""
    import torch

    from get3d.geometry import dmtet
    torch.manual_seed(0)
    edges = torch.randint(0, 40, (150, 2))
    for sdf0 in (torch.randn(3, 40, dtype=torch.float64), torch.ones(2, 40, dtype=torch.float64)):
        sdf = sdf0.clone().requires_grad_(True)
        ref = dmtet.sdf_reg_loss(sdf, edges)
        g_ref = torch.autograd.grad(ref, sdf, allow_unused=True)[0]
        s = sdf[:, edges]
        new = dmtet._sdf_reg_masked(s, (s[..., 0] > 0) != (s[..., 1] > 0))
        g_new = torch.autograd.grad(new, sdf, allow_unused=True)[0]
        torch.testing.assert_close(new, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_new, torch.zeros_like(sdf) if g_ref is None else g_ref, rtol=1e-12, atol=1e-12)


def test_marching_tets_caches_grid_maps_per_grid_not_per_call():
    """Grid tensors that need converting (int32 edges here; CPU tets with a CUDA field alike) must not grow the
    grid-map cache with a per-call copy: it is keyed on the caller's tensors, one entry per grid and device."""
    from get3d.geometry import dmtet
    grid = load_tet_grid(8)
    tets, edges = grid.tets.int(), grid.edges.int()
    sdf = 0.3 - grid.verts.norm(dim=-1)[None]
    ref = marching_tets(grid.verts, sdf, grid.tets, grid.edges)
    out = marching_tets(grid.verts, sdf, tets, edges)
    before = len(dmtet._GRID_CACHE)
    for _ in range(3):
        out = marching_tets(grid.verts, sdf, tets, edges)
    assert len(dmtet._GRID_CACHE) == before
    assert torch.equal(out[0][1], ref[0][1]) and torch.equal(out[0][0], ref[0][0])
