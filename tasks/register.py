"""Register: log the challenger to the MLflow registry and apply the promotion gate (``register`` stage)."""
from __future__ import annotations

from get3d.register import run_register
from prefect import get_run_logger, task

from get3d.dvcstage import run_stage
from tasks.common import RETRIES, RETRY_DELAYS_S, params, path, read_json, workspace

REGISTER_FILE = "register.json"


@task(name="register", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS_S)
def register_task(root: str) -> dict:
    """Registers a new model version and moves ``champion`` only if the gate says so; returns its decision."""
    ws = workspace(root)
    p = params(ws, "tracking")
    run = run_stage(ws, "register", lambda: run_register(path(ws, "model"), path(ws, "metrics"),
                                                         path(ws, "export"), path(ws, "register"), p.tracking))
    result = run.result if run.ran else read_json(path(ws, "register") / REGISTER_FILE)
    get_run_logger().info("register: %s model %s version %s (MLflow run %s): %s; champion is version %s",
                          "registered" if run.ran else "up to date", result.get("model_name"),
                          result.get("version"), result.get("run_id"), result.get("decision"),
                          result.get("champion_version"))
    return {"ran": run.ran, **result}
