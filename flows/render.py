"""Render flow: assets, then the render stage with one ``render-shard`` task per shard of objects."""
from __future__ import annotations

from prefect import flow

from flows.common import exclusive_workspace
from tasks.assets import assets_task
from tasks.render import render_stage


@flow(name="get3d-render", log_prints=True)
def render_flow(root: str = ".", rebuild_assets: bool = False) -> dict:
    """Build/refresh the asset manifest and render what is missing; returns the dataset summary.

    Objects already rendered with the same mesh, cameras and settings are reused (per-object results in
    ``data/render_work``), so after a new asset only that object is rendered.
    """
    with exclusive_workspace(root) as ws:
        assets = assets_task(str(ws), force=rebuild_assets)
        dataset = render_stage(ws, force=False)
        return {"assets": assets, **dataset}
