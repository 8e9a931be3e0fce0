"""Export: sample meshes (GLB/OBJ), previews and the export report of the published generator."""
from __future__ import annotations

from prefect import get_run_logger, task

from get3d.dvcstage import run_stage
from get3d.export.stage import run_export
from tasks.common import RETRY, params, path, read_json, workspace


@task(name="export", **RETRY)
def export_task(root: str) -> dict:
    """Textured meshes, previews, turntables, gallery and the export FID of the published generator."""
    ws = workspace(root)
    cfg = params(ws, "export").export
    run = run_stage(ws, "export", lambda: run_export(path(ws, "model"), path(ws, "export"), cfg,
                                                     dataset_h5=path(ws, "dataset"),
                                                     reference_dir=path(ws, "reference")))
    report = read_json(path(ws, "export") / "export.json")
    get_run_logger().info("export: %s -> %s; %s", "written" if run.ran else "up to date", path(ws, "export"),
                          ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in sorted((report.get("metrics") or {}).items())))
    return {"ran": run.ran, "export": str(path(ws, "export")), "report": report}
