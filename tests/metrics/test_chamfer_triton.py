"""Fused Triton CD kernel vs the torch path vs a float64 reference (GPU only)."""
import pytest
import torch

from get3d.metrics.chamfer import chamfer_matrix

pytestmark = pytest.mark.gpu


def _ref64(gen, ref):
    g, r = gen.double(), ref.double()
    out = torch.empty(g.shape[0], r.shape[0], dtype=torch.float64)
    for i in range(g.shape[0]):
        d = ((g[i][None, :, None, :] - r[:, None, :, :]) ** 2).sum(-1)  # [R, N, M]
        out[i] = d.min(2).values.mean(1) + d.min(1).values.mean(1)
    return out


@pytest.mark.parametrize("n,m", [(2048, 2048), (1000, 2048), (2048, 1000), (17, 33), (1000, 17), (300, 5000), (1000, 4096)])
def test_triton_matches_torch_and_float64(n, m):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(n * 7 + m)
    G, R = 5, 4
    gen = torch.rand(G, n, 3, generator=g) * 2 - 1
    ref = torch.rand(R, m, 3, generator=g) * 2 - 1 + 0.05
    want = _ref64(gen, ref) if n * m <= 4096 * 1024 else None
    tri = chamfer_matrix(gen, ref, device="cuda", backend="triton")
    tor = chamfer_matrix(gen, ref, device="cuda", backend="torch")
    assert tri.shape == (G, R) and tri.dtype == torch.float32
    assert torch.isfinite(tri).all()
    if want is not None:
        rel_tri = ((tri.double() - want).abs() / want).max().item()
        rel_tor = ((tor.double() - want).abs() / want).max().item()
        assert rel_tri <= 1e-5, f"triton vs float64: rel {rel_tri:.2e}"
        assert rel_tor <= 1e-3, f"torch vs float64: rel {rel_tor:.2e}"  # |a|^2+|b|^2-2ab cancellation
    rel = ((tri.double() - tor.double()).abs() / tor.double()).max().item()
    assert rel <= 1e-3, f"triton vs torch: rel {rel:.2e}"


def test_triton_identical_sets_zero_and_auto():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    x = torch.rand(3, 300, 3, generator=torch.Generator().manual_seed(1))
    d = chamfer_matrix(x, x, device="cuda")  # auto -> triton on CUDA
    assert torch.equal(d.diagonal(), torch.zeros(3))
    assert (d - d.t()).abs().max() <= 1e-6 * d.max()
