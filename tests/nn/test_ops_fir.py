"""FIR filtering (Triton) vs the reference ``upfirdn2d``: forward, gradient and second-order gradient.

Runs on CUDA; without a GPU but with Triton installed it runs on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1`` must be set before Triton is imported).
"""
import pytest
import torch
from triton_device import triton_test_device

from get3d.nn import layers as L

mod = pytest.importorskip("get3d.nn.ops.fir_triton", reason="needs Triton")

DEVICE = triton_test_device()
BLUR = [1.0, 3.0, 3.0, 1.0]

CASES = [  # shape, up, down, padding (x0, x1, y0, y1), flip, gain, filter, channels_last
    ((2, 5, 9, 8), 1, 1, (2, 2, 2, 2), False, 1.0, BLUR, True),     # blur before a 3x3 stride-2 conv
    ((2, 5, 8, 8), 1, 2, (1, 1, 1, 1), False, 1.0, BLUR, True),     # skip path: downsample2d
    ((1, 3, 5, 6), 2, 1, (2, 1, 2, 1), False, 4.0, BLUR, False),    # upsample2d
    ((2, 4, 7, 5), 1, 2, (0, 3, 1, -1), True, 2.0, [1.0, 2.0, 5.0], False),  # odd taps, crop, flip
    ((1, 70, 6, 6), 2, 2, (1, 2, 2, 1), False, 1.0, [0.5, 1.0, 0.25, 2.0], True),  # C > one channel tile
    ((1, 66, 11, 37), 1, 1, (2, 1, 3, 2), False, 1.0, [0.5, 1.0, 0.25, 2.0], True),  # rows × pixels × channels tiles
    ((2, 3, 13, 70), 1, 2, (1, 2, 0, 3), True, 1.0, [1.0, 2.0, 5.0], False),  # more than one row of pixel tiles
]


def _inputs(shape, channels_last, dtype=torch.float32):
    torch.manual_seed(0)
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(True)


@pytest.mark.parametrize("shape,up,down,pad,flip,gain,taps,cl", CASES)
def test_matches_reference_with_gradients(shape, up, down, pad, flip, gain, taps, cl):
    f = torch.tensor(taps, device=DEVICE) / sum(taps)
    x = _inputs(shape, cl)
    results = []
    for fn in (L.upfirdn2d_ref, lambda x, f, **k: mod.upfirdn2d(x, f, k["up"], k["down"], k["padding"],
                                                                 k["flip_filter"], k["gain"])):
        y = fn(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
        dy = torch.randn(y.shape, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(1))
        (dx,) = torch.autograd.grad(y, x, dy)
        results.append((y.detach(), dx, y.is_contiguous(memory_format=torch.channels_last)))
    (ry, rdx, _), (gy, gdx, gcl) = results
    assert gy.shape == ry.shape
    torch.testing.assert_close(gy, ry, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gdx, rdx, atol=1e-5, rtol=1e-5)
    if cl and shape[1] > 1:
        assert gcl, "the output keeps the channels-last layout"


def test_second_order_gradient_matches_reference():
    """R1 differentiates the discriminator twice: the backward is itself differentiable."""
    f = torch.tensor(BLUR, device=DEVICE) / 8
    x = _inputs((2, 3, 8, 8), True)
    dy = torch.randn(2, 3, 4, 4, device=DEVICE, requires_grad=True)
    results = []
    for fn in (L.upfirdn2d_ref, lambda x, f, **k: mod.upfirdn2d(x, f, 1, 2, (1, 1, 1, 1))):
        y = fn(x, f, down=2, padding=1)
        (dx,) = torch.autograd.grad(y, x, dy, create_graph=True)
        (g2,) = torch.autograd.grad((dx * torch.linspace(0, 1, dx.numel(), device=DEVICE).view_as(dx)).sum(), dy)
        results.append(g2)
    torch.testing.assert_close(results[1], results[0], atol=1e-5, rtol=1e-5)


def test_half_precision_on_cuda():
    if DEVICE != "cuda":
        pytest.skip("half precision is checked on CUDA")
    f = torch.tensor(BLUR, device=DEVICE) / 8
    x = _inputs((4, 32, 64, 64), True, torch.float16)
    ref = L.upfirdn2d_ref(x.float(), f, padding=2)
    got = mod.upfirdn2d(x, f, 1, 1, (2, 2, 2, 2))
    assert got.dtype == torch.float16 and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), ref, atol=2e-3, rtol=2e-3)


def test_too_small_input_is_named():
    f = torch.tensor(BLUR, device=DEVICE) / 8
    with pytest.raises(ValueError, match="leaves no output"):
        mod.FirFunction.apply(torch.zeros(1, 1, 1, 1, device=DEVICE), f, 1, 2, (0, 0, 0, 0), False, 1.0)


