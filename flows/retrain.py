"""Scheduled retraining: detect new/changed assets, re-render only those, train, evaluate, register a
challenger, promote it only through the gate, and publish a markdown report as a Prefect artifact.

Inputs that did not change are not recomputed: every stage asks ``dvc.lock`` first (``get3d.dvcstage``),
so a run on an unchanged workspace reuses everything and registers nothing new.
"""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.common import exclusive_workspace
from flows.render import render_flow
from flows.report import retraining_markdown
from flows.train import train_flow
from tasks.assets import detect_changes_task

ARTIFACT_KEY = "get3d-retraining"


@flow(name="get3d-retrain", log_prints=True)
def retraining_flow(root: str = ".", gpus: int | None = None) -> dict:
    """One retraining cycle over the checkout at ``root``; returns the decision and what ran."""
    logger = get_run_logger()
    with exclusive_workspace(root) as ws:
        changes = detect_changes_task(str(ws))
        dataset = render_flow(str(ws), rebuild_assets=changes["any"])
        trained = train_flow(str(ws), gpus)
        register = trained["register"]
        markdown = retraining_markdown(changes=changes, dataset=dataset, train=trained["train"],
                                       metrics=trained["evaluate"]["metrics"], register=register,
                                       tracking_uri=register.get("tracking_uri"))
        create_markdown_artifact(key=ARTIFACT_KEY, markdown=markdown,
                                 description=f"decision: {register.get('decision')}")
        logger.info("retraining: %s (model version %s, champion %s)", register.get("decision"),
                    register.get("version"), register.get("current_champion"))
        return {"changes": changes, "rendered": dataset["rendered"], "trained": trained["train"]["ran"],
                "register": register}
