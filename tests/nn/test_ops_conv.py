"""get3d.nn.ops.conv2d: same function as F.conv2d, with an explicit double backward (R1 path)."""
import pytest
import torch
import torch.nn.functional as F

from get3d.nn import layers as L
from get3d.nn.discriminator import Discriminator
from get3d.nn.ops import conv2d

CASES = [  # (stride, padding, kernel, H, W) — small: gradgradcheck is quadratic in the element count
    (1, 1, 3, 5, 4),
    (2, 0, 3, 6, 6),
    (2, 0, 3, 7, 5),   # odd sizes: the transposed conv needs output padding
    (1, 0, 1, 4, 4),
    (2, 1, 3, 5, 5),
]


@pytest.mark.parametrize("s,p,k,h,w", CASES)
def test_forward_and_gradgradcheck(s, p, k, h, w):
    g = torch.Generator().manual_seed(s * 100 + p * 10 + k + h)
    x = torch.randn(2, 2, h, w, dtype=torch.float64, generator=g, requires_grad=True)
    wt = torch.randn(3, 2, k, k, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda x, wt, b: conv2d(x, wt, b, stride=s, padding=p)
    torch.testing.assert_close(fn(x, wt, b), F.conv2d(x, wt, b, stride=s, padding=p))
    assert torch.autograd.gradcheck(fn, (x, wt, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, wt, b), fast_mode=True)


def _r1_grads(conv, x, wt, s, p):
    x = x.detach().requires_grad_(True)
    wt = wt.detach().requires_grad_(True)
    y = F.leaky_relu(conv(x, wt, None, stride=s, padding=p), 0.2)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    return torch.autograd.grad(gx.square().sum(), [wt, x])


@pytest.mark.parametrize("s,p,k,h,w", CASES)
def test_r1_style_double_backward_matches_reference(s, p, k, h, w):
    g = torch.Generator().manual_seed(7 + h)
    x = torch.randn(2, 3, h, w, dtype=torch.float64, generator=g)
    wt = torch.randn(4, 3, k, k, dtype=torch.float64, generator=g)
    for a, b in zip(_r1_grads(conv2d, x, wt, s, p), _r1_grads(L.conv2d_ref, x, wt, s, p)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="channels"):
        conv2d(torch.zeros(1, 3, 4, 4), torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match="expects"):
        conv2d(torch.zeros(3, 4, 4), torch.zeros(2, 3, 3, 3))


def test_discriminator_r1_same_with_reference_conv():
    """The whole D (blocks, down-sampling convs, epilogue): R1 penalty and its parameter gradients agree."""
    torch.manual_seed(0)
    D = Discriminator(img_resolution=16, img_channels=3, channels=[8, 16, 16], c_dim=2, mapping_layers=1,
                      conv_clamp=None).double()
    img = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    c = torch.rand(4, 2, dtype=torch.float64)

    def run():
        D.zero_grad(set_to_none=True)
        x = img.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(D(x, c).sum(), x, create_graph=True)
        pen = g.square().sum()
        pen.backward()
        return pen.detach(), {n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None}

    assert L.KERNELS["conv2d"] is L.conv2d_ref and L.KERNELS["upfirdn2d"] is L.upfirdn2d_ref
    pen_ref, grads_ref = run()
    with L.double_backward_kernels():
        assert L.KERNELS["conv2d"] is not L.conv2d_ref and L.KERNELS["upfirdn2d"] is L.upfirdn2d_taps
        pen_fast, grads_fast = run()
    assert L.KERNELS["conv2d"] is L.conv2d_ref and L.KERNELS["upfirdn2d"] is L.upfirdn2d_ref
    # The epilogue runs in float32 (it calls .float()), so agreement is at float32 rounding, not float64.
    torch.testing.assert_close(pen_fast, pen_ref, rtol=1e-6, atol=0)
    assert grads_fast.keys() == grads_ref.keys() and len(grads_fast) > 10
    for n in grads_ref:
        err = float((grads_fast[n] - grads_ref[n]).norm() / grads_ref[n].norm().clamp_min(1e-30))
        assert err < 1e-5, f"{n}: relative error {err:.2e}"


@pytest.mark.parametrize("down,padding,flip,gain", [(1, 1, False, 1.0), (2, 1, False, 1.0), (1, (2, 1, 0, 3), True, 4.0),
                                                    (2, (1, 1, 1, 1), False, 1.0), (1, (-1, 2, 1, -1), False, 2.0)])
def test_upfirdn2d_taps_matches_reference_incl_double_backward(down, padding, flip, gain):
    g = torch.Generator().manual_seed(11)
    f = L.setup_filter([1, 3, 3, 1]) if not flip else L.setup_filter([1, 2, 5, 1])
    f = f.double()
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64, generator=g, requires_grad=True)
    kw = {"down": down, "padding": padding, "flip_filter": flip, "gain": gain}
    a = L.upfirdn2d_taps(x, f, **kw)
    torch.testing.assert_close(a, L.upfirdn2d_ref(x, f, **kw), rtol=1e-12, atol=1e-12)
    fn = lambda x: L.upfirdn2d_taps(x, f, **kw).square()
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def test_upfirdn2d_taps_falls_back_for_upsampling():
    x = torch.randn(1, 2, 4, 4)
    f = L.setup_filter([1, 3, 3, 1])
    torch.testing.assert_close(L.upfirdn2d_taps(x, f, up=2, padding=(2, 1, 2, 1), gain=4),
                               L.upfirdn2d_ref(x, f, up=2, padding=(2, 1, 2, 1), gain=4))
