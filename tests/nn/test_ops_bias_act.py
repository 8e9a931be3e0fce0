"""Fused bias_act (Triton) vs the reference: forward, both gradients, double backward, every layout used.

Runs on CUDA; without a GPU but with Triton installed it runs on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1`` must be set before Triton is imported, e.g. ``TRITON_INTERPRET=1 pytest this_file``).
"""
import pytest
import torch
from triton_device import triton_test_device

from get3d.nn import layers as L

triton_mod = pytest.importorskip("get3d.nn.ops.bias_act_triton", reason="needs Triton")

DEVICE = triton_test_device()

CASES = [  # shape, dim, layout, act, gain, clamp
    ((2, 5, 6, 7), 1, "nchw", "lrelu", None, 256.0),
    ((2, 5, 6, 7), 1, "nhwc", "lrelu", 2.0, 0.5),
    ((3, 11, 4), 2, "nchw", "lrelu", None, None),
    ((3, 11, 4), 2, "nchw", "linear", None, None),
    ((2, 5, 6, 7), 1, "nchw", "linear", None, 0.3),
    ((4, 6), 1, "nchw", "relu", None, None),
    # bias gradient fused into the backward kernel (bias_act_triton._db_plan): channel innermost, C | BLOCK
    ((3, 8, 19, 23), 1, "nhwc", "lrelu", None, 256.0),
    ((5, 300, 32), 2, "nchw", "relu", None, None),
    # ... and one channel per program (H·W a multiple of the block), several blocks per program
    ((2, 3, 32, 64), 1, "nchw", "lrelu", None, 256.0),  # (a low clamp flips fp16 elements at the boundary)
    ((1, 2, 64, 128), 1, "nchw", "lrelu", 2.0, None),
    # channel index by a mask (channel innermost, C a power of two) vs the modulo (C = 11 below)
    ((2, 11, 4, 5), 1, "nhwc", "lrelu", None, 256.0),
]


def _inputs(shape, layout, dtype):
    torch.manual_seed(0)
    x = torch.randn(shape, device=DEVICE, dtype=torch.float32)
    if layout == "nhwc":
        x = x.to(memory_format=torch.channels_last)
    x = x.to(dtype).requires_grad_(True)
    return x


@pytest.mark.parametrize("shape,dim,layout,act,gain,clamp", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fused_matches_reference(shape, dim, layout, act, gain, clamp, dtype):
    if dtype == torch.float16 and DEVICE == "cpu":
        pytest.skip("fp16 reference ops on the CPU are not the point of this test")
    x = _inputs(shape, layout, dtype)
    b = torch.randn(shape[dim], device=DEVICE, requires_grad=True)
    dy = torch.randn(shape, device=DEVICE).to(dtype)
    res = {}
    for name, fn in (("ref", L.bias_act_ref), ("fused", None)):
        x.grad, b.grad = None, None
        if fn is None:
            g = L.ACTIVATIONS[act][1] if gain is None else gain
            y = triton_mod.bias_act(x, b, dim, act, g, clamp)
        else:
            y = fn(x, b, dim=dim, act=act, gain=gain, clamp=clamp)
        y.backward(dy)
        res[name] = (y.detach().float(), x.grad.float(), b.grad.float(), y.stride())
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 1e-2}
    for a, f in zip(res["ref"][:3], res["fused"][:3]):
        torch.testing.assert_close(f, a, **tol)
    assert res["fused"][3] == x.stride()  # the output keeps the input's layout


@pytest.mark.parametrize("shape,dim,layout,mode", [((3, 8, 19, 23), 1, "nhwc", 1), ((2, 3, 32, 64), 1, "nchw", 2),
                                                   ((2, 5, 6, 7), 1, "nchw", 0), ((5, 300, 32), 2, "nchw", 1)])
def test_bias_gradient_plan(shape, dim, layout, mode):
    """The cases above do reach the fused bias-gradient modes they are meant to test."""
    y = torch.empty(shape)
    if layout == "nhwc":
        y = y.to(memory_format=torch.channels_last)
    assert triton_mod._db_plan(y, dim)[0] == mode


