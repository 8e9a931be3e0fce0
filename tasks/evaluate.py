from __future__ import annotations

from pathlib import Path

from prefect import task

from get3d.evaluate.reference import build_reference
from get3d.evaluate.stage import evaluate
from tasks.common import params


@task(name="reference")
def reference_task(params_path: str, dataset: str, manifest: str, out_dir: str) -> str:
    """Reference statistics of the test split (reused when the dataset is unchanged)."""
    p = params(params_path, "evaluate", "perf")
    build_reference(dataset, manifest, out_dir, p.evaluate, p.perf)
    return str(Path(out_dir))


@task(name="evaluate")
def evaluate_task(params_path: str, model: str, dataset: str, manifest: str, reference: str, out_dir: str) -> dict:
    """All configured metrics of a generator snapshot; returns the metrics dict."""
    p = params(params_path, "evaluate", "perf")
    res = evaluate(model, dataset, manifest, reference, out_dir, p.evaluate, p.perf)
    return res["metrics"]
