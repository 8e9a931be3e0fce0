"""Dmain as one discriminator pass over fakes and reals (perf.merged_d_pass) == the two separate passes."""
from __future__ import annotations

import pytest
import torch
from train_helpers import tiny_configs

from get3d.nn.layers import MinibatchStdLayer
from get3d.train.losses import (
    FakeInputs,
    GET3DLoss,
    RealInputs,
    interleave_chunks,
    merge_groups,
    split_chunks,
)
from get3d.train.models import build_networks


@pytest.mark.parametrize("n,g", [(4, 4), (8, 4), (8, 2), (6, 3), (3, 1)])
def test_interleaved_chunks_keep_minibatch_std_groups(n, g):
    torch.manual_seed(0)
    a, b = torch.randn(n, 5, 4, 4), torch.randn(n, 5, 4, 4) * 3 + 1
    ab = interleave_chunks(a, b, g)
    assert ab.shape == (2 * n, 5, 4, 4)
    a2, b2 = split_chunks(ab, g)
    assert torch.equal(a2, a) and torch.equal(b2, b)
    mbstd = MinibatchStdLayer(group_size=g, num_channels=1)
    merged = split_chunks(mbstd(ab), g)
    torch.testing.assert_close(merged[0], mbstd(a), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(merged[1], mbstd(b), rtol=1e-6, atol=1e-6)


def test_merge_groups_refuses_what_would_change_the_function():
    class D:
        def __init__(self, size):
            self.epilogue = type("E", (), {"mbstd": MinibatchStdLayer(size, 1) if size is not None else None})()

    assert merge_groups([D(4), D(4)], 8) == 4
    assert merge_groups([D(None), D(None)], 3) == 1    # no minibatch-std: any order works
    assert merge_groups([D(4)], 2) is None              # group larger than the chunk (it would be clipped to 2)
    assert merge_groups([D(4)], 6) is None              # chunk not divisible by the group
    assert merge_groups([D(0)], 4) is None              # whole-batch groups would mix fakes and reals
    assert merge_groups([D(2), D(4)], 8) is None


def _dmain(nets, cfg, merged: bool, set_perf, device="cpu", graphs=None, steps: int = 1):
    """Stats and D gradients of ``steps`` Dmain calls (graphs replay from the second call on)."""
    set_perf(merged_d_pass=merged)
    g = torch.Generator().manual_seed(3)
    n = 4
    cam, c2w = nets.sample_cameras(n, g)
    fake = FakeInputs(*(t.to(device) for t in (torch.randn(n, nets.z_dim, generator=g),
                                                torch.randn(n, nets.z_dim, generator=g), cam, c2w)), 5)
    rcam, _ = nets.sample_cameras(n, g)
    real = RealInputs(*(t.to(device) for t in (torch.rand(n, 3, 32, 32, generator=g) * 2 - 1,
                                                (torch.rand(n, 1, 32, 32, generator=g) > 0.5).float(), rcam)))
    nets.G.requires_grad_(False)
    loss = GET3DLoss(nets, cfg, torch.device(device), graphs)
    for _ in range(steps):
        for D in (nets.D_rgb, nets.D_mask):
            D.zero_grad(set_to_none=False)
        torch.manual_seed(11)  # the generator's noise inputs
        stats = loss.accumulate("Dmain", real, fake, norm=float(n))
    grads = [p.grad.clone() for D in (nets.D_rgb, nets.D_mask) for p in D.parameters()]
    return stats, grads


def test_merged_discriminator_pass_equals_two_passes(set_perf):
    cm, ct = tiny_configs(batch_size=4, batch_per_gpu=4)
    torch.manual_seed(0)
    nets = build_networks(cm, torch.device("cpu"), "torch")
    assert merge_groups((nets.D_rgb, nets.D_mask), 4) == cm.mbstd_group_size == 4
    s_sep, g_sep = _dmain(nets, ct, False, set_perf)
    s_mrg, g_mrg = _dmain(nets, ct, True, set_perf)
    assert s_sep.keys() == s_mrg.keys()
    for k in s_sep:
        torch.testing.assert_close(s_mrg[k], s_sep[k], rtol=1e-5, atol=1e-6, msg=k)
    assert len(g_sep) == len(g_mrg) and any(g.abs().sum() > 0 for g in g_sep)
    for a, b in zip(g_sep, g_mrg):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
def test_merged_pass_under_cuda_graphs_equals_eager_separate_passes(set_perf):
    """The graphed merged pass (one capture at twice the chunk) == the eager two-pass reference on CUDA."""
    from get3d.train.graphs import GraphedDiscriminators
    cm, ct = tiny_configs(batch_size=4, batch_per_gpu=4)
    torch.manual_seed(0)
    nets = build_networks(cm, torch.device("cuda"), "torch")
    # Plain float32 on both sides. Not monkeypatch: torch.backends.cuda.matmul resolves allow_tf32 through
    # __getattr__, which monkeypatch's undo takes for a missing attribute and then fails to delete.
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        s_ref, g_ref = _dmain(nets, ct, False, set_perf, "cuda")
        graphs = GraphedDiscriminators(nets.D_rgb, nets.D_mask)
        s_gr, g_gr = _dmain(nets, ct, True, set_perf, "cuda", graphs, steps=3)  # capture, then replays
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev
    for k in s_ref:
        torch.testing.assert_close(s_gr[k], s_ref[k], rtol=1e-4, atol=1e-5, msg=k)
    for a, b in zip(g_ref, g_gr):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


def test_flexicubes_dev_loss_enters_the_generator_loss():
    """With FlexiCubes, Gmain adds flexicubes_dev_weight * L_dev (DMTet has no such term)."""
    import dataclasses

    cm, ct = tiny_configs(batch_size=2, batch_per_gpu=2)
    torch.manual_seed(0)
    nets = build_networks(dataclasses.replace(cm, iso_surface="flexicubes", tet_res=8), torch.device("cpu"), "torch")
    g = torch.Generator().manual_seed(3)
    cam, c2w = nets.sample_cameras(2, g)
    fake = FakeInputs(torch.randn(2, nets.z_dim, generator=g), torch.randn(2, nets.z_dim, generator=g), cam, c2w, 5)

    def gmain(weight: float):
        loss = GET3DLoss(nets, dataclasses.replace(ct, flexicubes_dev_weight=weight), torch.device("cpu"))
        nets.G.zero_grad(set_to_none=True)
        torch.manual_seed(11)
        stats = loss.accumulate("Gmain", None, fake, norm=2.0)
        return stats, torch.cat([p.grad.flatten() for p in nets.G.parameters() if p.grad is not None])

    (off, g_off), (on, g_on) = gmain(0.0), gmain(0.5)
    assert off["G/flexicubes_dev"] > 0
    torch.testing.assert_close(on["G/flexicubes_dev"], off["G/flexicubes_dev"])
    torch.testing.assert_close(on["G/total"] - off["G/total"], 0.5 * off["G/flexicubes_dev"], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(g_on, g_off)  # the term reaches the generator's parameters

    cm_dmtet, _ = tiny_configs()
    dmtet = build_networks(cm_dmtet, torch.device("cpu"), "torch")
    stats = GET3DLoss(dmtet, ct, torch.device("cpu")).accumulate("Gmain", None, fake, norm=2.0)
    assert "G/flexicubes_dev" not in stats


def test_r1_one_discriminator_at_a_time_equals_the_joint_penalty():
    """Dreg differentiates each discriminator's R1 on its own (lower peak memory); the stats and gradients are
    those of the joint penalty gamma/2 * (|∇D_rgb|² + |∇D_mask|²) written out in one graph."""
    cm, ct = tiny_configs(batch_size=4, batch_per_gpu=4)
    torch.manual_seed(0)
    nets = build_networks(cm, torch.device("cpu"), "torch")
    g = torch.Generator().manual_seed(3)
    cam, _ = nets.sample_cameras(4, g)
    real = RealInputs(torch.rand(4, 3, 32, 32, generator=g) * 2 - 1,
                      (torch.rand(4, 1, 32, 32, generator=g) > 0.5).float(), cam)
    Ds = (nets.D_rgb, nets.D_mask)

    def d_grads():
        return [p.grad.clone() for D in Ds for p in D.parameters()]

    for D in Ds:
        D.zero_grad(set_to_none=False)
    stats = GET3DLoss(nets, ct, torch.device("cpu")).accumulate("Dreg", real, None, norm=4.0, gain=16.0)
    split = d_grads()

    for D in Ds:
        D.zero_grad(set_to_none=False)
    x, m = real.image.clone().requires_grad_(True), real.mask.clone().requires_grad_(True)
    lr, lm = nets.D_rgb(x, cam).reshape(-1), nets.D_mask(m, cam).reshape(-1)
    gx, gm = torch.autograd.grad([lr.sum(), lm.sum()], [x, m], create_graph=True)
    pen_rgb, pen_mask = gx.square().sum(dim=[1, 2, 3]), gm.square().sum(dim=[1, 2, 3])
    total = (((pen_rgb + pen_mask) * (ct.r1_gamma / 2)).sum() + 0.0 * (lr.sum() + lm.sum())) / 4.0
    (total * 16.0).backward()
    joint = d_grads()

    torch.testing.assert_close(stats["D/r1_rgb"], pen_rgb.detach().sum())
    torch.testing.assert_close(stats["D/r1_mask"], pen_mask.detach().sum())
    torch.testing.assert_close(stats["D/reg_total"], total.detach() * 4.0)
    assert any(gr.abs().sum() > 0 for gr in joint)
    for a, b in zip(joint, split):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
