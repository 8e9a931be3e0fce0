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
from get3d.render.testing import make_test_assets, small_cfg
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


def _params(tmp_path: Path, **render) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"render": {**to_dict(CFG), **render}}))
    return path


@pytest.mark.render
def test_cli_and_prefect_render_run_the_same_stage(tmp_path, render_python, prefect_api):
    from flows.pipeline import render_flow
    from get3d.cli import main

    manifest = make_test_assets(tmp_path / "assets", n=2)
    params = _params(tmp_path)
    with calls_of(stage.render_dataset, stage.render_shard) as cli:
        assert main(["render", "--params", str(params), "--manifest", str(manifest), "--out",
                     str(tmp_path / "cli" / "dataset.h5"), "--work-dir", str(tmp_path / "cli_work"),
                     "--no-progress"]) == 0
    with calls_of(stage.render_dataset, stage.render_shard) as flow:
        out = render_flow(str(params), str(manifest), str(tmp_path / "flow_work"), str(tmp_path / "flow" / "dataset.h5"))
    assert cli == {"render_dataset": 1, "render_shard": 1}
    assert flow == {"render_dataset": 1, "render_shard": 1}   # the shard ran in a Prefect task thread
    assert out["counts"]["rendered"] == 2
    for name in ("dataset.h5", "dataset.json"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "flow" / name).read_bytes(), name


@pytest.mark.parametrize("behaviour, timeout_s, reason", [
    ("echo worker exploded >&2; exit 3", 3600.0, r"failed before rendering \(exit 3\):\nworker exploded"),
    ("exec sleep 60", 1.0, r"failed before rendering \(exit -9\)"),
])
def test_prefect_shards_get_the_stage_checks(tmp_path, monkeypatch, prefect_api, behaviour, timeout_s, reason):
    """A broken render interpreter, or one stuck past render.shard_timeout_s: the flow fails with the stage's
    error (no retry of a worker that never started), like the CLI."""
    from flows.pipeline import render_flow

    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\n{behaviour}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("GET3D_RENDER_PYTHON", str(fake))
    manifest = make_test_assets(tmp_path / "assets", n=2)
    params = _params(tmp_path, shard_timeout_s=timeout_s)
    t0 = time.monotonic()
    with calls_of(stage.render_dataset, stage.render_shard) as seen, \
            pytest.raises(stage.RenderError, match=reason):
        render_flow(str(params), str(manifest), str(tmp_path / "work"), str(tmp_path / "out" / "dataset.h5"))
    assert seen == {"render_dataset": 1, "render_shard": 1}
    assert time.monotonic() - t0 < 40
    assert not (tmp_path / "out" / "dataset.h5").exists()
