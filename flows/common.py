"""Workspace lock for flows: one orchestrated writer per checkout, visible in the flow's log."""
from __future__ import annotations

from contextlib import contextmanager

from prefect import get_run_logger
from prefect.runtime import flow_run

from get3d.workspace import hold_workspace
from tasks.common import workspace


@contextmanager
def exclusive_workspace(root: str):
    """Hold ``root``'s workspace lock; a second run over the same checkout waits here (and says so)."""
    ws = workspace(root)
    logger = get_run_logger()
    owner = f"flow run {flow_run.get_name()} ({flow_run.get_id()})"
    with hold_workspace(ws, owner=owner,
                        on_wait=lambda holder: logger.warning("workspace %s is busy (%s); waiting", ws, holder)):
        yield ws
