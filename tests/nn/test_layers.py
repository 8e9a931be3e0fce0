import math

import pytest
import torch

from get3d.nn import layers as L
from get3d.schema import ConfigError


def test_upfirdn2d_matches_dense_filter():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    f1 = L.setup_filter([1, 3, 3, 1])
    f2 = torch.outer(f1, f1)
    a = L.upfirdn2d_ref(x, f1, up=2, padding=(2, 1, 2, 1), gain=4)
    b = L.upfirdn2d_ref(x, f2, up=2, padding=(2, 1, 2, 1), gain=4)
    assert a.shape == (2, 3, 16, 16)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_resampling_preserves_constants_and_shapes():
    f = L.setup_filter([1, 3, 3, 1])
    x = torch.full((1, 2, 8, 8), 3.0)
    up = L.upsample2d(x, f)
    down = L.downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))


def test_kernel_seam_dispatch():
    calls = []

    def fake(x, f, **kw):
        calls.append(kw["up"])
        return L.upfirdn2d_ref(x, f, **kw)
    L.register_kernel("upfirdn2d", fake)
    try:
        L.upsample2d(torch.zeros(1, 1, 4, 4), L.setup_filter([1, 3, 3, 1]))
    finally:
        L.register_kernel("upfirdn2d", None)
    assert calls == [2] and L.KERNELS["upfirdn2d"] is L.DEFAULT_KERNELS["upfirdn2d"]
    with pytest.raises(KeyError):
        L.register_kernel("nope", None)


def test_fully_connected_equalized_lr():
    fc = L.FullyConnected(64, 32, lr_multiplier=0.01, bias_init=1.0)
    assert float(fc.weight.detach().std()) > 50  # stored N(0, 1/lr²)
    y = fc(torch.randn(4096, 64))
    assert abs(float(y.std()) - 1.0) < 0.1 and abs(float(y.mean()) - 0.01) < 0.05
    act = L.FullyConnected(64, 64, activation="lrelu")(torch.randn(8192, 64))
    assert 0.8 < float(act.square().mean()) < 1.3  # lrelu gain √2 keeps the 2nd moment ≈ 1
    with pytest.raises(ValueError, match="activation"):
        L.FullyConnected(2, 2, activation="swish")


def test_modulated_conv_fused_equals_unfused():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 8, 8)
    w = torch.randn(4, 8, 3, 3)
    s = torch.randn(3, 8)
    f = L.setup_filter([1, 3, 3, 1])
    a = L.modulated_conv2d(x, w, s, padding=1, up=2, resample_filter=f, fused_modconv=True)
    b = L.modulated_conv2d(x, w, s, padding=1, up=2, resample_filter=f, fused_modconv=False)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # demodulation: unit-variance input → ~unit-variance output regardless of the style scale
    y = L.modulated_conv2d(torch.randn(3, 8, 32, 32), w, s * 100, padding=1)
    assert 0.5 < float(y.std()) < 1.5


