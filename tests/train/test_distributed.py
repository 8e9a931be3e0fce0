"""train.num_processes=2 (the stage launches torchrun, gloo on CPU) == one process; dead rank → all exit."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import MODEL_OVERRIDES, TRAIN_OVERRIDES, child_env, cli_args, load_state, run_cli

from get3d.train.checkpoint import list_snapshots

HERE = Path(__file__).resolve().parent


def _torchrun(nproc: int, script_args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--max_restarts=0", *script_args]
    return subprocess.run(cmd, check=False, env=child_env(), capture_output=True, text=True, timeout=timeout)


def _params_file(path: Path, **train_kw) -> Path:
    train = {**TRAIN_OVERRIDES, **train_kw}
    train.pop("dist_timeout_s", None)
    path.write_text(yaml.safe_dump({"model": dict(MODEL_OVERRIDES), "train": train}, sort_keys=False))
    return path


@pytest.mark.parametrize("step_check", ["per_phase", "deferred"])
def test_two_ranks_match_one_process(tiny_dataset, tmp_path, step_check):
    """`get3d train` with train.num_processes=2: the stage launches torchrun (gloo), every rank runs the stage
    function, rank 0 publishes; the result equals one process with the same global batch (with the step check
    on the host or on the device: every rank gates and books the same all-reduced values)."""
    kw = {"total_kimg": 0.012, "snapshot_kimg": 0.0, "step_check": step_check}  # 3 steps (R1 on steps 0 and 2)
    one = run_cli(tiny_dataset, tmp_path / "one", **kw)
    assert one.returncode == 0, one.stderr[-3000:]
    params = _params_file(tmp_path / "params.yaml", num_processes=2, **kw)
    two = subprocess.run([sys.executable, "-m", "get3d.cli", "train", "--params", str(params), "--data",
                          str(tiny_dataset), "--run-dir", str(tmp_path / "two"), "--model-out",
                          str(tmp_path / "model" / "generator.pt")],
                         check=False, env=child_env(), capture_output=True, text=True, timeout=300)
    log = two.stdout + two.stderr
    assert two.returncode == 0, log[-4000:]
    assert "train: 2 processes (torch.distributed.run)" in log                     # the CLI's stage call launched
    assert "train stage: rank 0 of 2" in log and "train stage: rank 1 of 2" in log  # each rank ran the stage
    a = load_state(list_snapshots(tmp_path / "one" / "checkpoints", "state")[0][1])
    b = load_state(list_snapshots(tmp_path / "two" / "checkpoints", "state")[0][1])
    assert b["world_size"] == 2 and a["world_size"] == 1
    for net in ("G", "D_rgb", "D_mask", "G_ema"):
        for k, v in a[net].items():
            if k.endswith("w_avg") or not v.is_floating_point():
                continue  # w_avg is a per-rank running mean (rank 0's is kept); not a trained parameter
            torch.testing.assert_close(b[net][k], v, rtol=1e-4, atol=1e-5, msg=f"{net}.{k}")
    # only rank 0 wrote: one set of files, the generator published, the run's config records every choice
    assert len(list_snapshots(tmp_path / "two" / "checkpoints", "state")) == 1
    newest = list_snapshots(tmp_path / "two" / "checkpoints", "network")[0][1]
    assert (tmp_path / "model" / "generator.pt").read_bytes() == newest.read_bytes()
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["world_size"] == 2 and config["train"]["num_processes"] == 2 and "perf" in config
    assert (tmp_path / "one" / "generator.pt").is_file()  # `python -m get3d.train.loop` publishes too


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_dead_rank_stops_all_ranks(tiny_dataset, tmp_path, mode):
    """Rank 1 fails (exception) or wedges (hangs) at step 1: every rank exits, with an error, within the timeout."""
    args = [str(HERE / "fault_runner.py"), mode, *cli_args(tiny_dataset, tmp_path / "run", total_kimg=0.04,
                                                            dist_timeout_s=15.0)]
    t0 = time.monotonic()
    res = _torchrun(2, args, timeout=240)
    dt = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert res.returncode != 0
    if mode == "raise":
        assert "injected failure on rank 1" in out
    else:
        # rank 0 is blocked in a collective with the wedged rank: the gloo timeout must fire
        assert "injected hang on rank 1" in out
        assert ("Timed out" in out or "timed out" in out or "timeout" in out.lower()), out[-3000:]
    assert dt < 200, f"ranks took {dt:.0f}s to stop"