def test_double_backward_matches_reference():
    """R1-style: gradient penalty through bias_act, then its gradient w.r.t. the bias and an upstream weight."""
    torch.manual_seed(1)
    x0 = torch.randn(2, 4, 5, 5, device=DEVICE, dtype=torch.float64)
    w = torch.randn(4, 4, 3, 3, device=DEVICE, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, device=DEVICE, dtype=torch.float64, requires_grad=True)
    grads = {}
    for name in ("ref", "fused"):
        x = x0.clone().requires_grad_(True)
        h = torch.nn.functional.conv2d(x, w, padding=1)
        if name == "ref":
            y = L.bias_act_ref(h, b, act="lrelu", clamp=1.5)
        else:
            # float64 is not a Triton dtype here: check the double-backward path itself through the Function
            y = triton_mod.BiasActFunction.apply(h.float(), b.float(), 1, "lrelu", 2 ** 0.5, 1.5).double()
        out = torch.nn.functional.conv2d(y, w, padding=1).square().sum()
        (gx,) = torch.autograd.grad(out, [x], create_graph=True)
        pen = gx.square().sum()
        gw, gb = torch.autograd.grad(pen, [w, b])
        grads[name] = (gx.detach(), gw, gb)
    for a, f in zip(grads["ref"], grads["fused"]):
        torch.testing.assert_close(f, a, atol=1e-3, rtol=1e-4)


def test_dispatch_uses_reference_for_small_or_unsupported_inputs(monkeypatch):
    calls = []
    monkeypatch.setattr(triton_mod, "bias_act", lambda *a: calls.append(a) or a[0])
    small = torch.randn(4, 8, device=DEVICE)
    L.bias_act_fused(small, None, act="lrelu")
    big = torch.randn(L.FUSED_BIAS_ACT_MIN_NUMEL, 2, device=DEVICE)[:, 0]  # strided view: not dense
    L.bias_act_fused(big, None, act="lrelu", dim=0)
    L.bias_act_fused(torch.randn(L.FUSED_BIAS_ACT_MIN_NUMEL, device=DEVICE), None, act="sigmoid", dim=0)
    assert calls == []  # small, strided, unsupported activation (and any CPU tensor): the reference
    if DEVICE == "cuda":
        L.bias_act_fused(torch.randn(L.FUSED_BIAS_ACT_MIN_NUMEL, device=DEVICE), None, act="lrelu", dim=0)
        assert len(calls) == 1


@pytest.mark.parametrize("noise_mode", ["random", "const", "none"])
@pytest.mark.parametrize("up", [1, 2])
def test_inference_epilogue_matches_the_autograd_layer(noise_mode, up, monkeypatch):
    """SynthesisLayer without autograd (one fused epilogue kernel) == the same layer's differentiable path."""
    if DEVICE == "cpu":  # the layer takes the fused path for CUDA tensors only; call it directly here
        monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    torch.manual_seed(3)
    layer = L.SynthesisLayer(6, 5, 8, resolution=8 if up == 2 else 4, up=up, conv_clamp=0.7, device=DEVICE)
    with torch.no_grad():
        layer.noise_strength.fill_(0.3)
        layer.bias.normal_()
    x = torch.randn(3, 6, 4, 4, device=DEVICE)
    w = torch.randn(3, 8, device=DEVICE)
    torch.manual_seed(7)
    ref = layer(x, w, noise_mode=noise_mode, fused_modconv=False)  # grad enabled: reference path
    torch.manual_seed(7)
    with torch.no_grad():
        fast = layer._inference_forward(x, layer.affine(w), noise_mode, 1.0)
    assert fast is not None
    torch.testing.assert_close(fast, ref.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("c,s,want", [(32, 1, True), (8, 1, True), (11, 1, False), (4, 128, False)])
def test_channel_mask_only_for_channel_innermost_powers_of_two(c, s, want):
    assert triton_mod.mask_index(c, s) is want
