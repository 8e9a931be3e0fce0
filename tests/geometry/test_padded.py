"""Fixed-capacity marching tets: the same surface as the exact extraction, sizes kept on the device, overflow
flagged (never a silent cut), and the renderer drawing padded batches like lists."""
from __future__ import annotations

import pytest
import torch

from get3d.geometry.dmtet import dmtet_extract, marching_tets
from get3d.geometry.padded import PaddedMeshes, SurfaceCapacity, marching_tets_padded, tet_edge_ids
from get3d.geometry.tetgrid import load_tet_grid


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return load_tet_grid(16, cache_dir=tmp_path_factory.mktemp("tetgrids"))


def _fields(grid, b: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = grid.verts[None].expand(b, -1, -1) + 0.01 * torch.randn(b, grid.verts.shape[0], 3, generator=g)
    r = grid.verts.norm(dim=-1)[None]
    sdf = 0.3 - r + 0.08 * torch.randn(b, grid.verts.shape[0], generator=g)   # noisy ball: many components
    sdf[b - 1] = -1.0                                                         # last sample: empty
    return v.requires_grad_(True), sdf.requires_grad_(True)


def test_same_surface_and_gradients_as_the_exact_extraction(grid):
    v, sdf = _fields(grid)
    exact = marching_tets(v, sdf, grid.tets)
    padded = marching_tets_padded(v, sdf, grid.tets, grid.edges, SurfaceCapacity(4096, 8192))
    assert not padded.overflow.any()
    assert padded.num_faces.tolist() == [f.shape[0] for _, f in exact]
    assert padded.num_faces[:-1].min() > 100 and padded.num_faces[-1] == 0
    for (ve, fe), (vp, fp) in zip(exact, padded):
        assert torch.equal(fe, fp)                                   # same faces in the same order
        assert torch.equal(ve, vp)                                   # same vertices, bit for bit
    # padding: unused vertex slots at the origin, unused face slots (k, k, k) with distinct k (zero area, no
    # shared edge key)
    pad = padded.faces[0, int(padded.num_faces[0]):]
    assert (pad == pad[:, :1]).all() and len(pad[:, 0].unique()) == min(len(pad), padded.verts.shape[1])
    assert (padded.verts[0, int(padded.num_verts[0]):] == 0).all()
    # gradients through both are the same (and finite: padding slots divide by 1, not 0/0)
    w = torch.randn(4096, 3, generator=torch.Generator().manual_seed(1))
    ge = torch.autograd.grad(sum((ve * w[: ve.shape[0]]).sum() for ve, _ in exact), [v, sdf])
    gp = torch.autograd.grad((padded.verts * w[None]).sum(), [v, sdf])
    for a, b in zip(ge, gp):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_overflow_is_flagged_never_cut_silently(grid):
    v, sdf = _fields(grid)
    exact_faces = [f.shape[0] for _, f in marching_tets(v, sdf, grid.tets)]
    cap = SurfaceCapacity(64, max(exact_faces[1:3]) - 1)            # samples 1..2 do not fit one way or another
    padded = marching_tets_padded(v, sdf, grid.tets, grid.edges, cap)
    assert padded.overflow[:3].all() and not padded.overflow[3]
    assert padded.num_faces.tolist() == exact_faces                  # the real sizes, not the capacity
    with pytest.raises(OverflowError, match="did not fit capacity"):
        padded[0]
    # growing to what was needed makes it fit, and the surface is the exact one again
    cap.grow(int(padded.num_verts.max()), int(padded.num_faces.max()))
    assert cap.faces >= 1.5 * max(exact_faces) and cap.faces % 1024 == 0
    again = marching_tets_padded(v, sdf, grid.tets, grid.edges, cap)
    assert not again.overflow.any()
    assert [f.shape[0] for _, f in again] == exact_faces


def test_capacity_fits_down_to_the_need_with_slack():
    cap = SurfaceCapacity(verts=65536, faces=65536, pixels=524288)
    assert cap.fit(10_000, 20_000, 100_000)                       # all far above 1.5 x 1.5 x need
    assert (cap.verts, cap.faces, cap.pixels) == (15360, 30720, 150528)   # 1.5 x need, rounded up to 1,024
    assert not cap.fit(12_000, 25_000, 120_000)                   # within the slack: unchanged
    assert (cap.verts, cap.faces, cap.pixels) == (15360, 30720, 150528)
    assert not cap.fit(20_000, 40_000, 200_000)                   # a larger need is grow's job (after an overflow)
    every_pixel = SurfaceCapacity(verts=4096, faces=4096, pixels=0)
    every_pixel.fit(100, 100, 100)
    assert every_pixel.pixels == 0 and every_pixel.verts == 1024  # 0 = every pixel: never shrunk


def test_capacity_follows_the_envelope_of_recent_needs_not_the_last_one():
    """Needs that swing by 2-3x between phases (an untrained generator) overflow once, then fit; sizing to the
    last need alone overflows on most large phases. Needs that stay small let it shrink, slowly."""
    cap = SurfaceCapacity(verts=65536, faces=65536, pixels=0)
    needs = [4000, 11000, 3500, 9000, 12000, 5000, 10500, 4000] * 8
    overflows = 0
    for n in needs:
        if n > cap.faces:
            overflows += 1
            cap.grow(n, n)
        else:
            cap.fit(n, n)
    assert overflows == 1 and cap.faces >= 12000
    small = cap.faces
    for _ in range(2000):                                           # the surfaces got smaller for good
        cap.fit(3000, 3000)
    assert 3000 * 1.5 <= cap.faces < small / 2


def test_capacity_and_edge_map_validation(grid):
    with pytest.raises(ValueError, match="must be >= 1"):
        SurfaceCapacity(0, 10)
    te = tet_edge_ids(grid.tets, grid.edges)
    assert te.shape == (grid.tets.shape[0], 6)
    a, b = grid.edges[te[:, 0], 0], grid.edges[te[:, 0], 1]
    t01 = torch.sort(grid.tets[:, [0, 1]], 1).values
    assert torch.equal(torch.stack([a, b], 1), t01)
    with pytest.raises(ValueError, match="missing from the grid's edge list"):
        tet_edge_ids(grid.tets, grid.edges[1:].clone())


def test_dmtet_extract_with_capacity_returns_a_padded_batch(grid):
    _, sdf = _fields(grid, b=2)
    out = dmtet_extract(grid, sdf.detach(), None, capacity=SurfaceCapacity(4096, 8192))
    ref = dmtet_extract(grid, sdf.detach(), None)
    assert isinstance(out["meshes"], PaddedMeshes) and len(out["meshes"]) == 2
    torch.testing.assert_close(out["sdf_reg"], ref["sdf_reg"])
    for (va, fa), (vb, fb) in zip(out["meshes"], ref["meshes"]):
        assert torch.equal(fa, fb) and torch.equal(va, vb)


def test_renderer_draws_a_padded_batch_like_the_list(grid):
    from get3d import cameras
    from get3d.raster.render import render_meshes
    from get3d.raster.torch_backend import TorchRasterBackend

    v, sdf = _fields(grid, b=3)
    exact = marching_tets(v, sdf, grid.tets)
    padded = marching_tets_padded(v, sdf, grid.tets, grid.edges, SurfaceCapacity(4096, 8192))
    c2w = torch.from_numpy(cameras.camera_to_world([0.3, 1.9, 4.0], [1.2, 1.0, 1.4])).float()
    mvp = cameras.mvp_from_c2w(c2w)

    def field(p):                                  # a colour field, batched [B, N, 3] → [B, N, 4]
        return torch.cat([p.abs(), p.sum(-1, keepdim=True).sin()], -1)

    def tex(p, s):                                 # its flat form (points [N,3], sample index [N])
        return field(p)

    be = TorchRasterBackend("cpu")
    a = render_meshes(be, exact, mvp, 48, tex)
    b = render_meshes(be, padded, mvp, 48, tex)                       # padded meshes, flat shading
    tex.batched = field
    c = render_meshes(be, padded, mvp, 48, tex)                       # padded meshes, compacted pixel slots
    assert "pixel_overflow" not in b and not c["pixel_overflow"].any()
    assert int(c["pixel_need"]) == int(a["hard_mask"].flatten(1).sum(1).max())
    assert a["hard_mask"][:2].sum() > 100 and b["hard_mask"][2].sum() == 0
    for r in (b, c):
        assert torch.equal(a["hard_mask"], r["hard_mask"])
        for k in ("mask", "depth", "rgb"):  # same values up to float32 rounding (batched vs gathered transform)
            torch.testing.assert_close(a[k], r[k], rtol=1e-4, atol=1e-5)
    ga = torch.autograd.grad(a["rgb"].sum() + a["mask"].sum(), [v, sdf], retain_graph=True)
    for r in (b, c):
        gr = torch.autograd.grad(r["rgb"].sum() + r["mask"].sum(), [v, sdf], retain_graph=True)
        for x, y in zip(ga, gr):
            torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-5)
    # too few pixel slots: flagged with the count that was needed, never cut silently
    padded.capacity.pixels = 16
    d = render_meshes(be, padded, mvp, 48, tex)
    assert d["pixel_overflow"][:2].all() and not d["pixel_overflow"][2]
    assert int(d["pixel_need"]) == int(c["pixel_need"])
