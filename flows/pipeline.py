"""The whole pipeline as one Prefect flow: the same library calls DVC makes, orchestrated.

Rendering fans out: one task per shard of objects (``render-shard``), so a work pool of CPU (or GPU)
workers sharing the data folder renders in parallel; training runs as one task (on the GPU pool).
Paths are relative to ``root`` (the project checkout), exactly like the DVC stages.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from get3d.render.stage import render_dataset
from tasks.assets import assets_task
from tasks.common import params
from tasks.evaluate import evaluate_task, reference_task
from tasks.render import prefect_shard_executor
from tasks.train import train_task


@flow(name="get3d-render")
def render_flow(params_path: str, manifest: str, work_dir: str, out_h5: str) -> dict:
    """The render stage (get3d.render.stage.render_dataset) with its shards fanned out as Prefect tasks."""
    summary = render_dataset(Path(manifest).resolve(), Path(out_h5).resolve(), params(params_path, "render").render,
                             Path(work_dir).resolve(), progress=False, run_shards=prefect_shard_executor)
    get_run_logger().info("render: %d object(s) in %d shard(s)", summary["counts"]["rendered"], summary["shards"])
    return {"h5": summary["h5"], "counts": summary["counts"], "dataset_hash": summary["dataset_hash"]}


@flow(name="get3d-pipeline")
def pipeline(params_path: str = "params.yaml", root: str = ".", evaluate: bool = True) -> dict:
    """assets → render → train → (reference stats, evaluate); returns the produced paths and metrics."""
    r = Path(root).resolve()
    params = str((r / params_path) if not Path(params_path).is_absolute() else Path(params_path))
    data = r / "data"
    manifest = assets_task(params, str(data / "assets"))
    dataset = render_flow(params, manifest, str(data / "render_work"), str(data / "dataset" / "dataset.h5"))
    model = train_task(params, dataset["h5"], str(data / "train"), str(data / "model" / "generator.pt"))
    out = {"manifest": manifest, "dataset": dataset["h5"], "model": model}
    if evaluate:
        ref = reference_task(params, dataset["h5"], manifest, str(data / "reference"))
        out["metrics"] = evaluate_task(params, model, dataset["h5"], manifest, ref, str(data / "metrics"))
    return out
