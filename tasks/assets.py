"""Assets: find new/changed source items, then (re)build the manifest as the ``assets`` DVC stage."""
from __future__ import annotations

from prefect import get_run_logger, task

from get3d.assets.changes import scan_changes
from get3d.assets.stage import build_assets
from get3d.dvcstage import run_stage
from tasks.common import RETRY, params, path, read_json, workspace


@task(name="detect-asset-changes", **RETRY)
def detect_changes_task(root: str) -> dict:
    """New / changed / removed items of the asset source against the manifest the dataset was built from."""
    ws = workspace(root)
    changes = scan_changes(params(ws, "assets").assets, path(ws, "manifest"), ws / ".dvc" / "tmp" / "asset-scan")
    get_run_logger().info("asset changes: %d added, %d changed, %d removed (of %d items)", len(changes["added"]),
                          len(changes["changed"]), len(changes["removed"]), changes["total"])
    return changes


@task(name="assets", **RETRY)
def assets_task(root: str, force: bool = False) -> dict:
    """The ``assets`` stage; ``force`` rebuilds it when the source changed outside DVC's view."""
    ws = workspace(root)
    p = params(ws, "assets", "render")  # render.untextured: what the render stage will do with untextured items
    run = run_stage(ws, "assets", lambda: build_assets(p.assets, path(ws, "assets"), untextured=p.render.untextured),
                    force=force)
    manifest = read_json(path(ws, "manifest"))
    get_run_logger().info("assets: %s, %d items", "rebuilt" if run.ran else "up to date", manifest["counts"]["ok"])
    return {"ran": run.ran, "manifest": str(path(ws, "manifest")), "counts": manifest["counts"]}
