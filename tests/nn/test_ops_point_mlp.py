"""Fused point-decoder kernel (inference) vs the decoders' layer-by-layer path: ModulatedMLP shapes of both
generators' tri-plane heads, the texture decoder (three layers, the last without demodulation), widths that are
not powers of two, point counts that are not multiples of the block.

Runs on CUDA; without a GPU but with Triton installed it runs on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1`` must be set before Triton is imported)."""
import pytest
import torch
from triton_device import triton_test_device

from get3d.nn import decoders

mod = pytest.importorskip("get3d.nn.ops.point_mlp_triton", reason="needs Triton")

DEVICE = triton_test_device()


@pytest.fixture
def as_cuda(monkeypatch):
    """On the CPU interpreter, let the dispatch (which takes CUDA tensors only) pick the kernel."""
    if DEVICE == "cpu":
        monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))


def _randomise(net):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return net


@pytest.mark.parametrize("prec", ["tf32x3", "ieee"])
@pytest.mark.parametrize("in_f, hidden, out_f, n", [(32, 32, 1, 70), (32, 32, 3, 64), (8, 16, 8, 5), (48, 24, 3, 130)])
def test_modulated_mlp_matches_layers(as_cuda, set_perf, in_f, hidden, out_f, n, prec):
    """Both dot precisions stay at float32 error (tf32x3: three TF32 tensor-core products of split operands)."""
    set_perf(point_mlp_precision=prec)
    torch.manual_seed(0)
    net = _randomise(decoders.ModulatedMLP(in_f, hidden, out_f, w_dim=16, device=DEVICE))
    x, w = torch.randn(3, n, in_f, device=DEVICE), torch.randn(3, 16, device=DEVICE)
    ref = net(x, w)  # autograd enabled: the layer-by-layer path
    with torch.no_grad():
        assert decoders.fused_chain([*net.hidden, net.out], x, w) is not None
        fast = net(x, w)
    torch.testing.assert_close(fast, ref.detach(), atol=2e-5, rtol=2e-5)


def test_texture_decoder_matches_layers(as_cuda, monkeypatch):
    """The texture decoder's three layers run as one kernel call without autograd (no silent fallback)."""
    torch.manual_seed(0)
    net = _randomise(decoders.TextureDecoder(32, 32, 16, w_dim=16, device=DEVICE))
    x, w = torch.randn(2, 100, 32, device=DEVICE), torch.randn(2, 16, device=DEVICE)
    calls = []
    kernel = mod.modulated_chain
    monkeypatch.setattr(mod, "modulated_chain", lambda *a, **kw: calls.append(len(a[1])) or kernel(*a, **kw))
    ref = net(x, w)
    assert calls == []                      # autograd on: the layer-by-layer path
    with torch.no_grad():
        fast = net(x, w)
    assert calls == [3]                     # one fused call over mlp.hidden, mlp.out and to_rgb
    torch.testing.assert_close(fast, ref.detach(), atol=2e-5, rtol=2e-5)


def test_unsupported_shapes_fall_back(as_cuda):
    torch.manual_seed(0)
    wide = decoders.ModulatedMLP(32, 128, 1, w_dim=16, device=DEVICE)  # wider than the kernel takes
    x, w = torch.randn(2, 10, 32, device=DEVICE), torch.randn(2, 16, device=DEVICE)
    with torch.no_grad():
        assert decoders.fused_chain([*wide.hidden, wide.out], x, w) is None
        torch.testing.assert_close(wide(x, w), wide.out(wide.hidden[0](x, w), w))
