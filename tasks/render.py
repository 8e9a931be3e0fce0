"""Rendering: the ``render`` stage's library function, with each shard of objects as its own Prefect task.

``render_dataset`` owns planning, the retry of objects a crashed Blender process left behind and the
assembly of the HDF5 dataset; the flow only hands it an executor (``run_shards``) that maps one
``render-shard`` task per shard, so shards show up (and can be retried) one by one.
"""
from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from get3d.dvcstage import StageRun, run_stage
from get3d.render.stage import render_dataset, render_shard
from tasks.common import RETRY, params, path, read_json


@task(name="render-shard", **RETRY)
def render_shard_task(job: dict, job_path: str) -> dict:
    """One Blender process over one shard of objects (the job carries its timeout); its per-object results
    land in the job's ``out_dir``."""
    report = render_shard(job, Path(job_path))
    get_run_logger().info("shard %s: %d rendered, %d failed, exit %s", Path(job_path).name, len(report["done"]),
                          len(report["failed"]), report["returncode"])
    return report


def prefect_shard_executor(jobs: list[tuple[dict, Path]]) -> list[dict]:
    """``run_shards`` of :func:`render_dataset`: the attempt's shards as mapped ``render-shard`` tasks."""
    return render_shard_task.map([job for job, _ in jobs], [str(p) for _, p in jobs]).result()


def render_stage(ws: Path, force: bool = False) -> dict:
    """The ``render`` stage (DVC-checked) with shards fanned out as tasks; returns the dataset summary."""
    cfg = params(ws, "render").render
    run: StageRun = run_stage(
        ws, "render", lambda: render_dataset(path(ws, "manifest"), path(ws, "dataset"), cfg, path(ws, "render_work"),
                                             progress=False, run_shards=prefect_shard_executor),
        force=force)
    info = read_json(path(ws, "dataset").with_suffix(".json"))
    summary = {"ran": run.ran, "h5": str(path(ws, "dataset")), "counts": info["counts"],
               "dataset_hash": info["dataset_hash"],
               "rendered": run.result.get("rendered", 0) if run.ran else 0,
               "reused": run.result.get("skipped_existing", 0) if run.ran else info["counts"].get("rendered", 0)}
    get_run_logger().info("render: %s; %d object(s) rendered now, %d reused", "ran" if run.ran else "up to date",
                          summary["rendered"], summary["reused"])
    return summary
