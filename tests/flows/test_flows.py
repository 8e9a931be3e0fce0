"""The flows under ``prefect_test_harness`` (no server), with failure injection around the real tasks: a full
retraining on a tiny workspace whose evaluation fails once with an I/O error (retried, the flow completes);
the same retraining again reuses every result; a failing evaluation ends the run without a retry and without
touching the registry, ``champion`` or ``dvc.lock``."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from flow_workspace import dvc_status, make_workspace, tiny_params, write_params

pytestmark = [pytest.mark.render, pytest.mark.slow]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, harness):
    """A tiny workspace after one retraining flow run whose evaluation hit a transient I/O error once (the
    module's tests continue from it).

    ``mlflow.set_tracking_uri`` exports ``MLFLOW_TRACKING_URI``, which ``get3d.tracking`` prefers over
    ``tracking.uri``: the variable is cleared for this module (flows run in this process) and restored after."""
    from get3d.render.stage import RenderEnvironmentError, render_python

    try:
        render_python()
    except RenderEnvironmentError as exc:
        pytest.skip(str(exc))
    import tasks.evaluate as evaluate_tasks
    from flows.retrain import retraining_flow

    outer = pytest.MonkeyPatch()
    outer.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws, env = make_workspace(REPO, tmp_path_factory.mktemp("flows") / "ws", tiny_params(REPO))
    real, calls = evaluate_tasks.evaluate, []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, "injected: the metrics volume went away")
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate_tasks, "evaluate", fails_once)
        mp.setattr(evaluate_tasks.evaluate_task, "retry_delay_seconds", [0.1, 0.1])
        state = retraining_flow(root=str(ws), return_state=True)
    yield ws, env, state, len(calls)
    outer.undo()


def _registry(ws):
    from get3d.config import load_params
    from get3d.tracking import connect
    from tasks.common import tracking_in

    cfg = tracking_in(ws, load_params(ws / "params.yaml", only=["tracking"]).tracking)
    client = connect(cfg)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{cfg.model_name}'"))
    champion = int(client.get_model_version_by_alias(cfg.model_name, "champion").version)
    return versions, champion


def _task_runs(flow_run_id, name: str, timeout_s: float = 30.0) -> list:
    """The runs of task ``name`` (run names ``<name>-<suffix>``) in a flow run and its sub-flows (the API
    records them asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterName,
    )

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            subs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
            ids = [flow_run_id] + [r.id for r in subs]
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)),
                                         task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)))
            runs = [r for r in runs if r.name.rsplit("-", 1)[0] == name]
            if (runs and all(r.state and r.state.is_final() for r in runs)) or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


def _bump_evaluate_seed(ws):
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["evaluate"]["seed"] += 1
    write_params(ws, params)


def test_retraining_flow_retries_a_transient_failure_registers_and_leaves_dvc_clean(retrained):
    ws, env, state, evaluate_calls = retrained
    assert state.is_completed(), state
    out = state.result()
    assert out["rendered"] == 4 and out["trained"] and out["changes"]["added"] and out["register"]["ran"]
    assert evaluate_calls == 2
    runs = _task_runs(state.state_details.flow_run_id, "evaluate")
    assert [r.run_count for r in runs] == [2] and runs[0].state.is_completed()
    assert dvc_status(ws, env) == "Data and pipelines are up to date."
    assert _registry(ws) == ([1], 1)
    assert out["register"]["decision"] == "promoted" and out["register"]["version"] == "1"


def test_unchanged_inputs_reuse_every_result(retrained):
    from flows.retrain import retraining_flow

    ws, env, _, _ = retrained
    lock = (ws / "dvc.lock").read_text()
    outputs = {p: p.stat().st_mtime_ns for d in ("dataset", "train", "model", "reference", "metrics", "export",
                                                  "register") for p in (ws / "data" / d).rglob("*") if p.is_file()}
    out = retraining_flow(root=str(ws))
    assert out["rendered"] == 0 and not out["trained"] and not out["changes"]["any"]
    assert not out["register"]["ran"]
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs  # nothing rewritten
    assert (ws / "dvc.lock").read_text() == lock and _registry(ws) == ([1], 1)
    assert dvc_status(ws, env) == "Data and pipelines are up to date."
    # ... and the other entry point agrees: `dvc repro` after the Prefect runs has nothing to do
    repro = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=ws, env=env, capture_output=True, text=True,
                           check=False)
    assert repro.returncode == 0 and "Running stage" not in repro.stdout, repro.stdout + repro.stderr


def test_a_failing_evaluation_never_moves_champion(retrained, monkeypatch):
    import tasks.evaluate as evaluate_tasks
    from flows.train import train_flow

    ws, env, _, _ = retrained
    before = _registry(ws)
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    metrics = (ws / "data" / "metrics" / "metrics.json").read_text()
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("injected: evaluation diverged")

    monkeypatch.setattr(evaluate_tasks, "evaluate", broken)
    _bump_evaluate_seed(ws)
    state = train_flow(root=str(ws), return_state=True)
    assert state.is_failed() and "evaluation diverged" in state.message
    assert len(calls) == 1  # not a transient failure: no retry
    assert _registry(ws) == before
    after = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert after["evaluate"] == lock["evaluate"] and after["register"] == lock["register"]
    assert (ws / "data" / "metrics" / "metrics.json").read_text() == metrics
    assert "evaluate" in dvc_status(ws, env)  # DVC, too, knows the evaluation is not done
    assert json.loads(metrics)  # the last good metrics are still there
