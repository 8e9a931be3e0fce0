"""kill -9 at random points + resume == uninterrupted run (bit-identical, deterministic CPU mode)."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import torch
from train_helpers import child_env, cli_args, load_state, run_cli

from get3d.train.checkpoint import list_snapshots

TOTAL_KIMG = 0.024  # 6 steps of batch 4


def _assert_same_state(a: dict, b: dict) -> None:
    for net in ("G", "D_rgb", "D_mask", "G_ema"):
        assert a[net].keys() == b[net].keys()
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs"
    for opt in ("opt_G", "opt_D"):
        sa, sb = a[opt]["state"], b[opt]["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for k in sa[i]:
                assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), f"{opt}[{i}].{k} differs"
    assert a["counters"]["cur_nimg"] == b["counters"]["cur_nimg"]
    assert a["counters"]["step"] == b["counters"]["step"]


def test_kill9_resume_is_bit_identical(tiny_dataset, tmp_path):
    ref = run_cli(tiny_dataset, tmp_path / "ref", total_kimg=TOTAL_KIMG)
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_state = load_state(list_snapshots(tmp_path / "ref" / "checkpoints", "state")[0][1])

    run_dir = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    cmd = [sys.executable, "-m", "get3d.train.loop", *cli_args(tiny_dataset, run_dir, total_kimg=TOTAL_KIMG)]
    finished = False
    while kills < 3 and not finished:
        before = {p for _, p in list_snapshots(run_dir / "checkpoints", "state")}
        proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Wait until this process has written a new state (so every run makes progress), then kill -9 it at a
        # random moment of the following step(s) — possibly in the middle of a snapshot write.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            now = {p for _, p in list_snapshots(run_dir / "checkpoints", "state")}
            if now - before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        else:
            finished = True
        proc.wait(timeout=30)
        proc.stderr.close()
    assert kills >= 2, "runs finished before they could be killed: the test did not exercise resume"
    final = run_cli(tiny_dataset, run_dir, total_kimg=TOTAL_KIMG)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resumed from" in final.stderr
    got = load_state(list_snapshots(run_dir / "checkpoints", "state")[0][1])
    _assert_same_state(got, ref_state)
    # the stats stream stays single-valued in kimg after the resumes
    import json
    kimgs = [json.loads(line)["nimg"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert kimgs == sorted(set(kimgs))
