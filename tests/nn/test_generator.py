"""Small-config G end to end on CPU: mapping → backbone → DMTet (get3d.geometry) → render (get3d.raster)."""

import pytest
import torch

from get3d import cameras
from get3d.nn import build_discriminators, build_generator, small_config
from get3d.nn.generator import angles_from_c2w, flat_query, resolve_camera

CAM = (torch.tensor([0.3, 2.0]), torch.tensor([1.2, 1.0]))


def _gen(generator="unified", seed=0, **kw):
    torch.manual_seed(seed)
    cfg = small_config(generator=generator, **kw)
    return cfg, build_generator(cfg)


def _z(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, cfg.z_dim, generator=g), torch.randn(2, cfg.z_dim, generator=g)


def _grad_norm(module, prefix):
    tot = 0.0
    for n, p in module.named_parameters():
        if n.startswith(prefix) and p.grad is not None:
            tot += float(p.grad.abs().sum())
    return tot


@pytest.mark.parametrize("generator", ["unified", "separate"])
def test_forward_backward_gradient_paths(generator):
    cfg, G = _gen(generator)
    zt, zg = _z(cfg, 1)
    out = G(zt, zg, CAM, style_mixing=True, generator=torch.Generator().manual_seed(0))
    img = out["img"]
    assert img.shape == (2, 4, cfg.img_resolution, cfg.img_resolution)
    assert float(img[:, :3].detach().min()) >= -1.01 and float(img[:, :3].detach().max()) <= 1.01
    assert 0 <= float(out["mask"].detach().min()) and float(out["mask"].detach().max()) <= 1
    assert all(f.shape[0] > 0 for _, f in out["meshes"]), "expected a surface in every sample"
    assert out["camera_condition"].shape == (2, 2)
    sdf_prefix = "backbone.sdf" if generator == "unified" else "backbone.sdf_net"
    dfm_prefix = "backbone.deformation"
    tex_prefix = "backbone.texture"

    # a mask loss reaches the SDF and deformation networks (through antialiasing → verts → sdf/Δv)
    out["mask"].mean().backward(retain_graph=True)
    assert _grad_norm(G, sdf_prefix) > 0
    assert _grad_norm(G, dfm_prefix) > 0
    assert _grad_norm(G, tex_prefix) == 0
    G.zero_grad(set_to_none=True)
    # an RGB loss reaches the texture decoder and texture heads
    out["rgb"].mean().backward(retain_graph=True)
    assert _grad_norm(G, tex_prefix) > 0
    heads = "backbone.synthesis.blocks.0.totex"
    assert _grad_norm(G, heads) > 0
    G.zero_grad(set_to_none=True)
    # the SDF regulariser reaches the SDF net
    out["sdf_reg_loss"].backward()
    assert _grad_norm(G, sdf_prefix) > 0


def test_full_step_with_discriminators():
    cfg, G = _gen()
    D = build_discriminators(cfg)
    zt, zg = _z(cfg, 2)
    out = G(zt, zg, CAM)
    lr, lm = D(out["img"], out["camera_condition"])
    (torch.nn.functional.softplus(-lr).mean() + torch.nn.functional.softplus(-lm).mean()).backward()
    assert _grad_norm(G, "mapping_geo") > 0 and _grad_norm(G, "mapping_tex") > 0
    assert all(p.grad is not None for p in D.parameters())


def test_determinism_with_fixed_seed():
    outs = []
    for _ in range(2):
        cfg, G = _gen(seed=5)
        zt, zg = _z(cfg, 3)
        torch.manual_seed(11)
        outs.append(G(zt, zg, CAM, noise_mode="random", style_mixing=True,
                      generator=torch.Generator().manual_seed(4)))
    assert torch.equal(outs[0]["img"], outs[1]["img"])
    assert torch.equal(outs[0]["sdf"], outs[1]["sdf"])


def test_truncation_and_w_avg_in_generator():
    cfg, G = _gen()
    G.train()
    zt, zg = _z(cfg, 4)
    ws_tex, _ = G.mapping(zt, zg)
    assert ws_tex.shape == (2, G.num_ws, cfg.w_dim)
    assert float(G.mapping_tex.w_avg.abs().sum()) > 0  # training mode tracks w_avg
    G.eval()
    t0, g0 = G.mapping(zt, zg, truncation_psi=0.0)
    torch.testing.assert_close(t0[:, 0], G.mapping_tex.w_avg.expand(2, -1))
    torch.testing.assert_close(g0[:, -1], G.mapping_geo.w_avg.expand(2, -1))


def test_extract_meshes_and_texture_fn():
    cfg, G = _gen()
    zt, zg = _z(cfg, 6)
    meshes, tex = G.extract_meshes(zt, zg, truncation_psi=0.7)
    assert len(meshes) == 2
    v, f = meshes[1]
    assert f.dtype == torch.long and int(f.max()) < v.shape[0]
    pts = torch.cat([meshes[0][0][:5], v[:7]])
    sid = torch.tensor([0] * 5 + [1] * 7)
    rgb = tex(pts, sid)
    assert rgb.shape == (12, 3) and not rgb.requires_grad
    # per-sample query agrees with the batched field
    one = tex(v[:7], torch.ones(7, dtype=torch.long))
    torch.testing.assert_close(one, rgb[5:])