def test_modulated_fc_and_conv3d_shapes_and_grads():
    fc = L.ModulatedFullyConnected(5, 7, 16)
    x = torch.randn(2, 11, 5, requires_grad=True)
    y = fc(x, torch.randn(2, 16))
    assert y.shape == (2, 11, 7)
    y.sum().backward()
    assert x.grad is not None and fc.affine.weight.grad is not None
    c3 = L.ModulatedConv3d(4, 6, 16)
    assert c3(torch.randn(2, 4, 5, 5, 5), torch.randn(2, 16)).shape == (2, 6, 5, 5, 5)


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_fc_input_and_weight_forms_are_the_same_function(set_perf, demodulate):
    torch.manual_seed(0)
    fc = L.ModulatedFullyConnected(6, 5, 8, activation="lrelu", demodulate=demodulate).double()
    x = torch.randn(3, 17, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 8, dtype=torch.float64)
    outs = {}
    for form in ("weight", "input"):
        set_perf(modulated_fc=form)
        fc.zero_grad()
        x.grad = None
        y = fc(x, w)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)).sum().backward()
        outs[form] = [y.detach(), x.grad.clone()] + [p.grad.clone() for p in fc.parameters()]
    for a, b in zip(outs["weight"], outs["input"]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_discriminator_conv_downsamples():
    conv = L.Conv2dLayer(3, 5, 3, down=2, activation="lrelu")
    assert conv(torch.randn(2, 3, 16, 16)).shape == (2, 5, 8, 8)
    skip = L.Conv2dLayer(3, 5, 1, down=2)
    assert skip(torch.randn(2, 3, 16, 16)).shape == (2, 5, 8, 8)


def test_minibatch_std_and_clamp():
    mb = L.MinibatchStdLayer(4, 1)
    y = mb(torch.randn(8, 6, 4, 4))
    assert y.shape == (8, 7, 4, 4)
    # StyleGAN grouping is strided: with N=8, G=4 the groups are samples {0,2,4,6} and {1,3,5,7}
    assert torch.allclose(y[0::2, 6], y[0, 6].expand(4, 4, 4))
    assert not torch.allclose(y[0, 6], y[1, 6])
    assert float(L.bias_act_ref(torch.full((2, 2), 1e4), clamp=256).max()) == 256
    assert math.isclose(float(L.bias_act_ref(torch.ones(1, 1), act="lrelu")), math.sqrt(2), rel_tol=1e-6)


@pytest.mark.parametrize("filt", [[1, 3, 3, 1], [1, 2, 5, 1], [1, 2]])
def test_folded_blur_conv_is_the_same_function(filt, set_perf):
    """FIR blur + stride-2 3×3 conv == one folded stride-2 conv (float64, output and all gradients,
    incl. the R1-style double backward through the cheap-double-backward kernels)."""
    torch.manual_seed(0)
    lay = L.Conv2dLayer(5, 6, 3, activation="lrelu", down=2, conv_clamp=256, resample_filter=filt).double()
    x = torch.randn(2, 5, 16, 16, dtype=torch.float64, requires_grad=True)
    outs = {}
    for mode in ("never", "always"):
        set_perf(fold_downsample_conv=mode)
        y = lay(x)
        g = torch.autograd.grad(y.square().sum(), [x, lay.weight, lay.bias])
        with L.double_backward_kernels():
            y2 = lay(x)
            gx, = torch.autograd.grad(y2.sum(), x, create_graph=True)
            gg = torch.autograd.grad(gx.square().sum(), [lay.weight, lay.bias])
        outs[mode] = (y, *g, *gg)
    for a, b in zip(outs["never"], outs["always"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_fold_policy_keeps_cpu_fp32_reference_order(set_perf):
    lay = L.Conv2dLayer(3, 4, 3, down=2)
    assert lay.fold_map.shape == (9, 36) and "fold_map" not in lay.state_dict()
    assert not lay.folds_blur(torch.zeros(1, 3, 8, 8))              # default: CPU fp32 → unfolded
    with pytest.raises(ConfigError, match="perf.fold_downsample_conv: 'bogus' is not allowed"):
        set_perf(fold_downsample_conv="bogus")
    assert L.Conv2dLayer(3, 4, 3).fold_map is None


@pytest.mark.parametrize("filt", [[1, 3, 3, 1], [1, 2, 1], [1, 4, 6, 4, 1], [1, 1]])
@pytest.mark.parametrize("up", [2, 3])
def test_polyphase_upsample_is_the_reference_function(filt, up):
    """Polyphase upsampling == zero insertion + pad + FIR (values and gradients, float64), any filter length."""
    torch.manual_seed(0)
    f = L.setup_filter(filt).double()
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    fw = len(filt)
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    ref = L.upfirdn2d_ref(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)
    new = L.upsample2d_polyphase(x, f, up)
    assert new.shape == ref.shape == (2, 3, 5 * up, 7 * up)
    torch.testing.assert_close(new, ref, atol=1e-12, rtol=1e-12)
    w = torch.randn_like(ref)
    (gr,) = torch.autograd.grad((ref * w).sum(), x)
    (gn,) = torch.autograd.grad((new * w).sum(), x)
    torch.testing.assert_close(gn, gr, atol=1e-12, rtol=1e-12)
