"""Marching tets' Triton selections (``perf.marching_kernel: triton``) == PyTorch's: the same counts, faces and
vertex endpoints in the same order, and through ``marching_tets`` the same meshes and gradients.

Runs on CUDA; without a GPU but with Triton installed, on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1`` set before Triton is imported)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nn"))
from triton_device import triton_test_device

from get3d import perf
from get3d.geometry import dmtet
from get3d.geometry.tetgrid import load_tet_grid

mt = pytest.importorskip("get3d.geometry.march_triton", reason="needs Triton")

DEVICE = triton_test_device()


def _fields(res: int, b: int, seed: int):
    grid = load_tet_grid(res, device=DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    n = grid.verts.shape[0]
    verts = grid.verts[None].expand(b, -1, -1) + 0.003 * torch.randn(b, n, 3, generator=g, device=DEVICE)
    sdf = 0.3 - grid.verts.norm(dim=-1)[None] + 0.05 * torch.randn(b, n, generator=g, device=DEVICE)
    return grid, verts, sdf


def _selections(grid, sdf):
    occ = sdf > 0
    edges = grid.edges.to(DEVICE).long()
    crossing = occ[:, edges[:, 0]] != occ[:, edges[:, 1]]
    code = dmtet.tet_codes(occ, grid.tets.to(DEVICE))
    te = dmtet.tet_edge_ids(grid.tets, grid.edges, torch.device(DEVICE))
    num_tris, tri_table, _, _ = dmtet.device_tables(torch.device(DEVICE))
    return crossing, code, te, edges, num_tris, tri_table


@pytest.mark.parametrize("res,b,seed", [(8, 1, 0), (12, 3, 1), (16, 4, 2)])
def test_triton_selection_equals_pytorch(res, b, seed):
    grid, _, sdf = _fields(res, b, seed)
    if b > 2:
        sdf[1] = -1.0          # an empty sample between two others: no vertices, no faces, offsets still right
        sdf[2] = 1.0           # and a full one
    nv = sdf.shape[1]
    crossing, code, te, edges, num_tris, tri_table = _selections(grid, sdf)
    v_ref, f_ref, faces_ref, ca_ref, cb_ref = dmtet._select(crossing, code, te, edges, nv)
    sel = mt.Selection(crossing, code, num_tris)
    counts = sel.counts()
    assert counts == v_ref + f_ref
    assert sum(f_ref) > 0
    torch.testing.assert_close(sel.faces(te, tri_table, sum(f_ref)), faces_ref, rtol=0, atol=0)
    ca, cb = sel.endpoints(edges, nv, sum(v_ref))
    torch.testing.assert_close(ca, ca_ref, rtol=0, atol=0)
    torch.testing.assert_close(cb, cb_ref, rtol=0, atol=0)


def test_triton_selection_of_an_empty_batch_counts_nothing():
    grid, _, sdf = _fields(8, 2, 0)
    sdf[:] = -1.0
    crossing, code, _, _, num_tris, _ = _selections(grid, sdf)
    assert mt.Selection(crossing, code, num_tris).counts() == [0, 0, 0, 0]


@pytest.mark.skipif(DEVICE != "cuda", reason="marching_tets picks the Triton selections on CUDA only")
def test_marching_tets_same_meshes_and_gradients_with_either_kernel(set_perf):
    grid, verts, sdf = _fields(32, 4, 3)
    sdf[1] = -1.0
    out = {}
    for kernel in ("torch", "triton"):
        set_perf(marching_kernel=kernel)
        v = verts.clone().requires_grad_(True)
        s = sdf.clone().requires_grad_(True)
        meshes = dmtet.marching_tets(v, s, grid.tets, grid.edges)
        w = torch.linspace(-1, 1, 3, device=DEVICE)
        sum((p * w).sum() for p, _ in meshes).backward()
        out[kernel] = ([(p.detach(), f) for p, f in meshes], v.grad, s.grad)
    for (pa, fa), (pb, fb) in zip(out["torch"][0], out["triton"][0]):
        torch.testing.assert_close(pb, pa, rtol=0, atol=0)
        torch.testing.assert_close(fb, fa, rtol=0, atol=0)
    torch.testing.assert_close(out["triton"][1], out["torch"][1])
    torch.testing.assert_close(out["triton"][2], out["torch"][2])


@pytest.mark.parametrize("cap", [(4096, 8192), (64, 200)])          # roomy; and too small (every sample flagged)
def test_padded_extraction_by_kernels_equals_pytorch(cap):
    from get3d.geometry import padded
    grid, verts, sdf = _fields(12, 3, 4)
    sdf[1] = -1.0
    cap = padded.SurfaceCapacity(*cap)
    tets, edges = grid.tets.to(DEVICE), grid.edges.to(DEVICE).long()
    te = dmtet.tet_edge_ids(grid.tets, grid.edges, torch.device(DEVICE))
    res = {}
    for kind in ("torch", "triton"):
        v = verts.clone().requires_grad_(True)
        s = sdf.clone().requires_grad_(True)
        if kind == "torch":
            with perf.using(marching_kernel="torch"):
                m = padded.marching_tets_padded(v, s, grid.tets, grid.edges, cap)
        else:
            m = padded._padded_by_kernels(mt, v, s, tets, edges, te, cap)
        w = torch.linspace(-1, 1, m.verts.shape[1] * 3, device=DEVICE).reshape(1, -1, 3)
        grads = torch.autograd.grad((m.verts * w).sum(), [v, s])
        res[kind] = (m, grads)
    (a, ga), (b, gb) = res["torch"], res["triton"]
    for name in ("faces", "num_verts", "num_faces", "overflow"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0, msg=name)
    torch.testing.assert_close(b.verts, a.verts, rtol=0, atol=0)
    assert bool(a.overflow.any()) == (cap.verts == 64)
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)

