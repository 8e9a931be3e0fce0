"""Config validation, lazy-reg Adam scaling, EMA schedule, sampler, checkpoint format, atomic writes."""
from __future__ import annotations

import pytest
import torch

from get3d.schema import ConfigError, parse_section
from get3d.train import checkpoint as ckpt
from get3d.train.config import TrainConfig
from get3d.train.distributed import DistributedError, World, rank_chunks
from get3d.train.ema import ema_beta
from get3d.train.sampler import global_indices


def test_config_defaults_match_public_recipe():
    c = TrainConfig()
    g, d = c.adam_kwargs("G"), c.adam_kwargs("D")
    assert g["lr"] == pytest.approx(0.0016) and d["lr"] == pytest.approx(0.002 * 16 / 17)
    assert d["betas"][1] == pytest.approx(0.99 ** (16 / 17)) and d["betas"][0] == 0.0
    assert c.r1_interval == 16 and c.sdf_reg_weight == 0.01 and c.style_mixing_prob == 0.9


@pytest.mark.parametrize("data,match", [
    ({"precision": "fp16"}, "train.precision"),
    ({"batch_size": 6, "batch_per_gpu": 4}, "train.batch_size"),
    ({"r1_interval": 0}, "train.r1_interval"),
    ({"bogus": 1}, "train.bogus"),
    ({"betas": [0.0, 1.5]}, "train.betas"),
])
def test_config_errors_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_section(TrainConfig, data, "train")


def test_ema_schedule():
    # half-life 10 kimg at batch 32 = 312.5 steps whatever the batch
    b32 = ema_beta(10**9, 32, 10.0, 0.0)
    b4 = ema_beta(10**9, 4, 10.0, 0.0)
    assert b32 ** 312.5 == pytest.approx(0.5) and b4 ** 312.5 == pytest.approx(0.5)
    assert ema_beta(1000, 32, 10.0, 0.05) < b32  # ramp-up shortens the half-life early on
    assert ema_beta(0, 32, 10.0, 0.05) == 0.0


def test_ema_update_averages_parameters_and_copies_buffers():
    import copy

    from get3d.train.ema import make_ema, update_ema
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    G_ema = make_ema(G)
    before = copy.deepcopy(G_ema.state_dict())
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p))
        G[1].running_mean.add_(1.0)
    update_ema(G_ema, G, 0.9)
    for name, p in G.named_parameters():
        expected = 0.9 * before[name] + 0.1 * p.detach()
        torch.testing.assert_close(G_ema.state_dict()[name], expected, atol=1e-6, rtol=1e-6)
    assert torch.equal(G_ema[1].running_mean, G[1].running_mean)
    # the pairs matched on the first call serve the next ones; another source module is matched afresh
    for src in (G, copy.deepcopy(G).requires_grad_(False)):
        with torch.no_grad():
            for p in src.parameters():
                p.add_(1.0)
        before = copy.deepcopy(G_ema.state_dict())
        update_ema(G_ema, src, 0.5)
        for name, p in src.named_parameters():
            torch.testing.assert_close(G_ema.state_dict()[name], 0.5 * before[name] + 0.5 * p, atol=1e-6, rtol=1e-6)


def test_sampler_is_seeded_and_resumable():
    full = global_indices(10, 3, 0, 35)
    assert full[:10] != list(range(10)) and sorted(full[:10]) == list(range(10))
    assert global_indices(10, 3, 17, 18) == full[17:35]
    assert global_indices(10, 4, 0, 10) != full[:10]


def test_rank_chunks_cover_any_world_size():
    for ws in (1, 2, 3, 5, 8):
        got = [c for r in range(ws) for c in rank_chunks(8, World(r, ws, r))]
        assert got == list(range(8))
    with pytest.raises(DistributedError, match="chunk"):
        rank_chunks(2, World(0, 3, 0))


