"""Graphed discriminator passes == eager passes (logits, image gradients, parameter gradients), on CUDA."""
import pytest
import torch

from get3d.nn import build_discriminators, small_config
from get3d.train.graphs import GraphedDiscriminators

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _upsample_kernel(set_perf):
    """GET3D_TEST_UPSAMPLE=reference|polyphase|triton runs these tests with another FIR upsampling kernel."""
    import os

    if os.environ.get("GET3D_TEST_UPSAMPLE"):
        set_perf(upsample=os.environ["GET3D_TEST_UPSAMPLE"])


def _pair():
    torch.manual_seed(0)
    cfg = small_config()
    D = build_discriminators(cfg, device="cuda").to("cuda")  # .to(): the FIR buffers are built on the CPU
    return D.rgb, D.mask, cfg


def assert_close_in_norm(actual, expected, rtol):
    """``|actual − expected| ≤ rtol · |expected|`` over the whole tensor: float32 reductions in another order
    (graph capture may pick other cuDNN algorithms) move single cancelling elements by more than an element-wise
    tolerance, while an accumulation bug (a lost or doubled term) moves the norm by O(1)."""
    err = (actual.double() - expected.double()).norm()
    assert err <= rtol * expected.double().norm() + 1e-12, \
        f"relative error {err / expected.double().norm():.2e} > {rtol:.0e} (shape {tuple(expected.shape)})"


def _grads(mods):
    return [p.grad.clone() if p.grad is not None else None for m in mods for p in m.parameters()]


def _g_phase(name, graphs, D_rgb, D_mask, rgb, mask, cam):
    x, m = rgb.clone().requires_grad_(True), mask.clone().requires_grad_(True)
    if name == "eager":
        lr, lm = D_rgb(x, cam).float().reshape(-1), D_mask(m, cam).float().reshape(-1)
    else:
        lr, lm = graphs("G", x, m, cam)
    (lr.sum() + 2 * lm.sum()).backward()
    return lr.detach().clone(), lm.detach().clone(), x.grad, m.grad


def _d_phase(name, graphs, D_rgb, D_mask, rgb, mask, cam):
    """Two D passes, each followed by its backward; returns the accumulated parameter gradients.  A function,
    so the eager autograd graph (which keeps the parameters' gradient accumulators alive) is gone before the
    graphed pass is captured — as in training, where capture happens in the first step."""
    for mod in (D_rgb, D_mask):
        mod.zero_grad(set_to_none=False)
    for k in range(2):
        x = rgb * (1 - 2 * k)
        if name == "eager":
            lr, lm = D_rgb(x, cam).float().reshape(-1), D_mask(mask, cam).float().reshape(-1)
        else:
            lr, lm = graphs("D", x, mask, cam)
        (torch.nn.functional.softplus(lr).sum() + lm.square().sum()).backward()
    return _grads((D_rgb, D_mask))


def test_graphed_phases_match_eager():
    D_rgb, D_mask, cfg = _pair()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    res = cfg.img_resolution
    graphs = GraphedDiscriminators(D_rgb, D_mask)
    for step in range(3):  # several replays with new inputs and updated weights
        g = torch.Generator(device="cuda").manual_seed(step)
        rgb = torch.randn(2, 3, res, res, device="cuda", generator=g)
        mask = torch.rand(2, 1, res, res, device="cuda", generator=g)
        cam = torch.rand(2, 2, device="cuda", generator=g)
        # Gmain: D frozen, image gradients
        for p in list(D_rgb.parameters()) + list(D_mask.parameters()):
            p.requires_grad_(False)
        out = {name: _g_phase(name, graphs, D_rgb, D_mask, rgb, mask, cam) for name in ("eager", "graph")}
        for a, b in zip(out["eager"], out["graph"]):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
        # Dmain: D trains, constant images; two passes each followed by its backward
        for p in list(D_rgb.parameters()) + list(D_mask.parameters()):
            p.requires_grad_(True)
        grads = {name: _d_phase(name, graphs, D_rgb, D_mask, rgb, mask, cam) for name in ("eager", "graph")}
        for a, b in zip(grads["eager"], grads["graph"]):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-3)
        with torch.no_grad():  # an optimizer-like in-place update: the graphs must see the new weights
            for p in list(D_rgb.parameters()) + list(D_mask.parameters()):
                p.sub_(1e-3 * p.grad)


