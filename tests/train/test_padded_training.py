"""Training with fixed-capacity surfaces (perf.padded_surface): the same run as with exactly sized meshes, also
when the capacity is far too small at first (with train.step_check per_phase each overflowing phase is undone and
re-run larger; the deferred check's skip is tested in test_step_check.py)."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from train_helpers import tiny_configs

from get3d import perf
from get3d.train import checkpoint as ckpt
from get3d.train.loop import train


def _run(tiny_dataset, run_dir, **changes):
    cm, ct = tiny_configs(total_kimg=0.012, deterministic=True, step_check="per_phase")
    torch.manual_seed(0)
    with perf.using(**changes):
        res = train(cm, ct, tiny_dataset, run_dir)
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    state = ckpt.load_checkpoint(res["state"], "state")[1]
    return res, stats, state


@pytest.fixture(scope="module")
def exact_run(tiny_dataset, tmp_path_factory):
    """The exactly sized run every padded run is compared with: (stats, state)."""
    _, stats, state = _run(tiny_dataset, tmp_path_factory.mktemp("exact"), padded_surface=False)
    return stats, state


def test_padded_run_matches_the_exact_run_through_overflows(tiny_dataset, exact_run, tmp_path, caplog):
    stats_a, state_a = exact_run
    with caplog.at_level(logging.INFO, logger="get3d.train"):
        res, stats_b, state_b = _run(tiny_dataset, tmp_path / "padded", padded_surface=True, surface_capacity=8,
                                     pixel_capacity=0.01)
    reruns = [r.getMessage() for r in caplog.records if "re-running the phase" in r.getMessage()]
    assert reruns and "(capacity 8 / 8 / 11)" in reruns[0]          # the tiny start overflowed and grew
    assert res["status"] == "completed" and len(stats_b) == len(stats_a) == 3
    for a, b in zip(stats_a, stats_b):
        for k in ("loss/G", "loss/D", "loss/sdf_reg", "loss/r1"):
            if k in a:
                assert abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(a[k])), (k, a[k], b[k])
        # the surface sums are bookkeeping, not losses; the re-runs are counted (cumulative, like the skips)
        assert [k for k in b if k.startswith("surface/")] == ["surface/reruns"]
        assert not any(k.startswith("surface/") for k in a)
    assert stats_b[-1]["surface/reruns"] == len(reruns) and stats_b[0]["surface/reruns"] >= 1
    assert state_b["counters"]["surface_reruns"] == len(reruns)     # kept in the state, so a resume goes on
    # same weights and the same running w_avg (restored before each re-run)
    for k, v in state_a["G"].items():
        if v.is_floating_point():
            torch.testing.assert_close(state_b["G"][k], v, rtol=1e-4, atol=1e-6, msg=k)


def test_padded_capacity_fits_down_from_a_generous_start(tiny_dataset, exact_run, tmp_path, caplog):
    """A start far above the need shrinks after the first phase (the need comes with the loss read) and the run
    is still the exact one; with fitting off the capacity stays."""
    stats_a = exact_run[0]
    with caplog.at_level(logging.DEBUG, logger="get3d.train"):
        _, stats_b, _ = _run(tiny_dataset, tmp_path / "fit", padded_surface=True, surface_capacity=100_000)
    fitted = [r.getMessage() for r in caplog.records if "fitted to" in r.getMessage()]
    assert fitted and "capacity 100000 / 100000 /" in fitted[0]
    for a, b in zip(stats_a, stats_b):
        for k in ("loss/G", "loss/D", "loss/sdf_reg"):
            if k in a:
                assert abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(a[k])), (k, a[k], b[k])
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="get3d.train"):
        _run(tiny_dataset, tmp_path / "nofit", padded_surface=True, surface_capacity=100_000, fit_capacity=False)
    assert not [r for r in caplog.records if "fitted to" in r.getMessage()]
