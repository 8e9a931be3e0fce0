"""Deferred step checks (train.step_check: deferred): the device gates each optimizer step, the host books the
results later; same training as per_phase when everything is finite, skipped phases otherwise."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from test_train import _nan_after
from train_helpers import tiny_configs

from get3d import perf
from get3d.train import checkpoint as ckpt
from get3d.train import loop
from get3d.train import losses as losses_mod
from get3d.train.config import TrainConfig
from get3d.train.loop import NonFiniteError, train
from get3d.train.step_check import DeferredChecks


def _adam(n: int = 3):
    p = torch.nn.Parameter(torch.ones(n))
    p.grad = torch.full((n,), 0.5)
    return p, torch.optim.Adam([p], lr=0.1, fused=True)


@pytest.mark.parametrize("case", ["finite", "nan_loss", "overflow"])
def test_gate_skips_the_step_on_the_device(case):
    p, opt = _adam()
    checks = DeferredChecks()
    keys = ["G/adv", "surface/need_faces", "surface/overflow"]
    vec = torch.tensor([1.5, 40.0, 1.0 if case == "overflow" else 0.0], dtype=torch.float64)
    if case == "nan_loss":
        vec[0] = float("nan")
    ok = checks.gate(opt, "Gmain", keys, vec)
    opt.step()
    assert ok.ndim == 0 and bool(ok) == (case == "finite")
    if case == "finite":
        assert torch.all(p.detach() < 1) and float(opt.state[p]["step"]) == 1
    else:   # parameters, moments and the step count untouched
        assert torch.equal(p.detach(), torch.ones(3)) and float(opt.state[p]["step"]) == 0
        assert torch.count_nonzero(opt.state[p]["exp_avg"]) == 0
    checks.end_step(7, 28)
    (res,) = checks.results()
    assert (res.step, res.nimg) == (7, 28)
    (ph,) = res.phases
    assert ph.phase == "Gmain" and list(ph.losses) == ["G/adv"] and ph.stepped == (case == "finite")
    assert ph.surface == {"surface/need_faces": 40.0, "surface/overflow": 1.0 if case == "overflow" else 0.0}
    assert res.finite == (case != "nan_loss")


def test_gate_needs_an_optimizer_that_can_skip():
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(TypeError, match="Adam\\(fused=True\\)"):
        DeferredChecks().gate(torch.optim.Adam([p]), "Dmain", ["x"], torch.zeros(1))


def test_results_keep_the_step_order_and_phases():
    checks = DeferredChecks(max_pending=1)
    assert checks.results() == [] and checks.results(drain=True) == []
    for step in range(3):
        for phase in ("Gmain", "Dmain"):
            _, opt = _adam()
            checks.gate(opt, phase, ["a", "b"], torch.tensor([step, -step], dtype=torch.float64))
        checks.end_step(step, 4 * (step + 1))
    got = checks.results()
    assert [r.step for r in got] == [0, 1, 2] and checks.pending == 0      # CPU values are there at once
    assert [[p.phase for p in r.phases] for r in got] == [["Gmain", "Dmain"]] * 3
    assert got[2].phases[1].losses == {"a": 2.0, "b": -2.0}
    checks.end_step(3, 16)                 # a step without gated phases sends nothing
    assert checks.results() == []
    with pytest.raises(ValueError, match="max_pending"):
        DeferredChecks(max_pending=-1)


@pytest.mark.parametrize("clamp", [1e5, 0.0])
def test_gradients_are_sanitized_on_the_device_like_on_the_host(clamp):
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (7,), (2, 2, 2), (4,)]
    grads = [torch.randn(s, generator=g) * 3e5 for s in shapes]
    grads[0] = grads[0].reshape(3, 5).t()          # a non-contiguous gradient is written in place too
    grads[1][2], grads[2][0, 1, 1], grads[3][0] = float("nan"), float("inf"), -float("inf")
    want = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    got = [torch.nn.Parameter(torch.zeros(s)) for s in shapes] + [torch.nn.Parameter(torch.zeros(1))]  # no grad
    for p, q, gr in zip(want, got, grads):
        p.grad, q.grad = gr.clone(), gr.clone()
    assert not got[0].grad.is_contiguous()
    losses_mod.sanitize_grads(want, clamp)
    before = [q.grad for q in got[:4]]
    losses_mod.sanitize_grads_on_device(got, clamp)
    for p, q, b in zip(want, got, before):
        assert q.grad is b and torch.equal(q.grad, p.grad)
    losses_mod.sanitize_grads_on_device([], clamp)


def test_deferred_uses_fused_adam_everywhere():
    assert TrainConfig(step_check="deferred").adam_kwargs("G", "cpu")["fused"] is True
    assert "fused" not in TrainConfig(step_check="per_phase").adam_kwargs("G", "cpu")
    assert TrainConfig().step_check == "deferred"
    assert TrainConfig(fused_adam=False, step_check="deferred").adam_kwargs("D", "cuda")["fused"] is True


def _run(tiny_dataset, run_dir, **train_kw):
    cm, ct = tiny_configs(**{"total_kimg": 0.012, **train_kw})
    torch.manual_seed(0)
    res = train(cm, ct, tiny_dataset, run_dir)
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    return res, stats, ckpt.load_checkpoint(res["state"], "state")[1]


def test_deferred_run_matches_the_per_phase_run(tiny_dataset, tmp_path, monkeypatch):
    """All finite: the same losses and weights (fused Adam's rounding aside), and no phase reads the host."""
    _, stats_a, state_a = _run(tiny_dataset, tmp_path / "per_phase")
    booked = []
    real_check = loop._check_nonfinite
    monkeypatch.setattr(loop, "_accumulate_phase", lambda *a, **k: pytest.fail("a phase read the host"))
    monkeypatch.setattr(loop, "_check_nonfinite",
                        lambda r, st, ok, step, nimg: (booked.append((step, st.step)), real_check(r, st, ok, step,
                                                                                                     nimg)))
    res, stats_b, state_b = _run(tiny_dataset, tmp_path / "deferred", step_check="deferred")
    assert res["status"] == "completed" and len(stats_b) == len(stats_a) == 3
    # step k is booked when step k+1 starts (st.step == k+1 then) or at its tick's end: never inside step k
    assert [s for s, _ in booked] == [0, 1, 2] and all(now == s + 1 for s, now in booked)
    for a, b in zip(stats_a, stats_b):
        assert a.keys() == b.keys()
        for k in ("loss/G", "loss/D", "loss/sdf_reg", "loss/r1"):
            if k in a:
                assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])), (k, a[k], b[k])
    for net in ("G", "D_rgb", "D_mask"):
        for k, v in state_a[net].items():
            if v.is_floating_point():
                torch.testing.assert_close(state_b[net][k], v, rtol=1e-4, atol=1e-5, msg=f"{net}.{k}")
    steps = {float(s["step"]) for s in state_b["opt_G"]["state"].values()}
    assert steps == {3.0}                 # every Gmain stepped


