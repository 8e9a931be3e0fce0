"""Triton tri-plane sampler == grid_sample (bilinear, border, align_corners=False): values and plane gradients.

Runs on CUDA; without a GPU but with Triton installed, on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1`` set before Triton is imported).
"""
import pytest
import torch
from triton_device import triton_test_device

from get3d.nn import triplane

tri = pytest.importorskip("get3d.nn.ops.triplane_triton", reason="needs Triton")

DEVICE = triton_test_device()


@pytest.mark.parametrize("b,n,c,r", [(2, 70, 4, 5), (1, 130, 32, 16), (3, 1, 6, 8)])
def test_triton_sampler_equals_grid_sample(set_perf, b, n, c, r):
    torch.manual_seed(0)
    planes = torch.randn(b, 3, c, r, r, device=DEVICE, requires_grad=True)
    pts = torch.rand(b, n, 3, device=DEVICE) * 1.4 - 0.7   # box ±0.5: some points outside (border)
    pts[0, 0] = torch.tensor([0.5, -0.5, 0.25])             # exactly on faces
    w = torch.randn(b, n, c, device=DEVICE)
    out = {}
    for mode in ("grid_sample", "triton"):
        set_perf(triplane_sampler=mode)
        planes.grad = None
        if mode == "triton" and DEVICE == "cpu":
            f = tri.sample_triplane(planes, pts / 0.5)
        else:
            f = triplane.sample_triplane(planes, pts, 1.0)
        (f * w).sum().backward()
        out[mode] = (f.detach(), planes.grad.clone())
    assert out["triton"][0].shape == (b, n, c)
    for a, t in zip(out["grid_sample"], out["triton"]):
        torch.testing.assert_close(t, a, atol=1e-5, rtol=1e-5)


def test_triton_sampler_skips_zero_gradient_points_exactly(set_perf):
    """Points with an all-zero upstream gradient (the padded renderer's unused slots, all at one position) add
    nothing; the plane gradient still equals grid_sample's, and a NaN gradient still reaches the planes."""
    torch.manual_seed(1)
    planes = torch.randn(2, 3, 8, 6, 6, device=DEVICE, requires_grad=True)
    pts = torch.rand(2, 200, 3, device=DEVICE) - 0.5
    pts[:, 120:] = 0.0                                       # unused slots: one shared position
    w = torch.randn(2, 200, 8, device=DEVICE)
    w[:, 120:] = 0.0
    w[1, 5, 3] = 0.0                                         # a live point with one zero channel
    grads = {}
    for mode in ("grid_sample", "triton"):
        set_perf(triplane_sampler=mode)
        planes.grad = None
        f = tri.sample_triplane(planes, pts / 0.5) if mode == "triton" else triplane.sample_triplane(planes, pts, 1.0)
        (f * w).sum().backward()
        grads[mode] = planes.grad.clone()
    torch.testing.assert_close(grads["triton"], grads["grid_sample"], atol=1e-5, rtol=1e-5)
    planes.grad = None
    w[0, 7] = float("nan")
    (tri.sample_triplane(planes, pts / 0.5) * w).sum().backward()
    assert torch.isnan(planes.grad[0]).any() and torch.isfinite(planes.grad[1]).all()


def test_triton_sampler_empty_query():
    planes = torch.randn(2, 3, 4, 8, 8, device=DEVICE, requires_grad=True)
    f = tri.sample_triplane(planes, torch.zeros(2, 0, 3, device=DEVICE))
    assert f.shape == (2, 0, 4)
    f.sum().backward()
    assert planes.grad is not None and float(planes.grad.abs().sum()) == 0.0