@pytest.mark.parametrize("down,kernel_size", [(2, 3), (2, 1)])
def test_discriminator_layer_is_the_same_function(monkeypatch, set_perf, down, kernel_size):
    """A downsampling conv layer, unfolded, with the Triton FIR against the reference FIR."""
    if DEVICE == "cpu":
        monkeypatch.setattr(mod, "supports", lambda x, f, up, down: x.ndim == 4 and f.ndim == 1)
    torch.manual_seed(0)
    layer = L.Conv2dLayer(6, 5, kernel_size, activation="lrelu", down=down, channels_last=True).to(DEVICE)
    x = torch.randn(2, 6, 8, 8, device=DEVICE).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    calls = []
    real = mod.FirFunction.apply
    monkeypatch.setattr(mod.FirFunction, "apply", lambda *a: calls.append(a[2:4]) or real(*a))
    out = []
    for fir in ("reference", "triton"):
        set_perf(fold_downsample_conv="never", fir_filter=fir)
        layer.zero_grad()
        x.grad = None
        y = layer(x)
        y.square().sum().backward()
        out.append([y.detach(), x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    assert calls, "the Triton FIR did not run"
    for r, g in zip(*out):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cl,act,clamp,channels", [(True, "lrelu", 0.7, 66), (False, "lrelu", 0.7, 5),
                                                    (True, "lrelu", None, 5), (False, "linear", None, 5)])
def test_bias_act_blur_matches_the_composition(cl, act, clamp, channels):
    """The activation inside the blur's pass each way: the same values and gradients (to h and the bias) as
    bias_act followed by the blur, and the same second-order gradient (R1's double backward)."""
    f = torch.tensor(BLUR, device=DEVICE) / 8
    h = _inputs((2, channels, 6, 35), cl)
    b = torch.randn(channels, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(2)).requires_grad_(True)
    pad, gain = (2, 1, 2, 2), 2 ** 0.5
    dy = None
    results = []
    for fn in (lambda: L.upfirdn2d_ref(L.bias_act_ref(h, b, act=act, gain=gain, clamp=clamp), f, padding=pad),
               lambda: mod.bias_act_blur(h, b, f, pad, act, gain, clamp)):
        y = fn()
        if dy is None:
            dy = torch.randn(y.shape, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(1))
            dy.requires_grad_(True)
        dh, db = torch.autograd.grad(y, [h, b], dy.detach(), retain_graph=True)
        (dh2,) = torch.autograd.grad(y, [h], dy, create_graph=True)
        (g2,) = torch.autograd.grad((dh2 * torch.linspace(0, 1, dh2.numel(), device=DEVICE).view_as(dh2)).sum(), dy)
        results.append((y.detach(), dh, db, g2, y.is_contiguous(memory_format=torch.channels_last)))
    (ry, rdh, rdb, rg2, _), (gy, gdh, gdb, gg2, gcl) = results
    for got, ref in ((gy, ry), (gdh, rdh), (gdb, rdb), (gg2, rg2)):
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert gcl == cl


def test_bias_act_blur_half_precision_on_cuda():
    if DEVICE != "cuda":
        pytest.skip("half precision is checked on CUDA")
    f = torch.tensor(BLUR, device=DEVICE) / 8
    h = _inputs((4, 32, 64, 64), True, torch.float16)
    b = torch.randn(32, device=DEVICE, requires_grad=True)
    ref = L.upfirdn2d_ref(L.bias_act_ref(h.float(), b, act="lrelu", gain=2 ** 0.5, clamp=256.0), f, padding=2)
    got = mod.bias_act_blur(h, b, f, (2, 2, 2, 2), "lrelu", 2 ** 0.5, 256.0)
    assert got.dtype == torch.float16 and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), ref, atol=5e-3, rtol=5e-3)
    dy = torch.randn_like(ref)
    rdh, rdb = torch.autograd.grad(ref, [h, b], dy)
    gdh, gdb = torch.autograd.grad(got, [h, b], dy.half())
    torch.testing.assert_close(gdh.float(), rdh.float(), atol=5e-3, rtol=5e-3)
    torch.testing.assert_close(gdb, rdb, atol=5e-2, rtol=5e-3)


def test_discriminator_block_with_the_fused_blur_epilogue(monkeypatch, set_perf):
    """``perf.fused_blur_epilogue``: a discriminator block computes the same logits' inputs, gradients and R1-style
    second-order gradients with conv0's bias/activation inside conv1's blur."""
    from get3d.nn.discriminator import DiscriminatorBlock
    if DEVICE == "cpu":
        monkeypatch.setattr(mod, "supports", lambda x, f, up, down: x.ndim == 4 and f.ndim == 1)
    calls = []
    real = mod.BiasActBlurFunction.apply
    monkeypatch.setattr(mod.BiasActBlurFunction, "apply", lambda *a: calls.append(a[3]) or real(*a))
    torch.manual_seed(0)
    blk = DiscriminatorBlock(6, 6, 9, 16, 3, use_fp16=False, conv_clamp=0.5, channels_last=True).to(DEVICE)
    x0 = torch.randn(2, 6, 16, 16, device=DEVICE)
    img0 = torch.randn(2, 3, 16, 16, device=DEVICE)
    out = []
    for fused in (False, True):
        set_perf(fold_downsample_conv="never", fir_filter="triton", fused_blur_epilogue=fused)
        blk.zero_grad()
        x, img = x0.clone().requires_grad_(True), img0.clone().requires_grad_(True)
        y, _ = blk(x, img, torch.float32)
        (dimg,) = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel(), device=DEVICE).view_as(y)).sum(), img,
                                      create_graph=True)
        (dimg.square().sum() + y.sum()).backward()
        out.append((y.detach(), x.grad, blk.conv0.weight.grad.clone(), blk.conv0.bias.grad.clone(),
                    blk.conv1.weight.grad.clone()))
    assert calls == [(2, 2, 2, 2)]  # the fused pass ran once, with conv1's blur padding
    for got, ref in zip(out[1], out[0]):
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