def test_deferred_resume_equals_the_continuous_run(tiny_dataset, tmp_path):
    _, _, whole = _run(tiny_dataset, tmp_path / "whole", step_check="deferred", total_kimg=0.016)
    _run(tiny_dataset, tmp_path / "cut", step_check="deferred", total_kimg=0.008)
    _, _, resumed = _run(tiny_dataset, tmp_path / "cut", step_check="deferred", total_kimg=0.016)
    assert resumed["counters"]["step"] == whole["counters"]["step"] == 4
    for net in ("G", "D_rgb", "D_mask", "G_ema"):
        for k, v in whole[net].items():
            assert torch.equal(resumed[net][k], v), f"{net}.{k}"


def test_deferred_nonfinite_guard_stops_and_keeps_last_good_state(tiny_dataset, tmp_path, monkeypatch):
    _nan_after(monkeypatch, start_call=6)           # step 0 is finite, every later step is not
    cm, ct = tiny_configs(total_kimg=0.04, max_nonfinite_steps=2, deterministic=False, batch_size=2,
                          batch_per_gpu=2, snapshot_kimg=0.002, step_check="deferred")
    with pytest.raises(NonFiniteError, match="2 consecutive steps with non-finite losses") as ei:
        train(cm, ct, tiny_dataset, tmp_path / "r")
    assert "state-000000000002.pt" in str(ei.value)
    states = ckpt.list_snapshots(tmp_path / "r" / "checkpoints", "state")
    assert [n for n, _ in states] == [2]
    st = ckpt.load_checkpoint(states[0][1], "state")[1]
    assert all(torch.isfinite(v).all() for v in st["G"].values() if v.is_floating_point())


