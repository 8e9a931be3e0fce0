"""The deployments for real: a Prefect server on 127.0.0.1, the ``cpu``/``gpu`` process pools, ``prefect deploy
--all`` from prefect.yaml, a process worker, the scheduled retraining triggered on the embedded data.

Checks what a team relies on: the run completes, the registry gains a version, ``champion`` moves exactly as
the gate says, the report artifact exists, ``dvc status`` is clean; a second retraining triggered meanwhile
waits for the first and then reuses every result; a new asset is the only object rendered next time; the UI
shows the deployment with its schedule and the completed runs (headless Chromium, screenshot in docs/img/).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from flow_workspace import dvc_status, make_workspace, tiny_params, write_params
from headless_page import HeadlessPage, chromium
from prefect_server import PrefectServer

pytestmark = [pytest.mark.render, pytest.mark.slow]

RUN_TIMEOUT_S = 420
def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _registry(ws: Path):
    from get3d.config import load_params
    from get3d.tracking import connect
    from tasks.common import tracking_in

    cfg = tracking_in(ws, load_params(ws / "params.yaml", only=["tracking"]).tracking)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)  # mlflow exports it; get3d.tracking would prefer it
    try:
        client = connect(cfg)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{cfg.model_name}'"))
    try:
        champion = int(client.get_model_version_by_alias(cfg.model_name, "champion").version)
    except Exception:  # noqa: BLE001 (no champion yet)
        champion = None
    return cfg, versions, champion


def _gate_prefers(cfg, challenger: float, champion: float) -> bool:
    if cfg.gate_direction == "minimize":
        return challenger < champion - cfg.gate_min_margin
    return challenger > champion + cfg.gate_min_margin


def _run_rows(page_text: str) -> str:
    """The flow-run list of a deployment page (after its sort menu, before the pager)."""
    rows = page_text.split("Z to A", 1)[-1]
    return rows.split("Items per page", 1)[0]


def test_scheduled_retraining_deployment_end_to_end(repo_root, tmp_path, render_python):
    ws, env = make_workspace(repo_root, tmp_path / "ws", tiny_params(repo_root, assets=4))
    env["GET3D_RENDER_PYTHON"] = render_python
    server = PrefectServer(tmp_path / "prefect", env)
    try:
        server.start()
        for pool in ("cpu", "gpu"):
            server.cli("work-pool", "create", pool, "--type", "process")
        server.cli("deploy", "--all", cwd=ws)
        dep = server.deployment("get3d-retrain", "retrain")
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["0 3 * * 0"]
        assert dep["global_concurrency_limit"]["limit"] == 1
        assert dep["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        assert {server.deployment("get3d-render", "render")["work_pool_name"],
                server.deployment("get3d-train", "train")["work_pool_name"]} == {"cpu", "gpu"}
        server.start_worker("gpu", cwd=ws)

        # --- two retrainings triggered together: one waits for the other, then reuses everything
        runs = [server.trigger(dep["id"]), server.trigger(dep["id"])]
        done = [server.wait(r, RUN_TIMEOUT_S) for r in runs]
        assert [d["state_type"] for d in done] == ["COMPLETED", "COMPLETED"], \
            [server.logs_of(d["id"])[-20:] for d in done]
        first, second = sorted(done, key=lambda d: _ts(d["start_time"]))
        assert _ts(second["start_time"]) >= _ts(first["end_time"]), "the two retrainings overlapped"
        assert "AwaitingConcurrencySlot" in [s["name"] for s in server.states(second["id"])]
        assert dvc_status(ws, env) == "Data and pipelines are up to date."

        cfg, versions, champion = _registry(ws)
        assert versions == [1] and champion == 1  # the first challenger has no champion to beat
        first_metrics = json.loads((ws / "data" / "metrics" / "metrics.json").read_text())
        report = [a for a in server.artifacts(first["id"]) if a["key"] == "get3d-retraining"]
        assert report and "| `mmd_cd` |" in report[0]["data"] and "version 1" in report[0]["data"]
        second_logs = "\n".join(server.logs_of(second["id"]))
        for stage in ("assets", "render", "train", "evaluate", "register"):
            assert re.search(rf"{stage}: up to date", second_logs), f"{stage} recomputed:\n{second_logs}"
        assert not [t for t in server.task_runs(second["id"]) if t["name"].startswith("render-shard")]

        # --- one new asset: only that object is rendered; a new challenger goes through the gate
        npz_before = {p.name: p.stat().st_mtime_ns for p in (ws / "data" / "render_work" / "objects").glob("*.npz")}
        write_params(ws, tiny_params(repo_root, assets=5))
        third = server.wait(server.trigger(dep["id"]), RUN_TIMEOUT_S)
        assert third["state_type"] == "COMPLETED", server.logs_of(third["id"])[-20:]
        npz_after = {p.name: p.stat().st_mtime_ns for p in (ws / "data" / "render_work" / "objects").glob("*.npz")}
        assert len(npz_after) == 5 and {k: npz_after[k] for k in npz_before} == npz_before
        shards = [t for t in server.task_runs(third["id"]) if t["name"].startswith("render-shard")]
        assert len(shards) == 1
        assert any("1 object(s) rendered now, 4 reused" in m for m in server.logs_of(third["id"]))
        assert dvc_status(ws, env) == "Data and pipelines are up to date."
        _, versions, champion = _registry(ws)
        new_metrics = json.loads((ws / "data" / "metrics" / "metrics.json").read_text())
        assert versions == [1, 2]
        promoted = _gate_prefers(cfg, new_metrics[cfg.gate_metric], first_metrics[cfg.gate_metric])
        assert champion == (2 if promoted else 1)
        report = next(a for a in server.artifacts(third["id"]) if a["key"] == "get3d-retraining")["data"]
        assert "1 added" in report and ("**promoted**" in report) == promoted

        # --- the UI: deployment page with its schedule and the completed runs
        if chromium() is None:
            pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
        page = HeadlessPage(tmp_path / "chromium")
        try:
            text = page.open(f"{server.url}/deployments/deployment/{dep['id']}",
                             until=lambda t: _run_rows(t).count("Completed") >= 3 and "At 03:00 AM" in t)
            assert "At 03:00 AM, only on Sunday" in text and "3 Flow runs" in text
            assert "Entrypoint\nflows/retrain.py:retraining_flow" in text and "Concurrency Limit\n1" in text
            rows = _run_rows(text)
            assert all(name in rows for name in (first["name"], second["name"], third["name"]))
            shot = tmp_path / "prefect-ui.png"
            page.screenshot(shot)
        finally:
            page.close()
        assert shot.stat().st_size > 20_000
        if os.environ.get("GET3D_UPDATE_DOCS_IMG"):
            shutil.copy(shot, repo_root / "docs" / "img" / "prefect-retrain-deployment.png")
    finally:
        server.stop()
