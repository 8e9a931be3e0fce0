"""The CLI and the Prefect flow render through the same stage function (get3d.render.stage.render_dataset).

Observed, not mocked: a profile hook records which code objects ran (in every thread, so Prefect's task
threads too).  The two entry points write byte-identical datasets, and the flow's shards (one Prefect task
each) get the stage's checks: a worker that fails before rendering, or outlives render.shard_timeout_s,
fails the flow with the stage's error.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from get3d.render import stage
from get3d.render.testing import small_cfg
from get3d.schema import to_dict

CFG = small_cfg(resolution=32, views_per_object=2, samples=2, workers=1)


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@contextlib.contextmanager
def calls_of(*fns):
    """Count the calls of ``fns`` (by code object) in this and every thread started inside the block."""
    codes = {fn.__code__: fn.__name__ for fn in fns}
    seen = {name: 0 for name in codes.values()}
    lock = threading.Lock()

    def hook(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            with lock:
                seen[codes[frame.f_code]] += 1

    sys.setprofile(hook)
    threading.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(None)
        threading.setprofile(None)


def _workspace(repo_root: Path, tmp_path: Path, **render) -> Path:
    """A tiny DVC workspace: 2 procedural assets, the small render settings."""
    from flow_workspace import make_workspace, tiny_params

    params = tiny_params(repo_root, assets=2)
    params["render"].update({**to_dict(CFG), **render})
    ws, _ = make_workspace(repo_root, tmp_path / "ws", params)
    return ws


@pytest.mark.render
def test_cli_and_prefect_render_run_the_same_stage(repo_root, tmp_path, render_python, prefect_api):
    from flows.render import render_flow
    from get3d.cli import main

    ws = _workspace(repo_root, tmp_path)
    with calls_of(stage.render_dataset, stage.render_shard) as flow:
        out = render_flow(root=str(ws))
    with calls_of(stage.render_dataset, stage.render_shard) as cli:
        assert main(["render", "--params", str(ws / "params.yaml"), "--manifest",
                     str(ws / "data" / "assets" / "manifest.json"), "--out", str(tmp_path / "cli" / "dataset.h5"),
                     "--work-dir", str(tmp_path / "cli_work"), "--no-progress"]) == 0
    assert cli == {"render_dataset": 1, "render_shard": 1}
    assert flow == {"render_dataset": 1, "render_shard": 1}   # the shard ran in a Prefect task thread
    assert out["counts"]["rendered"] == 2 and out["rendered"] == 2
    for name in ("dataset.h5", "dataset.json"):
        assert (tmp_path / "cli" / name).read_bytes() == (ws / "data" / "dataset" / name).read_bytes(), name


@pytest.mark.parametrize("behaviour, timeout_s, reason", [
    ("echo worker exploded >&2; exit 3", 3600.0, r"failed before rendering \(exit 3\):\nworker exploded"),
    ("exec sleep 60", 1.0, r"failed before rendering \(exit -9\)"),
])
def test_prefect_shards_get_the_stage_checks(repo_root, tmp_path, monkeypatch, prefect_api, behaviour, timeout_s,
                                             reason):
    """A broken render interpreter, or one stuck past render.shard_timeout_s: the flow fails with the stage's
    error (no retry of a worker that never started), like the CLI, and DVC records no render."""
    from flows.render import render_flow

    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\n{behaviour}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("GET3D_RENDER_PYTHON", str(fake))
    ws = _workspace(repo_root, tmp_path, shard_timeout_s=timeout_s)
    t0 = time.monotonic()
    with calls_of(stage.render_dataset, stage.render_shard) as seen, \
            pytest.raises(stage.RenderError, match=reason):
        render_flow(root=str(ws))
    assert seen == {"render_dataset": 1, "render_shard": 1}
    assert time.monotonic() - t0 < 60
    assert not (ws / "data" / "dataset" / "dataset.h5").exists()
    assert "render" not in yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
