"""Rendering as plan → shards (fan out over any task runner / work pool) → finish."""
from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from get3d.render.stage import finish_render, plan_render, render_shard
from tasks.common import params


@task(name="render-plan")
def plan_shards_task(params_path: str, manifest: str, work_dir: str) -> list[str]:
    """Write one job file per shard of objects still missing; returns their paths."""
    plan = plan_render(manifest, params(params_path, "render").render, Path(work_dir).resolve())
    paths = []
    for job, path in plan.shard_jobs():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(job))
        paths.append(str(path))
    return paths


@task(name="render-shard")
def render_shard_task(job_path: str) -> dict:
    """Render one shard in one Blender process (on whichever worker picks it up; shared storage)."""
    job = json.loads(Path(job_path).read_text())
    report = render_shard(job, job_path)
    return {k: report[k] for k in ("returncode", "done", "failed", "missing", "crashed_on", "seconds")}


@task(name="render-finish")
def finish_task(params_path: str, manifest: str, work_dir: str, out_h5: str) -> dict:
    """Re-plan from what the shards wrote and assemble the HDF5 dataset (failure gate included)."""
    plan = plan_render(manifest, params(params_path, "render").render, Path(work_dir).resolve())
    summary = finish_render(plan, Path(out_h5).resolve())
    return {"h5": summary["h5"], "counts": summary["counts"], "dataset_hash": summary["dataset_hash"]}