def test_graphed_discriminators_reject_a_new_shape():
    D_rgb, D_mask, cfg = _pair()
    res = cfg.img_resolution
    graphs = GraphedDiscriminators(D_rgb, D_mask)
    cam = torch.rand(2, 2, device="cuda")
    graphs("D", torch.randn(2, 3, res, res, device="cuda"), torch.rand(2, 1, res, res, device="cuda"), cam)
    with pytest.raises(ValueError, match="captured for shapes"):
        graphs("D", torch.randn(3, 3, res, res, device="cuda"), torch.rand(3, 1, res, res, device="cuda"),
               torch.rand(3, 2, device="cuda"))


def _synthesis_pass(name, syn, wa, wb):
    a, b = wa.clone().requires_grad_(True), wb.clone().requires_grad_(True)
    syn.zero_grad(set_to_none=True)
    geo, tex = syn(a, b, noise_mode="none") if name == "eager" else syn(a, b)
    (geo.square().sum() + (tex * 3).sum()).backward()
    return [geo.detach().clone(), tex.detach().clone(), a.grad, b.grad] + [p.grad.clone() for p in syn.parameters()]


def _small_synthesis():
    """A small tri-plane synthesis net on CUDA in training mode, float32 without TF32 (so graph == eager)."""
    from get3d.nn.triplane import TriplaneSynthesis
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    return TriplaneSynthesis(32, 32, 32, [32, 32, 16, 16], plane_channels=8, geometry=True, use_noise=False,
                             device="cuda").to("cuda").train()


def test_graphed_synthesis_matches_eager_and_falls_back():
    from get3d.train.graphs import GraphedSynthesis
    syn = _small_synthesis()
    eager = {}
    GraphedSynthesis(syn)
    for step in range(3):
        g = torch.Generator(device="cuda").manual_seed(step)
        wa = torch.randn(2, syn.num_ws, 32, device="cuda", generator=g)
        wb = torch.randn(2, syn.num_ws, 32, device="cuda", generator=g)
        res = {name: _synthesis_pass(name, syn, wa, wb) for name in ("eager", "graph")}
        for x, y in zip(res["eager"], res["graph"]):
            assert_close_in_norm(y, x, 1e-5)
        with torch.no_grad():
            for p in syn.parameters():
                p.sub_(1e-3 * p.grad)
    # no-grad call (Dmain) replays the forward only; another batch size falls back to the eager forward
    with torch.no_grad():
        geo, _ = syn(wa, wb)
        geo3, _ = syn(wa[:1].repeat(3, 1, 1), wb[:1].repeat(3, 1, 1))
    assert geo.shape[0] == 2 and geo3.shape[0] == 3
    eager["eval"] = syn.eval()(wa, wb, noise_mode="none")
    torch.testing.assert_close(syn.train()(wa, wb)[1], eager["eval"][1], atol=1e-4, rtol=1e-4)


def test_graphed_d_accumulates_like_the_training_loop():
    """The loop's pattern from a fresh model: grads start as None, ``zero_grad(set_to_none=False)`` each step,
    two graphed D passes (fakes, reals) each with its own backward.  Without :func:`ensure_grads`, autograd
    adopts the graph's static gradient buffer as ``p.grad`` and the step ends with 2 × the reals' gradient."""
    import copy
    D_rgb, D_mask, cfg = _pair()
    E_rgb, E_mask = copy.deepcopy(D_rgb), copy.deepcopy(D_mask)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    res = cfg.img_resolution
    graphs = GraphedDiscriminators(D_rgb, D_mask)
    for step in range(3):
        g = torch.Generator(device="cuda").manual_seed(10 + step)
        fake = torch.randn(2, 3, res, res, device="cuda", generator=g)
        real = torch.randn(2, 3, res, res, device="cuda", generator=g)
        mask = torch.rand(2, 1, res, res, device="cuda", generator=g)
        cam = torch.rand(2, 2, device="cuda", generator=g)
        for m in (D_rgb, D_mask, E_rgb, E_mask):
            m.zero_grad(set_to_none=False)
        for sign, x in ((1.0, fake), (-1.0, real)):
            lr, lm = graphs("D", x, mask, cam)
            (torch.nn.functional.softplus(sign * lr).sum() + lm.sum()).backward()
            er, em = E_rgb(x, cam).float().reshape(-1), E_mask(mask, cam).float().reshape(-1)
            (torch.nn.functional.softplus(sign * er).sum() + em.sum()).backward()
        for p, q in zip(list(D_rgb.parameters()) + list(D_mask.parameters()),
                        list(E_rgb.parameters()) + list(E_mask.parameters())):
            torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3)
        with torch.no_grad():
            for p, q in zip(list(D_rgb.parameters()) + list(D_mask.parameters()),
                            list(E_rgb.parameters()) + list(E_mask.parameters())):
                p.sub_(1e-3 * p.grad)
                q.sub_(1e-3 * q.grad)


