"""Fixed-capacity marching tets on CUDA: no host synchronisation from the field to the rendered images, and
nvdiffrast draws the padded batch like the exactly sized list (skipped without CUDA / nvdiffrast)."""
import pytest
import torch

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
pytest.importorskip("nvdiffrast.torch")

from get3d import cameras
from get3d.geometry.dmtet import marching_tets
from get3d.geometry.padded import SurfaceCapacity, marching_tets_padded, tet_edge_ids
from get3d.geometry.tetgrid import load_tet_grid
from get3d.raster import get_backend, render_meshes


def _scene(res: int = 90, b: int = 4):
    grid = load_tet_grid(res, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    v = grid.verts[None].expand(b, -1, -1) + 0.003 * torch.randn(b, grid.verts.shape[0], 3, generator=g,
                                                               device="cuda")
    sdf = 0.3 - grid.verts.norm(dim=-1)[None] + 0.02 * torch.randn(b, grid.verts.shape[0], generator=g,
                                                                  device="cuda")
    c2w = torch.from_numpy(cameras.camera_to_world([0.3, 1.9, 4.0, 5.5][:b], [1.2, 1.0, 1.4, 0.9][:b])).float()
    return grid, v.requires_grad_(True), sdf.requires_grad_(True), cameras.mvp_from_c2w(c2w.cuda())


@pytest.mark.parametrize("kernel", ["torch", "triton"])
def test_padded_extraction_and_rendering_never_sync(set_perf, kernel):
    set_perf(marching_kernel=kernel)
    grid, v, sdf, mvp = _scene()
    be = get_backend("nvdiffrast", "cuda")
    cap = SurfaceCapacity(200_000, 400_000, pixels=256 * 256)
    tet_edge_ids(grid.tets, grid.edges)                       # the static map is built once per grid (syncs)
    marching_tets_padded(v, sdf, grid.tets, grid.edges, cap)  # warm-up

    def tex(p, s):
        raise AssertionError("the padded path shades through the batched field")

    tex.batched = lambda p: torch.cat([p.abs(), p.sum(-1, keepdim=True).sin()], -1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")                   # any host sync below raises
    try:
        pm = marching_tets_padded(v, sdf, grid.tets, grid.edges, cap)
        out = render_meshes(be, pm, mvp, 256, texture_fn=tex)
        loss = out["mask"].sum() + out["rgb"].sum()
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert not pm.overflow.any() and not out["pixel_overflow"].any() and out["hard_mask"].sum() > 1000
    assert torch.isfinite(sdf.grad).all() and sdf.grad.abs().sum() > 0


@pytest.mark.parametrize("kernel", ["torch", "triton"])
def test_nvdiffrast_draws_padded_like_list(set_perf, kernel):
    set_perf(marching_kernel=kernel)
    grid, v, sdf, mvp = _scene()
    be = get_backend("nvdiffrast", "cuda")
    exact = marching_tets(v, sdf, grid.tets)
    pm = marching_tets_padded(v, sdf, grid.tets, grid.edges, SurfaceCapacity(200_000, 400_000))
    for (ve, fe), (vp, fp) in zip(exact, pm):
        assert torch.equal(fe, fp) and torch.equal(ve, vp)

    def tex(p, s):
        return torch.cat([p.abs(), p.sum(-1, keepdim=True).sin()], -1)

    a = render_meshes(be, exact, mvp, 512, tex)
    b = render_meshes(be, pm, mvp, 512, tex)
    tex.batched = lambda p: tex(p, None)
    pm.capacity.pixels = 512 * 512 // 2
    c = render_meshes(be, pm, mvp, 512, tex)
    assert not c["pixel_overflow"].any()
    ga = torch.autograd.grad(a["rgb"].sum() + a["mask"].sum(), [v, sdf], retain_graph=True)
    for r in (b, c):
        assert torch.equal(a["hard_mask"], r["hard_mask"])
        for k in ("mask", "depth", "rgb"):
            torch.testing.assert_close(a[k], r[k], rtol=1e-5, atol=1e-6)
        gr = torch.autograd.grad(r["rgb"].sum() + r["mask"].sum(), [v, sdf], retain_graph=True)
        for x, y in zip(ga, gr):               # silhouette gradients amplify that rounding: compare as a whole
            assert (x - y).norm() <= 1e-3 * x.norm(), float((x - y).norm() / x.norm())
