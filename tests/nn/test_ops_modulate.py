"""Modulation kernels (Triton) vs PyTorch ops: the forward and every gradient, both layouts, noise and no noise.

Runs on CUDA; without a GPU but with Triton installed it runs on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1`` must be set before Triton is imported).
"""
import pytest
import torch
from triton_device import triton_test_device

from get3d.nn import layers as L

mod = pytest.importorskip("get3d.nn.ops.modulate_triton", reason="needs Triton")

DEVICE = triton_test_device()

NCHW_CASES = [  # shape, noise ("batched" | "const" | None), bias, act, gain, clamp
    ((2, 3, 5, 7), None, False, "linear", 1.0, None),             # input modulation: x·styles
    ((2, 3, 5, 7), "batched", True, "lrelu", 2 ** 0.5, 256.0),    # synthesis epilogue
    ((3, 2, 40, 40), "const", True, "lrelu", 0.7, 0.5),           # several blocks per row, a low clamp
    ((1, 4, 6, 6), "batched", True, "relu", 1.0, None),           # batch of one: the noise is shared
    ((2, 2, 3, 3), None, True, "linear", 1.0, 0.4),
]
BNC_CASES = [  # shape, bias, act, gain, clamp
    ((2, 37, 5), False, "linear", 1.0, None),
    ((3, 300, 32), True, "lrelu", 2 ** 0.5, None),
    ((2, 70, 48), True, "relu", 1.0, 0.3),
]


def _reference(x, s, noise, strength, bias, dim, act, gain, clamp):
    view = [s.shape[0], s.shape[1], 1, 1] if dim == 1 else [s.shape[0], 1, s.shape[1]]
    v = x * s.reshape(view).to(x.dtype)
    if noise is not None:
        v = v + noise.to(x.dtype) * strength.to(x.dtype)
    return L.bias_act_ref(v, bias, dim=dim, act=act, gain=gain, clamp=clamp)


def _grads(fn, x, s, noise, strength, bias, dy, dim, act, gain, clamp):
    leaves = [t for t in (x, s, strength, bias) if t is not None]
    for t in leaves:
        t.grad = None
    y = fn(x, s, noise, strength, bias, dim, act, gain, clamp)
    y.backward(dy)
    return [y.detach()] + [t.grad.clone() for t in leaves]


def _check(x, s, noise, strength, bias, dim, act, gain, clamp, atol=1e-5):
    torch.manual_seed(1)
    dy = torch.randn_like(x)
    ref = _grads(_reference, x, s, noise, strength, bias, dy, dim, act, gain, clamp)
    got = _grads(lambda *a: mod.modulate(*a[:5], dim=a[5], act=a[6], gain=a[7], clamp=a[8]),
                 x, s, noise, strength, bias, dy, dim, act, gain, clamp)
    for name, r, g in zip(["y", "dx", "ds", "dstrength/dbias", "dbias"], ref, got):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        torch.testing.assert_close(g, r, atol=atol, rtol=1e-4, msg=name)


@pytest.mark.parametrize("shape,noise,bias,act,gain,clamp", NCHW_CASES)
def test_nchw_matches_pytorch(shape, noise, bias, act, gain, clamp):
    torch.manual_seed(0)
    b, c, h, w = shape
    x = torch.randn(shape, device=DEVICE, requires_grad=True)
    s = (torch.rand(b, c, device=DEVICE) + 0.5).requires_grad_(True)
    nz = {"batched": torch.randn(b, 1, h, w, device=DEVICE), "const": torch.randn(h, w, device=DEVICE),
          None: None}[noise]
    strength = torch.tensor(0.3, device=DEVICE, requires_grad=True) if noise else None
    bb = torch.randn(c, device=DEVICE, requires_grad=True) if bias else None
    _check(x, s, nz, strength, bb, 1, act, gain, clamp)


@pytest.mark.parametrize("shape,bias,act,gain,clamp", BNC_CASES)
def test_points_layout_matches_pytorch(shape, bias, act, gain, clamp):
    torch.manual_seed(0)
    b, _, c = shape
    x = torch.randn(shape, device=DEVICE, requires_grad=True)
    s = (torch.rand(b, c, device=DEVICE) + 0.5).requires_grad_(True)
    bb = torch.randn(c, device=DEVICE, requires_grad=True) if bias else None
    _check(x, s, None, None, bb, 2, act, gain, clamp)


def test_double_backward_matches_pytorch():
    """Under create_graph the gradients are themselves differentiable (as for bias_act), with the same
    second-order gradients as PyTorch's ops."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5, device=DEVICE, requires_grad=True)
    s = (torch.rand(2, 3, device=DEVICE) + 0.5).requires_grad_(True)
    bb = torch.randn(3, device=DEVICE, requires_grad=True)
    dy = torch.randn(2, 3, 5, 5, device=DEVICE, requires_grad=True)
    proj = [torch.randn_like(t) for t in (x, s, bb)]
    results = []
    for fn in (_reference, lambda *a: mod.modulate(*a[:5], dim=a[5], act=a[6], gain=a[7], clamp=a[8])):
        y = fn(x, s, None, None, bb, 1, "lrelu", 1.4, 256.0)
        grads = torch.autograd.grad(y, (x, s, bb), dy, create_graph=True)
        total = sum((g * p).sum() for g, p in zip(grads, proj))
        results.append([g.detach() for g in grads] + list(torch.autograd.grad(total, (x, s, dy))))
    for r, g in zip(*results):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_half_precision_on_cuda():
    """Half-precision activations, float32 sums: closer to a float32 evaluation than PyTorch's half ops are."""
    if DEVICE != "cuda":
        pytest.skip("half-precision kernels are checked on CUDA")
    torch.manual_seed(0)
    x = torch.randn(2, 8, 33, 33, device=DEVICE).half().requires_grad_(True)
    s = (torch.rand(2, 8, device=DEVICE) + 0.5).requires_grad_(True)
    bb = torch.randn(8, device=DEVICE, requires_grad=True)
    dy = torch.randn(2, 8, 33, 33, device=DEVICE).half()
    x32 = x.detach().float().requires_grad_(True)
    truth = _grads(_reference, x32, s, None, None, bb, dy.float(), 1, "lrelu", 2 ** 0.5, 256.0)
    got = _grads(lambda *a: mod.modulate(*a[:5], dim=a[5], act=a[6], gain=a[7], clamp=a[8]),
                 x, s, None, None, bb, dy, 1, "lrelu", 2 ** 0.5, 256.0)
    assert got[0].dtype == torch.float16 and got[1].dtype == torch.float16
    for name, r, g in zip(["y", "dx", "ds", "dbias"], truth, got):
        torch.testing.assert_close(g.float(), r, atol=1e-2, rtol=1e-2, msg=name)


