import math

import pytest
import torch

from get3d.nn import build_discriminators, small_config
from get3d.nn.config import build_backbone
from get3d.nn.discriminator import encode_camera
from get3d.nn.mapping import MappingNetwork, style_mix


def _mapping(**kw):
    torch.manual_seed(0)
    return MappingNetwork(16, 16, num_ws=5, num_layers=2, **kw)


def test_mapping_shapes_and_broadcast():
    m = _mapping()
    ws = m(torch.randn(3, 16))
    assert ws.shape == (3, 5, 16)
    assert torch.equal(ws[:, 0], ws[:, 4])
    with pytest.raises(ValueError, match="z must be"):
        m(torch.randn(3, 7))


def test_w_avg_tracking_and_truncation():
    m = _mapping()
    m.train()
    z = torch.randn(64, 16)
    w = m(z, update_w_avg=False)[:, 0]
    assert float(m.w_avg.abs().sum()) == 0.0
    m(z)  # training mode → update
    torch.testing.assert_close(m.w_avg, w.mean(0) * (1 - 0.998), atol=1e-6, rtol=1e-5)
    m.eval()
    before = m.w_avg.clone()
    m(z)
    assert torch.equal(before, m.w_avg)  # eval mode does not move w_avg
    # ψ=0 → w_avg, ψ=1 → w, ψ in between → lerp; cutoff limits which ws are truncated
    torch.testing.assert_close(m(z, truncation_psi=0.0)[:, 2], m.w_avg.expand(64, -1))
    half = m(z, truncation_psi=0.5)[:, 0]
    torch.testing.assert_close(half, m.w_avg + 0.5 * (w - m.w_avg), atol=1e-5, rtol=1e-5)
    cut = m(z, truncation_psi=0.0, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, 3], w)
    torch.testing.assert_close(cut[:, 1], m.w_avg.expand(64, -1))


def test_style_mixing_probability_and_cutoff():
    m = _mapping()
    m.eval()
    ws = m(torch.randn(4, 16))
    g = torch.Generator().manual_seed(0)
    mixed = [style_mix(m, ws, 0.9, g) for _ in range(200)]
    changed = [not torch.equal(x, ws) for x in mixed]
    assert 0.8 < sum(changed) / len(changed) < 0.97
    for x in mixed:
        assert torch.equal(x[:, 0], ws[:, 0])  # cutoff ≥ 1: the first w is always kept
        diff = (x != ws).any(-1).any(0)
        if diff.any():  # mixed part is a suffix
            k = int(diff.nonzero()[0])
            assert diff[k:].all()
    assert torch.equal(style_mix(m, ws, 0.0, g), ws)
    # reproducible with the same generator state
    a = style_mix(m, ws, 1.0, torch.Generator().manual_seed(3))
    b = style_mix(m, ws, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_camera_encoding():
    c = torch.tensor([[0.3, 1.2]])
    e = encode_camera(c)
    assert e.shape == (1, 14)
    assert math.isclose(float(e[0, 0]), math.sin(0.3), rel_tol=1e-6)
    assert math.isclose(float(e[0, 2]), math.sin(1.2), rel_tol=1e-6)  # sin 4a
    torch.testing.assert_close(e[:, -2:], c)


def test_small_discriminators_forward_backward():
    cfg = small_config()
    torch.manual_seed(0)
    D = build_discriminators(cfg)
    img = torch.randn(4, 4, 32, 32, requires_grad=True)
    c = torch.rand(4, 2)
    lr, lm = D(img, c)
    assert lr.shape == (4, 1) and lm.shape == (4, 1)
    (lr.sum() + lm.sum()).backward()
    assert img.grad[:, :3].abs().sum() > 0 and img.grad[:, 3:].abs().sum() > 0
    for name, p in D.named_parameters():
        assert p.grad is not None, name
    # the camera changes the logit (projection conditioning)
    with torch.no_grad():
        assert not torch.allclose(D.rgb(img[:, :3], c), D.rgb(img[:, :3], c + 1.0))
    # R1-style double backward works
    img2 = torch.randn(4, 3, 32, 32, requires_grad=True)
    (g,) = torch.autograd.grad(D.rgb(img2, c).sum(), img2, create_graph=True)
    g.square().sum().backward()


def test_discriminator_fp16_flags_and_channels_last():
    cfg = small_config(num_fp16_res=2, channels_last=True, fp16_dtype="bfloat16")
    D = build_discriminators(cfg)
    flags = [b.use_fp16 for b in D.rgb.blocks]
    assert flags == [True, True, False]
    assert D.rgb.blocks[0].conv0.weight.is_contiguous(memory_format=torch.channels_last)
    # on CPU the reduced-precision blocks run in fp32 (CUDA only), so this just has to work
    out = D(torch.randn(2, 4, 32, 32), torch.rand(2, 2))
    assert out[0].dtype == torch.float32
    with pytest.raises(ValueError, match="img"):
        D.rgb(torch.randn(2, 3, 16, 16), torch.rand(2, 2))


@pytest.mark.parametrize("generator", ["unified", "separate"])
def test_backbone_fields_forward_backward(generator):
    cfg = small_config(generator=generator)
    torch.manual_seed(0)
    bb = build_backbone(cfg)
    ws_geo = torch.randn(2, bb.num_ws, cfg.w_dim)
    ws_tex = torch.randn(2, bb.num_ws, cfg.w_dim)
    state = bb.synthesize(ws_geo, ws_tex)
    pts = torch.rand(2, 50, 3) - 0.5
    sdf, dfm = bb.query_geometry(state, pts)
    rgb = bb.query_texture(state, pts)
    assert sdf.shape == (2, 50) and dfm.shape == (2, 50, 3) and rgb.shape == (2, 50, 3)
    assert float(rgb.min()) >= -1e-3 and float(rgb.max()) <= 1 + 1e-3
    (sdf.square().mean() + dfm.square().mean()).backward(retain_graph=True)
    geo_named = {n for n, p in bb.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    tex_only = [n for n, _ in bb.named_parameters() if "totex" in n or n.startswith("texture.")]
    assert not (geo_named & set(tex_only)), "geometry loss must not reach texture-only parameters"
    bb.zero_grad()
    rgb.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in bb.named_parameters() if n in tex_only)
    if generator == "separate":
        # texture synthesis sees a detached geometry code
        wg = ws_geo.clone().requires_grad_(True)
        st = bb.synthesize(wg, ws_tex)
        bb.query_texture(st, pts).sum().backward()
        assert wg.grad is None or float(wg.grad.abs().sum()) == 0.0