def test_deferred_transient_nonfinite_phase_is_skipped_on_the_device(tiny_dataset, tmp_path, monkeypatch):
    _nan_after(monkeypatch, start_call=6, stop_call=7)  # one NaN: step 1's Gmain
    res, stats, state = _run(tiny_dataset, tmp_path / "r", total_kimg=0.006, max_nonfinite_steps=2,
                             deterministic=False, batch_size=2, batch_per_gpu=2, kimg_per_tick=0.002,
                             snapshot_kimg=0.0, step_check="deferred")
    assert res["status"] == "completed" and stats[-1]["nonfinite/steps_skipped"] == 1
    assert {float(s["step"]) for s in state["opt_G"]["state"].values()} == {2.0}   # 3 steps, one G step skipped
    assert {float(s["step"]) for s in state["opt_D"]["state"].values()} == {3.0 + 2.0}  # 3 Dmain + 2 Dreg
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())


def test_deferred_padded_overflow_skips_the_phase_and_grows(tiny_dataset, tmp_path, caplog):
    """A capacity far too small: the overflowing phases are skipped on the device (never stepped on a cut
    surface), the capacity grows, and the run goes on with every later phase stepping."""
    with caplog.at_level(logging.INFO, logger="get3d.train"), perf.using(padded_surface=True, surface_capacity=8,
                                                                       pixel_capacity=0.01):
        res, stats, state = _run(tiny_dataset, tmp_path / "r", total_kimg=0.016, step_check="deferred")
    skipped = [r.getMessage() for r in caplog.records if "skipped: a sample needed" in r.getMessage()]
    assert skipped and "(capacity 8 / 8 / 11)" in skipped[0]
    assert res["status"] == "completed" and stats[-1]["surface/skipped_phases"] == len(skipped)
    assert state["counters"]["surface_skips"] == len(skipped)
    g_skips = sum(m.startswith("Gmain") for m in skipped)
    assert {float(s["step"]) for s in state["opt_G"]["state"].values()} == {4.0 - g_skips}
    assert g_skips < 4 and stats[-1]["nonfinite/steps_skipped"] == 0
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------------------ CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_results_wait_for_their_copy_only_when_asked():
    checks = DeferredChecks(max_pending=1)
    p = torch.nn.Parameter(torch.ones(3, device="cuda"))
    p.grad = torch.ones(3, device="cuda")
    opt = torch.optim.Adam([p], lr=0.1, fused=True)
    vec = torch.tensor([2.0], device="cuda", dtype=torch.float64)

    def step(i):
        checks.gate(opt, "Gmain", ["a"], vec)
        opt.step()
        checks.end_step(i, 4 * (i + 1))

    # A first step loads the kernels and the pinned buffer: CUDA's lazy module loading and a fresh pinned
    # allocation wait for the device, and the sync debug mode does not see either.
    step(0)
    assert len(checks.results(drain=True)) == 1
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.cuda._sleep(200_000_000)          # ~0.1 s of GPU work ahead of the gate
        step(1)
        assert checks.results() == [] and checks.pending == 1     # not arrived, and nothing waited for it
    finally:
        torch.cuda.set_sync_debug_mode(0)
    (res,) = checks.results(drain=True)
    assert res.step == 1 and res.phases[0].losses == {"a": 2.0} and res.phases[0].stepped
    assert float(opt.state[p]["step"]) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_deferred_training_reads_nothing_per_phase(tiny_dataset, tmp_path, monkeypatch):
    """Real CUDA training (nvdiffrast when present): no host sync is issued from the loop inside a step."""
    import warnings
    backend = "nvdiffrast" if _has_nvdiffrast() else "torch"
    cm, ct = tiny_configs(total_kimg=0.016, device="cuda", backend=backend, deterministic=False,
                          kimg_per_tick=1.0, snapshot_kimg=0.0, step_check="deferred")
    cm = cm.with_overrides(raster_backend=backend)
    real_step, calls, sites = loop._train_step, [], []

    def step(r, st):
        calls.append(st.step)
        if len(calls) != 3:
            return real_step(r, st)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                real_step(r, st)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        sites.extend(f"{w.filename}:{w.lineno}" for w in rec if "synchroniz" in str(w.message))

    monkeypatch.setattr(loop, "_train_step", step)
    res = train(cm, ct, tiny_dataset, tmp_path / "r")
    assert res["status"] == "completed" and len(calls) == 4
    assert not [s for s in sites if "/train/loop.py:" in s or "/train/step_check.py:" in s], sites


def _has_nvdiffrast() -> bool:
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        return False
    return True
