"""Training: the ``train`` stage (resume or fresh, as ``train.resume`` and the run directory decide)."""
from __future__ import annotations

import dataclasses

from prefect import get_run_logger, task

from get3d.dvcstage import run_stage
from get3d.train.loop import Hooks
from get3d.train.stage import run_train_stage
from tasks.common import RETRY, params, path, tracking_in, workspace


def visible_gpu_count() -> int:
    """CUDA devices this worker may use (``CUDA_VISIBLE_DEVICES`` narrows them)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def processes_for(train_cfg, gpus: int):
    """``train.num_processes`` for this worker: one process per visible GPU when there are several (the
    stage launches them through torchrun), at most one per ``batch_per_gpu`` chunk of the batch; otherwise
    what params.yaml says.  (A resumable key: the run directory and ``dvc.lock`` stay valid.)"""
    n = min(gpus, train_cfg.batch_size // train_cfg.batch_per_gpu)
    if n > 1 and n != train_cfg.num_processes:
        train_cfg = dataclasses.replace(train_cfg, num_processes=n)
        train_cfg.validate("train")
    return train_cfg


# Retried: a resumed run continues from its last snapshot (train.resume: auto), so a retry loses at most
# one snapshot interval of work.
@task(name="train", **RETRY)
def train_task(root: str, gpus: int | None = None) -> dict:
    """The ``train`` stage on this worker's GPUs; returns the published generator and the run's status."""
    ws = workspace(root)
    logger = get_run_logger()
    p = params(ws, "model", "train", "perf", "tracking")
    gpus = visible_gpu_count() if gpus is None else gpus
    train_cfg = processes_for(p.train, gpus)
    logger.info("train: %d visible GPU(s), %d process(es)%s", gpus, train_cfg.num_processes,
                " (torchrun)" if train_cfg.num_processes > 1 else "")

    def on_progress(stats: dict) -> None:
        logger.info("kimg %.3f  loss G %.4f  loss D %.4f", stats.get("kimg", 0.0), stats.get("loss/G", float("nan")),
                    stats.get("loss/D", float("nan")))

    run = run_stage(ws, "train", lambda: run_train_stage(p.model, train_cfg, path(ws, "dataset"),
                                                         path(ws, "train_run"), path(ws, "model"),
                                                         Hooks(on_progress=on_progress), perf_cfg=p.perf,
                                                         tracking=tracking_in(ws, p.tracking)))
    result = run.result or {}
    if run.ran:
        logger.info("train: %s at %.3f kimg -> %s%s", result.get("status"), result.get("kimg", 0.0),
                    result.get("model"), f" (MLflow run {result['mlflow_run_id']})"
                    if result.get("mlflow_run_id") else "")
    else:
        logger.info("train: up to date, reusing %s", path(ws, "model"))
    return {"ran": run.ran, "model": str(path(ws, "model")), "status": result.get("status", "reused"),
            "mlflow_run_id": result.get("mlflow_run_id")}
