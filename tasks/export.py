"""Export: sample meshes (GLB/OBJ), previews and the export report of the published generator."""
from __future__ import annotations

from get3d.export.stage import run_export
from prefect import get_run_logger, task

from get3d.dvcstage import run_stage
from tasks.common import RETRY, params, path, read_json, workspace


@task(name="export", **RETRY)
def export_task(root: str) -> dict:
    ws = workspace(root)
    cfg = params(ws, "export").export
    run = run_stage(ws, "export", lambda: run_export(path(ws, "model"), path(ws, "export"), cfg))
    report = read_json(path(ws, "export") / "export.json")
    get_run_logger().info("export: %s -> %s", "written" if run.ran else "up to date", path(ws, "export"))
    return {"ran": run.ran, "export": str(path(ws, "export")), "report": report}
