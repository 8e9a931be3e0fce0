"""The workspace lock: one writer per checkout, across processes; re-entrant in its holder."""
import multiprocessing as mp
import time

import pytest

from get3d.workspace import WorkspaceBusy, hold_workspace, lock_path


def _hold(root, seconds, started):
    with hold_workspace(root, owner="other run"):
        started.set()
        time.sleep(seconds)


def test_second_holder_waits_until_the_first_releases(tmp_path):
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), 1.5, started))
    proc.start()
    try:
        assert started.wait(30)
        with pytest.raises(WorkspaceBusy, match="held by other run"), \
                hold_workspace(tmp_path, timeout_s=0.3, poll_s=0.05):
            pass
        waits = []
        t0 = time.monotonic()
        with hold_workspace(tmp_path, owner="me", poll_s=0.05, on_wait=waits.append):
            waited = time.monotonic() - t0
            assert "me" in lock_path(tmp_path).read_text()
        assert waited > 0.5 and len(waits) == 1 and "other run" in waits[0]
    finally:
        proc.join(10)


def test_reentrant_in_one_process_and_released_by_a_dead_holder(tmp_path):
    with hold_workspace(tmp_path, owner="outer"), hold_workspace(tmp_path, timeout_s=0.1):
        pass
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), 60, started))
    proc.start()
    assert started.wait(30)
    proc.kill()
    proc.join(10)
    with hold_workspace(tmp_path, timeout_s=5, poll_s=0.05):
        pass
