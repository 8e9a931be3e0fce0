"""One writer per workspace: an exclusive lock held while an orchestrated run changes ``data/``.

Two retrainings over the same checkout would interleave writes to ``data/`` and ``dvc.lock`` and could
register a model trained on a half-rebuilt dataset.  The lock is a ``flock`` on ``.dvc/tmp/get3d.lock``
(released by the kernel when the holder dies, so a killed run never leaves it stuck).
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

_HELD: dict[Path, int] = {}  # workspaces this process holds (a nested flow of the holder re-enters)


class WorkspaceBusy(RuntimeError):
    """Another run holds the workspace (only raised with a finite ``timeout_s``)."""


def lock_path(root: str | Path) -> Path:
    return Path(root) / ".dvc" / "tmp" / "get3d.lock"


@contextmanager
def hold_workspace(root: str | Path, owner: str = "", timeout_s: float | None = None, poll_s: float = 1.0,
                   on_wait=None):
    """Hold the workspace's lock for the ``with`` block; waits (``timeout_s=None``: for ever) while another
    run holds it, calling ``on_wait(holder)`` once with what that run wrote into the lock file.  Re-entrant
    within one process (a flow that holds it may call another flow that asks for it)."""
    path = lock_path(root).resolve()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = path.read_text(errors="replace").strip()
                if timeout_s is not None and time.monotonic() - start >= timeout_s:
                    raise WorkspaceBusy(f"{root}: workspace busy (held by {holder or 'another run'}) "
                                        f"for more than {timeout_s:.0f} s") from None
                if on_wait is not None and not told:
                    on_wait(holder)
                    told = True
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"{owner or 'pid'} (pid {os.getpid()})\n".encode())
        _HELD[path] = 1
        try:
            yield
        finally:
            del _HELD[path]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