def test_flat_query_packs_by_sample():
    pts = torch.randn(9, 3)
    sid = torch.tensor([1, 0, 1, 2, 0, 1, 2, 2, 2])
    out = flat_query(lambda p: p.sum(-1, keepdim=True) + torch.arange(3.0)[:, None, None] * 100, pts, sid, 3)
    torch.testing.assert_close(out[:, 0], pts.sum(-1) + sid.float() * 100)
    grouped, _ = torch.sort(sid)  # the rasteriser's order: the sort-free path gives the same answer
    out = flat_query(lambda p: p.sum(-1, keepdim=True) + torch.arange(3.0)[:, None, None] * 100, pts, grouped, 3)
    torch.testing.assert_close(out[:, 0], pts.sum(-1) + grouped.float() * 100)
    one = flat_query(lambda p: p.sum(-1, keepdim=True), pts[:1], sid[:1], 3)
    torch.testing.assert_close(one[:, 0], pts[:1].sum(-1))


@pytest.mark.parametrize("grouped", [False, True])
def test_flat_query_gradients(grouped):
    """Gradients reach the points and the field's parameters as through a per-point evaluation."""
    torch.manual_seed(0)
    sid = torch.tensor([1, 0, 1, 2, 0, 1, 2, 2, 2, 0])
    if grouped:
        sid, _ = torch.sort(sid)
    scale = torch.randn(3, 1, 4, requires_grad=True)  # a per-sample field: [B, N, 3] → [B, N, 4]

    def field(p):
        return torch.sin(p.sum(-1, keepdim=True) * scale)

    pts = torch.randn(10, 3, requires_grad=True)
    weights = torch.randn(10, 4)
    (flat_query(field, pts, sid, 3) * weights).sum().backward()
    got = (pts.grad.clone(), scale.grad.clone())
    pts.grad, scale.grad = None, None
    ref = torch.cat([field(pts[i].view(1, 1, 3).expand(3, 1, 3))[sid[i], 0][None] for i in range(10)])
    (ref * weights).sum().backward()
    torch.testing.assert_close(got[0], pts.grad)
    torch.testing.assert_close(got[1], scale.grad)


def test_camera_forms_agree():
    az, po = torch.tensor([0.5, 4.0]), torch.tensor([1.3, 0.9])
    a = resolve_camera((az, po), 2, "cpu")
    b = resolve_camera(cameras.camera_to_world(az, po), 2, "cpu")
    torch.testing.assert_close(a.mvp, b.mvp)
    torch.testing.assert_close(torch.stack(angles_from_c2w(cameras.camera_to_world(az, po)), -1),
                               torch.stack([az, po], -1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="camera"):
        resolve_camera((az,), 2, "cpu")


def test_config_validation_errors():
    from get3d.nn import ModelConfig
    from get3d.schema import ConfigError, parse_section
    with pytest.raises(ConfigError, match="model.generator"):
        parse_section(ModelConfig, {"generator": "fused"}, "model")
    with pytest.raises(ConfigError, match="power of two"):
        parse_section(ModelConfig, {"img_resolution": 1000}, "model")
    with pytest.raises(ConfigError, match="triplane_channels"):
        parse_section(ModelConfig, {"triplane_channels": [1, 2]}, "model")
    assert ModelConfig(iso_surface="flexicubes").resolved_deformation_multiplier == 2.0


def test_flexicubes_generator_runs_and_backprops():
    cfg, G = _gen(iso_surface="flexicubes", tet_res=6)
    zt, zg = _z(cfg, 8)
    out = G(zt, zg, CAM)
    assert out["img"].shape == (2, 4, cfg.img_resolution, cfg.img_resolution)
    (out["img"].mean() + out["sdf_reg_loss"]).backward()
    assert _grad_norm(G, "backbone.sdf") > 0


def test_flexicubes_splits_quads_by_the_generator_mode():
    """Training: the differentiable 4-triangle split; evaluation (eval()): the 2-triangle split, same surface."""
    cfg, G = _gen(iso_surface="flexicubes", tet_res=6)
    zt, zg = _z(cfg, 8)
    with torch.no_grad():
        train_meshes = G.train().extract_meshes(zt, zg)[0]
        eval_meshes = G.eval().extract_meshes(zt, zg)[0]
    for (vt, ft), (ve, fe) in zip(train_meshes, eval_meshes):
        assert fe.shape[0] > 0 and ft.shape[0] == 2 * fe.shape[0]   # 4 vs 2 triangles per quad
        assert vt.shape[0] == ve.shape[0] + fe.shape[0] // 2       # plus one centre vertex per quad


def test_recomputed_geometry_mlps_give_the_same_gradients_and_keep_less(set_perf):
    """``perf.recompute_geometry_mlp``: the separate generator's SDF and deformation MLPs run again in the backward
    (same outputs and gradients) instead of keeping their activations."""
    results = []
    for recompute in (False, True):
        set_perf(recompute_geometry_mlp=recompute)
        cfg, G = _gen("separate", tet_res=16, geo_mlp_width=128)
        zt, zg = _z(cfg, 1)
        saved = []

        def pack(t, saved=saved):
            saved.append(t.untyped_storage().nbytes())
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = G(zt, zg, CAM, generator=torch.Generator().manual_seed(0))
        (out["mask"].mean() + out["rgb"].mean() + out["sdf_reg_loss"]).backward()
        results.append((out["img"].detach(), {n: p.grad.clone() for n, p in G.named_parameters()
                                              if p.grad is not None}, sum(saved)))
    (img0, g0, kept0), (img1, g1, kept1) = results
    torch.testing.assert_close(img1, img0)
    assert g1.keys() == g0.keys() and any(n.startswith("backbone.sdf_net.mlp") for n in g0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], msg=n)
    assert kept1 < 0.5 * kept0, (kept0, kept1)  # the MLPs dominate at this width, as at the paper's tet 90
