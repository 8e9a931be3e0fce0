"""In-process runs of the real (tiny) G / D: losses move, outputs + provenance, hooks, corrupt-checkpoint
fallback, non-finite guard."""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import yaml
from train_helpers import REPO, tiny_configs

from get3d.train import checkpoint as ckpt
from get3d.train import losses as losses_mod
from get3d.train.loop import Hooks, NonFiniteError, train


@pytest.fixture(scope="module")
def base_run(tiny_dataset, tmp_path_factory):
    """3 steps, a state + network snapshot after every step, previews every tick, hooks recorded."""
    run_dir = tmp_path_factory.mktemp("base")
    cm, ct = tiny_configs(total_kimg=0.012, image_snapshot_ticks=1, deterministic=False)
    seen = {"progress": [], "snap": []}
    hooks = Hooks(on_progress=seen["progress"].append, on_snapshot=lambda p, k: seen["snap"].append((p.name, k)))
    torch.manual_seed(0)
    res = train(cm, ct, tiny_dataset, run_dir, hooks)
    return run_dir, res, seen, cm, ct


def test_losses_move_and_run_outputs(base_run):
    run_dir, res, seen, _cm, ct = base_run
    assert res["status"] == "completed" and res["cur_nimg"] == 12 and res["step"] == 3
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["nimg"] for r in stats] == [4, 8, 12]
    for r in stats:
        for k in ("loss/G", "loss/D", "loss/sdf_reg", "timing/sec_per_kimg", "timing/img_per_sec"):
            assert math.isfinite(r[k]), k
    # at init D outputs ~0 → each logistic term ≈ ln 2; after updates the losses must have moved
    assert abs(stats[0]["loss/D"] - stats[-1]["loss/D"]) > 1e-4
    assert abs(stats[0]["loss/G"] - stats[-1]["loss/G"]) > 1e-4
    assert "loss/r1" in stats[0]  # R1 ran on step 0
    # weights moved away from the initial ones; G_ema differs from G (averaging)
    first = ckpt.load_checkpoint(run_dir / "checkpoints" / ckpt.snapshot_name("state", 4), "state")[1]
    last = ckpt.load_checkpoint(res["state"], "state")[1]
    moved = [k for k in last["G"] if last["G"][k].is_floating_point() and not torch.equal(last["G"][k], first["G"][k])]
    assert len(moved) > 10
    assert any(not torch.equal(last["G"][k], last["G_ema"][k]) for k in last["G"] if last["G"][k].is_floating_point())
    # provenance
    prov = json.loads((run_dir / "run.json").read_text())
    assert prov["git"]["sha"] and len(prov["git"]["sha"]) == 40
    assert prov["dataset"]["sha256"] and prov["seed"] == ct.seed
    for lib in ("python", "torch", "numpy", "cuda"):
        assert lib in prov["versions"]
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["train"]["batch_size"] == 4 and cfg["model"]["tet_res"] == 8
    # dvc-plots files: kimg,<metric>
    lines = (run_dir / "plots" / "loss_D.csv").read_text().splitlines()
    assert lines[0] == "kimg,loss_D" and len(lines) == 4
    # every training curve dvc.yaml plots is written, with the column it names
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    wanted = {(f, col) for p in plots for spec in p.values() for f, col in spec["y"].items()
              if f.startswith("data/train/plots/")}
    assert len(wanted) == 5
    for f, col in wanted:
        header = (run_dir / "plots" / f.rsplit("/", 1)[1]).read_text().splitlines()[0]
        assert header == f"kimg,{col}", f
    assert len(list((run_dir / "images").glob("fakes-*.png"))) == 3
    # hooks
    assert [r["nimg"] for r in seen["progress"]] == [4, 8, 12]
    assert ("state-000000000012.pt", "state") in seen["snap"] and ("network-000000000012.pt", "network") in seen["snap"]


