"""torchrun with two CPU processes (gloo) == one process with the same global batch; dead rank → all exit."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import child_env, cli_args, load_state, run_cli

from get3d.train.checkpoint import list_snapshots

HERE = Path(__file__).resolve().parent


def _torchrun(nproc: int, script_args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--max_restarts=0", *script_args]
    return subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout)


def test_two_ranks_match_one_process(tiny_dataset, tmp_path):
    kw = dict(total_kimg=0.012, snapshot_kimg=0.0)  # 3 steps (R1 on steps 0 and 2)
    one = run_cli(tiny_dataset, tmp_path / "one", **kw)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun(2, ["-m", "get3d.train.loop", *cli_args(tiny_dataset, tmp_path / "two", **kw)])
    assert two.returncode == 0, (two.stdout + two.stderr)[-4000:]
    a = load_state(list_snapshots(tmp_path / "one" / "checkpoints", "state")[0][1])
    b = load_state(list_snapshots(tmp_path / "two" / "checkpoints", "state")[0][1])
    assert b["world_size"] == 2 and a["world_size"] == 1
    for net in ("G", "D_rgb", "D_mask", "G_ema"):
        for k, v in a[net].items():
            if k.endswith("w_avg") or not v.is_floating_point():
                continue  # w_avg is a per-rank running mean (rank 0's is kept); not a trained parameter
            torch.testing.assert_close(b[net][k], v, rtol=1e-4, atol=1e-5, msg=f"{net}.{k}")
    # only rank 0 wrote: one set of files
    assert len(list_snapshots(tmp_path / "two" / "checkpoints", "state")) == 1


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
