"""Register: log the challenger to the MLflow registry and apply the promotion gate (``register`` stage)."""
from __future__ import annotations

from prefect import get_run_logger, task

from get3d.dvcstage import run_stage
from get3d.register import REGISTER_FILE, run_register
from tasks.common import RETRY, params, path, read_json, tracking_in, workspace


def registry_context(tracking_cfg, result: dict) -> dict:
    """For the report: the MLflow experiment of the run, the champion now, the champion the gate compared the
    new version with and that champion's metrics (its ``get3d.metric.*`` tags)."""
    out = {"experiment_id": None, "compared_with": None, "champion_metrics": None, "current_champion": None}
    if result.get("version") is None:
        return out
    from get3d import tracking

    client = tracking.connect(tracking_cfg)
    name = tracking_cfg.model_name
    current = tracking.version_by_alias(client, name, "champion")
    out["current_champion"] = str(current.version) if current is not None else None
    out["experiment_id"] = client.get_run(result["run_id"]).info.experiment_id
    champion = (client.get_model_version(name, str(result["version"])).tags or {}).get("get3d.gate.champion_version")
    if champion in (None, "", "None"):
        return out
    metrics = {}
    for key, value in (client.get_model_version(name, champion).tags or {}).items():
        if key.startswith("get3d.metric."):
            try:
                metrics[key[len("get3d.metric."):]] = float(value)
            except ValueError:
                continue
    return out | {"compared_with": champion, "champion_metrics": metrics}


@task(name="register", **RETRY)
def register_task(root: str) -> dict:
    """Registers a new model version (alias ``challenger``) and moves ``champion`` only when the gate says so;
    returns ``register.json`` plus the metrics of the champion it was compared with."""
    ws = workspace(root)
    p = params(ws, "tracking", "export")
    run = run_stage(ws, "register", lambda: run_register(path(ws, "model"), path(ws, "metrics"), path(ws, "register"),
                                                         tracking_in(ws, p.tracking), export_dir=path(ws, "export"),
                                                         export_cfg=p.export))
    result = read_json(path(ws, "register") / REGISTER_FILE)
    result.update(registry_context(tracking_in(ws, p.tracking), result))
    get_run_logger().info("register: %s model %s version %s (MLflow run %s): %s (%s); champion is version %s",
                          "registered" if run.ran else "up to date", result.get("model_name"),
                          result.get("version"), result.get("run_id"), result.get("decision"),
                          result.get("reason"), result.get("current_champion"))
    return {"ran": run.ran, **result}
