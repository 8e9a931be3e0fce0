"""Triton ×2 FIR upsampling vs the reference (zero insertion + depthwise convolutions): forward, backward,
double backward, odd sizes, non-contiguous inputs, the dispatch in get3d.nn.layers.upsample2d.

Runs on CUDA; without a GPU but with Triton installed it runs on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1`` must be set before Triton is imported)."""
import pytest
import torch
from triton_device import triton_test_device

from get3d.nn import layers as L

up_mod = pytest.importorskip("get3d.nn.ops.upsample_triton", reason="needs Triton")

DEVICE = triton_test_device()


def _ref(x, f):
    return L.upfirdn2d_ref(x, f, up=2, padding=(2, 1, 2, 1), gain=4)


def _fast(x, f):
    return up_mod.Upsample2x.apply(x, f.to(device=x.device, dtype=torch.float32).contiguous())


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (2, 2, 8, 3)])
@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 5, -1]])
def test_forward_and_gradients_match_reference(shape, taps):
    torch.manual_seed(0)
    f = L.setup_filter(taps).to(DEVICE)
    x = torch.randn(shape, device=DEVICE, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = _fast(x, f), _ref(x2, f)
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=1e-5)
    dy = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, dy, create_graph=True)
    (g2,) = torch.autograd.grad(y2, x2, dy, create_graph=True)
    torch.testing.assert_close(g, g2, atol=1e-5, rtol=1e-5)
    # double backward: d/dx of <grad, v> is zero for a linear map, d/d(dy) is the forward again
    v = torch.randn_like(g)
    dy1 = dy.clone().requires_grad_(True)
    (gg,) = torch.autograd.grad(torch.autograd.grad(_fast(x, f), x, dy1, create_graph=True)[0], dy1, v)
    dy2 = dy.clone().requires_grad_(True)
    (gg2,) = torch.autograd.grad(torch.autograd.grad(_ref(x2, f), x2, dy2, create_graph=True)[0], dy2, v)
    torch.testing.assert_close(gg, gg2, atol=1e-5, rtol=1e-5)


def test_adjoint_identity():
    """<up(x), y> == <x, up_adjoint(y)> (the backward is the exact transpose)."""
    torch.manual_seed(1)
    f = L.setup_filter([1, 3, 3, 1]).to(DEVICE)
    x = torch.randn(2, 3, 6, 5, device=DEVICE, dtype=torch.float64 if DEVICE == "cpu" else torch.float32)
    y = torch.randn(2, 3, 12, 10, device=DEVICE, dtype=x.dtype)
    lhs = (up_mod.Upsample2x.apply(x, f) * y).sum()
    rhs = (x * up_mod.Upsample2xAdjoint.apply(y, f)).sum()
    torch.testing.assert_close(lhs, rhs, atol=1e-4, rtol=1e-5)


def test_channels_last_and_reduced_precision_inputs():
    torch.manual_seed(2)
    f = L.setup_filter([1, 3, 3, 1]).to(DEVICE)
    x = torch.randn(2, 4, 6, 6, device=DEVICE).to(memory_format=torch.channels_last)
    torch.testing.assert_close(_fast(x, f), _ref(x, f), atol=1e-5, rtol=1e-5)
    if DEVICE == "cuda":
        xb = x.to(torch.bfloat16)
        yb = _fast(xb, f)
        assert yb.dtype == torch.bfloat16
        torch.testing.assert_close(yb.float(), _ref(xb.float(), f), atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(DEVICE != "cuda", reason="the dispatch takes the Triton path on CUDA tensors only")
def test_upsample2d_dispatches_to_triton(monkeypatch, set_perf):
    calls = []
    real = up_mod.upsample2x
    monkeypatch.setattr(up_mod, "upsample2x", lambda x, f: calls.append(1) or real(x, f))
    f = L.setup_filter([1, 3, 3, 1]).to(DEVICE)
    x = torch.randn(1, 2, 4, 4, device=DEVICE)
    y = L.upsample2d(x, f)
    assert calls and y.shape == (1, 2, 8, 8)
    set_perf(upsample="reference")
    torch.testing.assert_close(L.upsample2d(x, f), y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("up", [1, 2])
def test_synthesis_layer_without_autograd_matches_autograd(up, monkeypatch):
    """The inference path of a synthesis layer (Triton upsampling + fused epilogue) == its autograd path."""
    if DEVICE == "cpu":
        monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    torch.manual_seed(4)
    layer = L.SynthesisLayer(6, 5, 8, resolution=8 if up == 2 else 4, up=up, conv_clamp=256, device=DEVICE)
    x, w = torch.randn(2, 6, 4, 4, device=DEVICE), torch.randn(2, 8, device=DEVICE)
    ref = layer(x, w, noise_mode="const", fused_modconv=False)
    with torch.no_grad():
        fast = layer(x, w, noise_mode="const", fused_modconv=False)
    torch.testing.assert_close(fast, ref.detach(), atol=1e-5, rtol=1e-5)
