"""Reduced-precision tri-plane synthesis (model.g_num_fp16_res): which blocks, the arithmetic, the layout.

The reduced blocks run on CUDA only; these tests add "cpu" to ``REDUCED_PRECISION_DEVICES`` to exercise the
same code on the CPU (bf16 and fp16 convolutions exist there, slowly)."""
import pytest
import torch

from get3d.nn import triplane
from get3d.nn.triplane import TriplaneSynthesis, reduced_precision_resolution


@pytest.fixture
def cpu_reduced(monkeypatch):
    monkeypatch.setattr(triplane, "REDUCED_PRECISION_DEVICES", ("cuda", "cpu"))


def _synthesis(n, dtype="bfloat16"):
    torch.manual_seed(0)
    return TriplaneSynthesis(32, 32, resolution=32, channels=[32, 32, 32, 16], plane_channels=4,
                             num_fp16_res=n, fp16_dtype=dtype)


def test_reduced_blocks_follow_the_stylegan_rule():
    assert reduced_precision_resolution([4, 8, 16, 32, 64, 128, 256], 4) == 32
    assert reduced_precision_resolution([4, 8, 16, 32], 1) == 32
    assert reduced_precision_resolution([4, 8, 16, 32], 9) == 8  # never below 8²
    assert reduced_precision_resolution([4, 8, 16, 32], 0) > 32  # none
    s = _synthesis(2)
    assert [b.compute_dtype for b in s.blocks] == [torch.float32, torch.float32, torch.bfloat16, torch.bfloat16]
    s.set_precision(0)
    assert all(b.compute_dtype == torch.float32 for b in s.blocks)


def test_set_precision_rejects_bad_values():
    s = _synthesis(0)
    with pytest.raises(ValueError, match="fp16_dtype"):
        s.set_precision(2, "float8")
    with pytest.raises(ValueError, match="num_fp16_res"):
        s.set_precision(-1)


def test_cpu_stays_float32_by_default():
    s = _synthesis(4)
    ws = torch.randn(2, s.num_ws, 32)
    ref = _synthesis(0)
    g, t = s(ws, ws, noise_mode="const")
    g0, t0 = ref(ws, ws, noise_mode="const")
    assert torch.equal(g, g0) and torch.equal(t, t0)


@pytest.mark.parametrize("dtype, tol", [("bfloat16", 3e-2), ("float16", 3e-3)])
def test_reduced_planes_close_to_float32(cpu_reduced, dtype, tol):
    ws = torch.randn(2, _synthesis(0).num_ws, 32) * 2
    g0, t0 = _synthesis(0)(ws, ws, noise_mode="const")
    g, t = _synthesis(3, dtype)(ws, ws, noise_mode="const")
    for a, b in ((g, g0), (t, t0)):
        assert a.dtype == torch.float32 and a.is_contiguous() and a.shape == b.shape
        rel = (a - b).norm() / b.norm()
        assert 0 < rel < tol, f"{dtype}: relative error {rel:.2e}"


def test_reduced_planes_backpropagate_to_float32_parameters(cpu_reduced):
    s = _synthesis(2)
    ws = torch.randn(2, s.num_ws, 32, requires_grad=True)
    g, t = s(ws, ws, noise_mode="random")
    (g.square().mean() + t.square().mean()).backward()
    top = s.blocks[-1]
    assert top.conv1.weight.dtype == torch.float32 and top.conv1.weight.grad.dtype == torch.float32
    assert torch.isfinite(top.conv1.weight.grad).all() and top.conv1.weight.grad.abs().sum() > 0
    assert ws.grad is not None and torch.isfinite(ws.grad).all()


def test_float16_prescaling_keeps_the_modulated_conv_exact():
    """The fp16 weight/style normalisation is undone by demodulation (up to its 1e-8 epsilon), in float64."""
    from get3d.nn.layers import modulated_conv2d

    torch.manual_seed(1)
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    w = torch.randn(5, 8, 3, 3, dtype=torch.float64) * 7
    st = torch.randn(2, 8, dtype=torch.float64) * 30
    ref = modulated_conv2d(x, w, st, padding=1, fused_modconv=False)
    scaled_w = w * (1 / (8 * 9) ** 0.5 / w.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
    scaled_st = st / st.norm(float("inf"), dim=1, keepdim=True)
    assert torch.allclose(modulated_conv2d(x, scaled_w, scaled_st, padding=1, fused_modconv=False), ref,
                          rtol=1e-6, atol=1e-8)
    y16 = modulated_conv2d(x.half(), w, st, padding=1, fused_modconv=False)  # takes the prescaled branch
    assert torch.isfinite(y16).all()
    assert ((y16.double() - ref).norm() / ref.norm()) < 3e-3


def test_model_config_reaches_the_synthesis():
    from get3d.nn import build_generator, small_config

    G = build_generator(small_config(g_num_fp16_res=1, g_fp16_dtype="float16"))
    s = G.backbone.synthesis
    assert (s.num_fp16_res, s.fp16_dtype) == (1, "float16")
    assert s.blocks[-1].compute_dtype == torch.float16 and s.blocks[0].compute_dtype == torch.float32
