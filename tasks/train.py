from __future__ import annotations

from prefect import get_run_logger, task

from get3d.train.loop import Hooks
from get3d.train.stage import run_train_stage
from tasks.common import params


@task(name="train")
def train_task(params_path: str, dataset: str, run_dir: str, model_out: str) -> str:
    """Train or resume; progress goes to the Prefect log. Returns the published generator snapshot."""
    logger = get_run_logger()
    p = params(params_path, "model", "train", "perf")

    def on_progress(stats: dict) -> None:
        logger.info("kimg %.3f  loss G %.4f  loss D %.4f", stats.get("kimg", 0.0), stats.get("loss/G", float("nan")),
                    stats.get("loss/D", float("nan")))

    res = run_train_stage(p.model, p.train, dataset, run_dir, model_out, Hooks(on_progress=on_progress), p.perf)
    return res["model"]
