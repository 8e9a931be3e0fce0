"""Evaluation: the ``reference`` statistics of the test split and the ``evaluate`` stage's metrics."""
from __future__ import annotations

from prefect import get_run_logger, task

from get3d.dvcstage import run_stage
from get3d.evaluate.reference import build_reference
from get3d.evaluate.stage import METRICS_FILE, evaluate
from tasks.common import RETRY, params, path, read_json, tracking_in, workspace


@task(name="reference", **RETRY)
def reference_task(root: str) -> dict:
    """Reference statistics (reused while the dataset and the counts are unchanged)."""
    ws = workspace(root)
    p = params(ws, "evaluate", "perf")
    run = run_stage(ws, "reference", lambda: build_reference(path(ws, "dataset"), path(ws, "manifest"),
                                                             path(ws, "reference"), p.evaluate, p.perf))
    get_run_logger().info("reference: %s", "computed" if run.ran else "up to date")
    return {"ran": run.ran, "reference": str(path(ws, "reference"))}


@task(name="evaluate", **RETRY)
def evaluate_task(root: str) -> dict:
    """All configured metrics of the published generator; returns ``metrics.json``'s numbers."""
    ws = workspace(root)
    p = params(ws, "evaluate", "perf", "tracking")
    run = run_stage(ws, "evaluate", lambda: evaluate(path(ws, "model"), path(ws, "dataset"), path(ws, "manifest"),
                                                     path(ws, "reference"), path(ws, "metrics"), p.evaluate,
                                                     p.perf, tracking=tracking_in(ws, p.tracking)))
    metrics = read_json(path(ws, "metrics") / METRICS_FILE)
    get_run_logger().info("evaluate: %s%s; %s", "computed" if run.ran else "up to date",
                          f" (MLflow run {run.result['mlflow_run_id']})" if run.ran and run.result.get("mlflow_run_id")
                          else "",
                          ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())
                                    if isinstance(v, float) and not k.endswith("_time_s")))
    return {"ran": run.ran, "metrics": metrics}