def test_graphed_synthesis_accumulates_like_the_training_loop():
    import copy

    from get3d.train.graphs import GraphedSynthesis
    syn = _small_synthesis()
    ref = copy.deepcopy(syn)
    GraphedSynthesis(syn)
    for step in range(3):
        g = torch.Generator(device="cuda").manual_seed(step)
        wa = torch.randn(2, syn.num_ws, 32, device="cuda", generator=g)
        wb = torch.randn(2, syn.num_ws, 32, device="cuda", generator=g)
        for m in (syn, ref):
            m.zero_grad(set_to_none=False)
            geo, tex = m(wa.clone().requires_grad_(True), wb.clone().requires_grad_(True))
            (geo.square().sum() + (tex * 3).sum()).backward()
            del geo, tex
        for p, q in zip(syn.parameters(), ref.parameters()):
            assert_close_in_norm(p.grad, q.grad, 1e-5)
        with torch.no_grad():
            for p, q in zip(syn.parameters(), ref.parameters()):
                p.sub_(1e-3 * p.grad)
                q.sub_(1e-3 * q.grad)


@pytest.mark.parametrize("paired", [False, True])
def test_graphed_mapping_matches_eager_over_the_phases(set_perf, paired):
    """Gmain-like calls (w_avg moves, gradients) and Dmain-like calls (no_grad, w_avg fixed) through the captured
    mapping (codes and mixing codes as two passes or one batch: ``perf.paired_mapping``), against an eager copy
    with the same style-mixing draws; then another batch size falls back."""
    import copy

    from get3d.nn import build_generator
    from get3d.train.graphs import GraphedMapping
    torch.backends.cuda.matmul.allow_tf32 = False
    set_perf(paired_mapping=paired)
    torch.manual_seed(0)
    G = build_generator(small_config()).to("cuda").train()
    ref = copy.deepcopy(G)
    GraphedMapping(G)
    for step in range(3):
        z = torch.randn(2, 2, G.z_dim, device="cuda")
        for update in (True, False):
            for m in (G, ref):
                m.zero_grad(set_to_none=False)
            res = []
            for m in (G, ref):
                gen = torch.Generator().manual_seed(step)
                if update:
                    ws = m.mapping(z[0], z[1], style_mixing=0.9, generator=gen, update_w_avg=True)
                    (ws[0].square().sum() + 3 * ws[1].sum()).backward()
                else:
                    with torch.no_grad():
                        ws = m.mapping(z[0], z[1], style_mixing=0.9, generator=gen, update_w_avg=False)
                res.append([w.detach().clone() for w in ws])
            for a, b in zip(*res):
                assert_close_in_norm(a, b, 1e-5)
            for a, b in ((G.mapping_tex, ref.mapping_tex), (G.mapping_geo, ref.mapping_geo)):
                assert_close_in_norm(a.w_avg, b.w_avg, 1e-5)
            if update:
                for p, q in zip(G.parameters(), ref.parameters()):
                    if q.grad is not None and q.grad.abs().sum() > 0:
                        assert_close_in_norm(p.grad, q.grad, 1e-5)
    with torch.no_grad():
        ws3 = G.mapping(torch.randn(3, G.z_dim, device="cuda"), torch.randn(3, G.z_dim, device="cuda"))
    assert ws3[0].shape[0] == 3


def _graphed_and_eager_generator(generator: str, install):
    """A small training G on CUDA with ``install`` (a graph wrapper class) on it, an eager copy, and the state of
    one const-noise synthesis pass: ``(G, ref, state)``; TF32 off so that the two agree closely."""
    import copy

    from get3d.nn import build_generator
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    G = build_generator(small_config(generator=generator)).to("cuda").train()
    ref = copy.deepcopy(G)
    install(G)
    z = torch.randn(2, G.z_dim, device="cuda")
    with torch.no_grad():
        ws = G.mapping(z, z)
        state = G.backbone.synthesize(ws[1], ws[0], noise_mode="const")
    return G, ref, state