def test_inference_snapshot_generates(base_run):
    _run_dir, res, _, cm, _ = base_run
    net = ckpt.load_inference(res["network"])
    assert net["model_config"]["img_resolution"] == cm.img_resolution and net["cur_nimg"] == 12
    assert net["provenance"]["git"]["sha"]
    from get3d.nn import ModelConfig, build_generator
    from get3d.schema import parse_section
    G = build_generator(parse_section(ModelConfig, net["model_config"], "model"))
    G.load_state_dict(net["G_ema"])
    from get3d import cameras
    c2w = cameras.camera_to_world(torch.tensor([0.5]), torch.tensor([1.2])).float()
    with torch.no_grad():
        out = G(torch.randn(1, cm.z_dim), torch.randn(1, cm.z_dim), c2w, noise_mode="const")
    assert out["img"].shape == (1, 4, cm.img_resolution, cm.img_resolution)
    assert torch.isfinite(out["img"]).all()


def test_corrupt_newest_state_falls_back(base_run, tiny_dataset, tmp_path, caplog):
    import shutil
    run_dir = tmp_path / "copy"
    shutil.copytree(base_run[0], run_dir)
    newest = run_dir / "checkpoints" / ckpt.snapshot_name("state", 12)
    newest.write_bytes(newest.read_bytes()[:-100])                      # truncated
    middle = run_dir / "checkpoints" / ckpt.snapshot_name("state", 8)
    raw = bytearray(middle.read_bytes()); raw[-5000] ^= 0xFF; middle.write_bytes(bytes(raw))  # bit flip
    with pytest.raises(ckpt.CorruptCheckpointError, match="truncated"):
        ckpt.load_checkpoint(newest)
    with pytest.raises(ckpt.CorruptCheckpointError, match="checksum mismatch"):
        ckpt.load_checkpoint(middle)
    cm, ct = tiny_configs(total_kimg=0.008, deterministic=False)
    with caplog.at_level(logging.WARNING, logger="get3d.train"):
        res = train(cm, ct, tiny_dataset, run_dir)
    text = caplog.text
    assert "state-000000000012.pt" in text and "state-000000000008.pt" in text and "falling back" in text
    assert "resuming from" in text and "state-000000000004.pt" in text
    assert res["status"] == "completed" and res["cur_nimg"] == 8
    # stats were cut back to the resumed point and continued from there
    nimgs = [json.loads(line)["nimg"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert nimgs == [4, 8]
    # every state corrupt → a clear error, never a silent restart from scratch
    for _, p in ckpt.list_snapshots(run_dir / "checkpoints", "state"):
        p.write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match="no usable training state"):
        train(cm, ct, tiny_dataset, run_dir)


def test_abort_hook_writes_state(tiny_dataset, tmp_path):
    cm, ct = tiny_configs(total_kimg=1.0, snapshot_kimg=0.0, deterministic=False, batch_size=2, batch_per_gpu=2)
    calls = {"n": 0}

    def should_abort():
        calls["n"] += 1
        return calls["n"] >= 2

    res = train(cm, ct, tiny_dataset, tmp_path / "r", Hooks(should_abort=should_abort))
    assert res["status"] == "aborted" and res["cur_nimg"] == 4
    assert ckpt.load_checkpoint(res["state"], "state")[1]["counters"]["cur_nimg"] == 4


def _nan_after(monkeypatch, start_call: int, stop_call: int | None = None):
    """Real D, but its RGB logits become NaN on calls [start_call, stop_call) of run_D."""
    orig = losses_mod.GET3DLoss.run_D
    n = {"c": 0}

    def run_D(self, *a, **kw):
        lr, lm = orig(self, *a, **kw)
        n["c"] += 1
        if n["c"] >= start_call and (stop_call is None or n["c"] < stop_call):
            lr, lm = (lr * float("nan"), lm) if lr is not None else (lr, lm * float("nan"))
        return lr, lm

    monkeypatch.setattr(losses_mod.GET3DLoss, "run_D", run_D)


def test_nonfinite_guard_stops_and_keeps_last_good_state(tiny_dataset, tmp_path, monkeypatch):
    # run_D calls per step (1 chunk): Gmain 1, Dmain 2, Dreg 2 (one per discriminator) on even steps → step 0
    # uses calls 1..5.
    _nan_after(monkeypatch, start_call=6)
    cm, ct = tiny_configs(total_kimg=0.04, max_nonfinite_steps=2, deterministic=False, batch_size=2,
                          batch_per_gpu=2, snapshot_kimg=0.002)
    run_dir = tmp_path / "r"
    with pytest.raises(NonFiniteError) as ei:
        train(cm, ct, tiny_dataset, run_dir)
    msg = str(ei.value)
    assert "2 consecutive steps with non-finite losses" in msg
    assert "state-000000000002.pt" in msg          # the last good state is named...
    states = ckpt.list_snapshots(run_dir / "checkpoints", "state")
    assert [n for n, _ in states] == [2]           # ...and nothing newer was written
    st = ckpt.load_checkpoint(states[0][1], "state")[1]
    assert all(torch.isfinite(v).all() for v in st["G"].values() if v.is_floating_point())


def test_transient_nonfinite_step_is_skipped(tiny_dataset, tmp_path, monkeypatch):
    _nan_after(monkeypatch, start_call=6, stop_call=7)  # one NaN: step 1's Gmain only
    cm, ct = tiny_configs(total_kimg=0.006, max_nonfinite_steps=2, deterministic=False, batch_size=2,
                          batch_per_gpu=2, kimg_per_tick=0.002, snapshot_kimg=0.0)
    res = train(cm, ct, tiny_dataset, tmp_path / "r")
    assert res["status"] == "completed"
    stats = [json.loads(line) for line in (tmp_path / "r" / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["nonfinite/steps_skipped"] == 1
    st = ckpt.load_checkpoint(res["state"], "state")[1]
    assert all(torch.isfinite(v).all() for v in st["G"].values() if v.is_floating_point())


def test_sanitize_grads():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([float("nan"), float("inf"), -float("inf"), 3e6])
    assert losses_mod.sanitize_grads([p], 1e5) == 1
    assert p.grad.tolist() == [0.0, 1e5, -1e5, 1e5]


def test_sanitize_grads_fast_path_matches_per_tensor():
    """All-finite lists take the fused path (clamp only); mixed lists count exactly the bad tensors."""
    g = torch.Generator().manual_seed(3)
    ps = [torch.nn.Parameter(torch.zeros(n)) for n in (5, 7, 3)]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 1e5
    ps.append(torch.nn.Parameter(torch.zeros(2)))  # no grad: skipped
    want = [p.grad.clamp(-1e5, 1e5) for p in ps[:3]]
    assert losses_mod.sanitize_grads(ps, 1e5) == 0
    for p, w in zip(ps, want):
        assert torch.equal(p.grad, w)
    ps[1].grad[2] = float("nan")
    ps[2].grad[0] = float("inf")
    assert losses_mod.sanitize_grads(ps, 1e5) == 2
    assert ps[1].grad[2] == 0 and ps[2].grad[0] == 1e5 and torch.equal(ps[0].grad, want[0])
    assert losses_mod.sanitize_grads([], 1e5) == 0


def test_grads_finite_flag_is_read_with_the_loss_sums():
    """The flag the loop reads in its one sync per phase, and sanitize_grads trusting it (clamp only)."""
    ps = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
    assert losses_mod.grads_finite_flag(ps) is None  # no gradients yet
    ps[0].grad = torch.tensor([1.0, -3e6, 2.0])
    flag = losses_mod.grads_finite_flag(ps)
    assert flag.dtype == torch.bool and flag.ndim == 0 and bool(flag)
    assert losses_mod.sanitize_grads(ps, 1e5, all_finite=True) == 0
    assert ps[0].grad.tolist() == [1.0, -1e5, 2.0]
    ps[1].grad = torch.tensor([float("nan"), 1.0])
    assert not bool(losses_mod.grads_finite_flag(ps))
    assert losses_mod.sanitize_grads(ps, 1e5, all_finite=False) == 1
    assert ps[1].grad.tolist() == [0.0, 1.0]
