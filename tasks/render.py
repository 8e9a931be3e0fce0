"""Rendering: one task per shard of objects, fanned out by the library's render stage (retries, checks, gate)."""
from __future__ import annotations

from pathlib import Path

from prefect import task

from get3d.render.stage import render_shard


@task(name="render-shard")
def render_shard_task(job: dict, job_path: str) -> dict:
    """Render one shard in one Blender process (on whichever worker picks it up; shared storage)."""
    return render_shard(job, Path(job_path))


def prefect_shard_executor(jobs: list[tuple[dict, Path]]) -> list[dict]:
    """``run_shards`` of :func:`get3d.render.stage.render_dataset`: the attempt's shards as mapped tasks."""
    return render_shard_task.map([job for job, _ in jobs], [str(path) for _, path in jobs]).result()