@pytest.mark.parametrize("generator", ["unified", "separate"])
def test_graphed_grid_fields_match_eager(generator):
    """Captured DMTet grid fields (geometry query, deformation, guard, regulariser) == eager: outputs, input and
    parameter gradients over three steps; a no-grad call replays the forward; another batch falls back."""
    from get3d.train.graphs import GraphedGridFields
    G, ref, state = _graphed_and_eager_generator(generator, GraphedGridFields)
    inputs = [state[k].detach() for k in G.backbone.geometry_keys]
    for step in range(3):
        res = []
        for m in (G, ref):
            m.zero_grad(set_to_none=False)
            xs = [(t * (1 + 0.1 * step)).requires_grad_(True) for t in inputs]
            verts, sdf, reg, empty = m.grid_fields(*xs)
            (verts.square().sum() + sdf.sum() + 5 * reg + empty.sum()).backward()
            res.append([verts.detach().clone(), sdf.detach().clone(), reg.detach().clone()]
                       + [x.grad for x in xs])
        for a, b in zip(*res):
            assert_close_in_norm(a, b, 1e-5)
        for p, q in zip(G.parameters(), ref.parameters()):
            if q.grad is not None and q.grad.abs().sum() > 0:
                assert_close_in_norm(p.grad, q.grad, 1e-5)
    with torch.no_grad():
        assert_close_in_norm(G.grid_fields(*inputs)[1], ref.grid_fields(*inputs)[1], 1e-5)
        three = [t[:1].repeat(3, *([1] * (t.dim() - 1))) for t in inputs]
        assert G.grid_fields(*three)[0].shape[0] == 3


@pytest.mark.parametrize("generator", ["unified", "separate"])
def test_graphed_padded_shading_matches_eager(set_perf, generator):
    """The shading after the rasterizer (``perf.shade_graph``) replayed as a graph == eager: images, the pixel
    overflow and need, and the gradients of the rasterizer output, clip positions, vertices, texture state and
    parameters; a no-grad call replays the forward."""
    from get3d.nn.generator import resolve_camera
    from get3d.raster.render import _concat_padded
    from get3d.train.graphs import GraphedShading
    set_perf(padded_surface=True, shade_graph=True)
    G, ref, state = _graphed_and_eager_generator(generator, GraphedShading)
    with torch.no_grad():
        meshes = G.geometry(state, 2, "cuda")["meshes"]
    cam = resolve_camera((torch.tensor([0.3, 2.0]), torch.tensor([1.2, 1.0])), 2, "cuda")
    v_all, tri, ranges, pos_clip, _ = _concat_padded(meshes, cam.mvp)
    res = G.img_resolution
    rast = G.backend("cuda").rasterize(pos_clip, tri, (res, res), ranges=ranges)
    tex = [state[k].detach() for k in G.backbone.texture_keys]
    for step in range(3):
        out = []
        for m in (G, ref):
            m.zero_grad(set_to_none=False)
            xs = [(t * (1 + 0.1 * step)).requires_grad_(True) for t in tex]
            geo = [t.detach().clone().requires_grad_(True) for t in (rast, pos_clip, v_all)]
            mask, rgb, depth, hard, overflow, need = m.shade(geo[0], geo[1], tri, geo[2], *xs)
            (mask.sum() + rgb.square().sum() + depth.sum()).backward()
            out.append([mask.detach().clone(), rgb.detach().clone(), depth.detach().clone(), hard.clone(),
                        overflow.clone(), need.clone()] + [x.grad for x in xs + geo])
        for a, b in zip(*out):
            assert_close_in_norm(a.float(), b.float(), 1e-5)
        for p, q in zip(G.parameters(), ref.parameters()):
            if q.grad is not None and q.grad.abs().sum() > 0:
                assert_close_in_norm(p.grad, q.grad, 1e-5)
    with torch.no_grad():
        a = G.shade(rast, pos_clip, tri, v_all, *tex)
        b = ref.shade(rast, pos_clip, tri, v_all, *tex)
    for x, y in zip(a, b):
        assert_close_in_norm(x.float(), y.float(), 1e-5)