def test_checkpoint_detects_damage(tmp_path):
    p = ckpt.save_checkpoint(tmp_path / "state-000000000004.pt", "state", 4, {"w": torch.arange(1000.0)})
    h, obj = ckpt.load_checkpoint(p, "state")
    assert h["nimg"] == 4 and torch.equal(obj["w"], torch.arange(1000.0))
    raw = p.read_bytes()
    cases = {"truncated": raw[: len(raw) // 2], "checksum mismatch": raw[:-10] + b"0123456789",
             "bad magic": b"X" + raw[1:], "truncated: only": raw[:5]}
    for reason, data in cases.items():
        p.write_bytes(data)
        with pytest.raises(ckpt.CorruptCheckpointError, match=reason) as ei:
            ckpt.load_checkpoint(p)
        assert str(p) in str(ei.value)
    with pytest.raises(ckpt.CheckpointError, match="expected 'network'"):
        ckpt.load_checkpoint(ckpt.save_checkpoint(p, "state", 4, {}), "network")


def test_resume_picks_newest_complete(tmp_path, caplog):
    for n in (4, 8, 12):
        ckpt.save_checkpoint(tmp_path / ckpt.snapshot_name("state", n), "state", n, {"n": n})
    (tmp_path / ".state-000000000016.pt.abc.tmp").write_bytes(b"partial write")  # killed mid-write
    path, header, payload = ckpt.find_resume_state(tmp_path)
    assert payload["n"] == 12
    (tmp_path / ckpt.snapshot_name("state", 12)).write_bytes(b"GET3DCKPT")
    path, header, payload = ckpt.find_resume_state(tmp_path)
    assert payload["n"] == 8 and "state-000000000012.pt" in caplog.text
    assert [n for n, _ in ckpt.list_snapshots(tmp_path, "state")] == [12, 8, 4]
    ckpt.prune_snapshots(tmp_path, "state", keep=1)
    assert [n for n, _ in ckpt.list_snapshots(tmp_path, "state")] == [12]


def test_rng_capture_restore_roundtrip():
    import random

    import numpy as np
    g = torch.Generator().manual_seed(5)
    st = ckpt.capture_rng({"g": g})
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    ckpt.restore_rng(st, {"g": g})
    b = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    assert a == b


def test_fused_adam_and_tf32_knobs_touch_cuda_only():
    c = TrainConfig(step_check="per_phase")        # deferred (the default) fuses Adam everywhere: test_step_check
    assert c.tf32 is True and c.fused_adam is True
    assert "fused" not in c.adam_kwargs("G") and "fused" not in c.adam_kwargs("D", "cpu")
    assert c.adam_kwargs("D", "cuda")["fused"] is True
    off = parse_section(TrainConfig, {"fused_adam": False, "tf32": False, "step_check": "per_phase"}, "train")
    assert "fused" not in off.adam_kwargs("G", "cuda")
    from get3d.train.loop import _set_tf32
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    _set_tf32(off, torch.device("cpu"))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_ensure_grads_keeps_static_gradient_buffers_out_of_param_grad():
    """CPU model of a graphed backward (gradients returned in one static buffer, as make_graphed_callables
    does): two backward passes per step must accumulate. Without ensure_grads autograd adopts the buffer."""
    from get3d.train.graphs import ensure_grads

    def run(use_ensure: bool) -> torch.Tensor:
        w = torch.nn.Parameter(torch.zeros(3))
        static = torch.zeros(3)

        class Replay(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, p):
                ctx.x = x
                return (x * p).sum()

            @staticmethod
            def backward(ctx, g):
                static.copy_(g * ctx.x)        # "replay": overwrite the static buffer
                return None, static.detach()

        for _step in range(2):
            if w.grad is not None:
                w.grad.zero_()                  # zero_grad(set_to_none=False)
            for x in (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])):
                if use_ensure:
                    ensure_grads([w])
                Replay.apply(x, w).backward()
        return w.grad.clone()

    torch.testing.assert_close(run(True), torch.tensor([11.0, 22.0, 33.0]))
    assert not torch.equal(run(False), torch.tensor([11.0, 22.0, 33.0]))  # the failure mode it prevents


def test_graph_capture_failure_names_the_switch(monkeypatch):
    from get3d.train import graphs

    def boom(*a, **k):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", boom)
    with pytest.raises(RuntimeError, match=r"discriminator passes failed .*train\.cuda_graphs: false"):
        graphs._capture_or_explain("the discriminator passes", torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
