"""Train flow for the GPU pool: train -> reference -> evaluate -> export -> register (with the gate)."""
from __future__ import annotations

from prefect import flow

from flows.common import exclusive_workspace
from tasks.evaluate import evaluate_task, reference_task
from tasks.export import export_task
from tasks.register import register_task
from tasks.train import train_task


@flow(name="get3d-train", log_prints=True)
def train_flow(root: str = ".", gpus: int | None = None) -> dict:
    """Train (resume or fresh, as params.yaml says) on this worker's GPUs and register the result.

    ``gpus``: processes to train with (default: the GPUs this worker sees; several -> torchrun).
    A failure anywhere before ``register`` ends the run without touching the registry.
    """
    with exclusive_workspace(root) as ws:
        train = train_task(str(ws), gpus)
        reference = reference_task(str(ws))
        evaluation = evaluate_task(str(ws))
        export = export_task(str(ws))
        register = register_task(str(ws))
        return {"train": train, "reference": reference, "evaluate": evaluation, "export": export,
                "register": register}
