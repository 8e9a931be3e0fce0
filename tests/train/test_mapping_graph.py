"""The mapping networks with style mixing as shape-static work (what ``GraphedMapping`` captures) == the eager
``GET3DGenerator.mapping``: outputs, the running means and parameter gradients, for mixing and non-mixing draws."""
import copy

import pytest
import torch
from train_helpers import tiny_configs

from get3d.nn.config import build_generator
from get3d.train.graphs import MixedMapping, mix_inputs


def _generator():
    cm, _ = tiny_configs()
    torch.manual_seed(0)
    return build_generator(cm).train()


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("update", [True, False])
@pytest.mark.parametrize("style_mixing", [0.9, 1.0, False])
def test_mixed_mapping_matches_the_eager_mapping(style_mixing, update, paired):
    """Bit for bit with two passes per network; paired (one batch of z and z2) up to the GEMM's rounding."""
    G = _generator()
    ref = copy.deepcopy(G)
    mixed = MixedMapping(G, update, paired=paired)
    tol = {"rtol": 1e-6, "atol": 1e-6} if paired else {"rtol": 0, "atol": 0}
    drew_mix = drew_plain = False
    for seed in range(10):
        z_tex, z_geo = torch.randn(3, G.z_dim), torch.randn(3, G.z_dim)
        want = ref.mapping(z_tex, z_geo, style_mixing=style_mixing, update_w_avg=update,
                           generator=torch.Generator().manual_seed(seed))
        z2, mix = mix_inputs(G, 3, style_mixing, torch.Generator().manual_seed(seed))
        drew_mix |= bool(mix.any())
        drew_plain |= not bool(mix.any(1).all())          # a network that kept its own ws
        got = mixed(z_tex, z_geo, z2, mix)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **tol)
        for a, b in ((G.mapping_tex, ref.mapping_tex), (G.mapping_geo, ref.mapping_geo)):
            torch.testing.assert_close(a.w_avg, b.w_avg, **tol)
        for ws, m in ((got, G), (want, ref)):
            m.zero_grad()
            (ws[0].square().sum() + 3 * ws[1].sum()).backward()
        for p, q in zip(G.parameters(), ref.parameters()):
            if q.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-5 if paired else 1e-6, atol=1e-6 if paired else 1e-7)
    assert drew_mix == bool(style_mixing)
    assert drew_plain or style_mixing == 1.0


def test_a_failed_capture_names_the_part_and_leaves_torch_as_found():
    from get3d.train import graphs
    before = torch.cuda.graph
    with pytest.raises(RuntimeError, match="CUDA graph capture of the probe failed.*cuda_graphs: false"):
        graphs._capture_or_explain("the probe", torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    assert torch.cuda.graph is before


def test_map_pair_checks_its_inputs():
    G = _generator()
    with pytest.raises(ValueError, match=r"z and z2 must both be \[B, "):
        G.mapping_tex.map_pair(torch.randn(3, G.z_dim), torch.randn(2, G.z_dim))