def test_supports_names_the_layouts_it_takes():
    x = torch.zeros(2, 3, 4, 4)
    assert not mod.supports(x, 1)  # not CUDA
    if DEVICE == "cuda":
        assert mod.supports(x.cuda(), 1) and not mod.supports(x.cuda(), 2)
        assert not mod.supports(x.cuda().to(memory_format=torch.channels_last), 1)
        assert mod.supports(torch.zeros(2, 5, 32, device="cuda"), 2)
    with pytest.raises(ValueError, match="noise needs the NCHW layout"):
        mod.modulate(torch.zeros(2, 5, 3), torch.ones(2, 3), noise=torch.zeros(5), dim=2)
    with pytest.raises(ValueError, match="a noise strength needs the noise"):
        mod.modulate(torch.zeros(2, 3, 4, 4), torch.ones(2, 3), strength=torch.ones([]))


# --------------------------------------------------------------------------- the layers that use the kernels

@pytest.fixture
def kernels_here(monkeypatch, set_perf):
    """``perf.modulation_kernels=triton``, with the dispatch taking this device's tensors of any size."""
    set_perf(modulation_kernels="triton")
    monkeypatch.setattr(L, "FUSED_BIAS_ACT_MIN_NUMEL", 0)
    if DEVICE == "cpu":
        monkeypatch.setattr(mod, "supports", lambda x, dim: x.is_contiguous() and (x.ndim, dim) in ((4, 1), (3, 2)))
    calls = []
    real = mod.ModulateFunction.apply
    monkeypatch.setattr(mod.ModulateFunction, "apply", lambda *a: calls.append(a[5]) or real(*a))
    return calls


def _layer_run(layer, make_inputs, set_perf, choice):
    set_perf(modulation_kernels=choice)
    torch.manual_seed(5)
    x, w = make_inputs()
    layer.zero_grad()
    kwargs = {"fused_modconv": False} if isinstance(layer, (L.SynthesisLayer, L.ToRGBLayer)) else {}
    y = layer(x, w, **kwargs)
    y.backward(torch.ones_like(y) * 0.1 + y.detach() * 0.01)
    return [y.detach(), x.grad, w.grad] + [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("make_layer,shape", [
    (lambda: L.SynthesisLayer(6, 5, 8, resolution=8, up=2, conv_clamp=256.0), (2, 6, 4, 4)),
    (lambda: L.SynthesisLayer(6, 5, 8, resolution=4, conv_clamp=0.2), (3, 6, 4, 4)),
    (lambda: L.ToRGBLayer(6, 4, 8), (2, 6, 4, 4)),
    (lambda: L.ModulatedFullyConnected(6, 7, 8), (2, 33, 6)),
    (lambda: L.ModulatedFullyConnected(6, 3, 8, activation="linear", demodulate=False), (2, 33, 6)),
])
def test_layers_compute_the_same_with_the_kernels(kernels_here, set_perf, make_layer, shape):
    torch.manual_seed(0)
    layer = make_layer().to(DEVICE)
    if isinstance(layer, L.SynthesisLayer):
        with torch.no_grad():
            layer.noise_strength.fill_(0.5)

    def make_inputs():
        return (torch.randn(shape, device=DEVICE, requires_grad=True),
                torch.randn(shape[0], 8, device=DEVICE, requires_grad=True))

    ref = _layer_run(layer, make_inputs, set_perf, "torch")
    assert not kernels_here
    got = _layer_run(layer, make_inputs, set_perf, "triton")
    assert kernels_here, "the kernels did not run"
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_small_conv_output_falls_back_to_pytorch_ops(kernels_here, set_perf, monkeypatch):
    """An input the kernels take whose conv output is below the launch threshold: the epilogue runs as PyTorch ops
    (same function), the input scaling still as the kernel."""
    torch.manual_seed(0)
    layer = L.SynthesisLayer(8, 2, 8, resolution=4, conv_clamp=256.0).to(DEVICE)
    with torch.no_grad():
        layer.noise_strength.fill_(0.5)
    monkeypatch.setattr(L, "FUSED_BIAS_ACT_MIN_NUMEL", 2 * 8 * 16)  # x: 2·8·4·4 elements; the output: 2·2·4·4

    def make_inputs():
        return (torch.randn(2, 8, 4, 4, device=DEVICE, requires_grad=True),
                torch.randn(2, 8, device=DEVICE, requires_grad=True))

    ref = _layer_run(layer, make_inputs, set_perf, "torch")
    got = _layer_run(layer, make_inputs, set_perf, "triton")
    assert kernels_here == [1], "only the input scaling ran as the kernel"
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)
