"""The flows under ``prefect_test_harness`` (no server): a full retraining on a tiny workspace, then failure
injection around the real tasks — a transient failure is retried and the flow completes; a failing evaluation
ends the run without touching the registry or ``champion``."""
from __future__ import annotations

import json

import pytest
import yaml
from flow_workspace import dvc_status, make_workspace, tiny_params, write_params

pytestmark = [pytest.mark.render, pytest.mark.slow]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def retrained(repo_root, tmp_path_factory, harness):
    """A tiny workspace after one retraining flow run (the module's tests continue from it)."""
    import os

    from get3d.render.stage import render_python

    try:
        py = render_python()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"render environment missing: {exc}")
    ws, env = make_workspace(repo_root, tmp_path_factory.mktemp("flows") / "ws", tiny_params(repo_root))
    os.environ["GET3D_RENDER_PYTHON"] = str(py)
    from flows.retrain import retraining_flow

    out = retraining_flow(root=str(ws))
    return ws, env, out


def _registry(ws):
    from get3d.config import load_params
    from get3d.tracking import connect

    cfg = load_params(ws / "params.yaml", only=["tracking"]).tracking
    client = connect(cfg)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{cfg.model_name}'"))
    champion = int(client.get_model_version_by_alias(cfg.model_name, "champion").version)
    return versions, champion


def _task_runs(flow_state, name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details
                                                                                            .flow_run_id])),
                                     task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[name])))


def _bump_evaluate_seed(ws):
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["evaluate"]["seed"] += 1
    write_params(ws, params)


def test_retraining_flow_registers_and_leaves_dvc_clean(retrained):
    ws, env, out = retrained
    assert out["rendered"] == 4 and out["trained"]
    assert out["register"]["version"] is not None
    assert dvc_status(ws, env) == "Data and pipelines are up to date."
    assert _registry(ws) == ([1], 1)


def test_unchanged_inputs_reuse_every_result(retrained):
    from flows.retrain import retraining_flow

    ws, _env, _ = retrained
    lock = (ws / "dvc.lock").read_text()
    out = retraining_flow(root=str(ws))
    assert out["rendered"] == 0 and not out["trained"] and not out["changes"]["any"]
    assert (ws / "dvc.lock").read_text() == lock and _registry(ws) == ([1], 1)


def test_a_transient_failure_is_retried_and_the_flow_completes(retrained, monkeypatch):
    import tasks.evaluate as evaluate_tasks
    from flows.train import train_flow

    ws, env, _ = retrained
    real, calls = evaluate_tasks.evaluate, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("injected: the metrics volume went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_tasks, "evaluate", fails_once)
    monkeypatch.setattr(evaluate_tasks.evaluate_task, "retry_delay_seconds", [0.1, 0.1])
    _bump_evaluate_seed(ws)
    state = train_flow(root=str(ws), return_state=True)
    assert state.is_completed(), state
    runs = _task_runs(state, "evaluate")
    assert len(runs) == 1 and runs[0].run_count == 2 and len(calls) == 2
    assert dvc_status(ws, env) == "Data and pipelines are up to date."
    versions, _ = _registry(ws)
    assert versions == [1, 2]


def test_a_failing_evaluation_never_moves_champion(retrained, monkeypatch):
    import tasks.evaluate as evaluate_tasks
    from flows.train import train_flow

    ws, env, _ = retrained
    before = _registry(ws)
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    metrics = (ws / "data" / "metrics" / "metrics.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("injected: evaluation diverged")

    monkeypatch.setattr(evaluate_tasks, "evaluate", broken)
    monkeypatch.setattr(evaluate_tasks.evaluate_task, "retry_delay_seconds", [0.1, 0.1])
    _bump_evaluate_seed(ws)
    state = train_flow(root=str(ws), return_state=True)
    assert state.is_failed() and "evaluation diverged" in str(state.message or "") + repr(state)
    assert _registry(ws) == before
    after = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert after["evaluate"] == lock["evaluate"] and after.get("register") == lock.get("register")
    assert (ws / "data" / "metrics" / "metrics.json").read_text() == metrics
    assert "evaluate" in dvc_status(ws, env)  # DVC, too, knows the evaluation is not done
    assert json.loads(metrics)  # the last good metrics are still there
