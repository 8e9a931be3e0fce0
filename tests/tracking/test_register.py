"""The register stage on a real local MLflow store: what it registers, and what it refuses (nothing registered)."""
from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest
from tracking_helpers import (
    evaluate_tiny,
    tiny_export_config,
    tiny_pipeline_inputs,
    tracking_config,
    write_random_snapshot,
)

from get3d.register import RegisterError, run_register

pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A generator snapshot, a real FID evaluation of it, and another snapshot."""
    root = tmp_path_factory.mktemp("register")
    inputs = tiny_pipeline_inputs(root)
    model = write_random_snapshot(root / "model" / "generator.pt", seed=0)
    evaluate_tiny(inputs, model, root / "metrics", None)
    other = write_random_snapshot(root / "other" / "generator.pt", seed=1)
    return {"root": root, "model": model, "metrics": root / "metrics", "other": other}


def _store(root: Path):
    from get3d.tracking import connect

    cfg = tracking_config(root)
    return cfg, connect(cfg)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return _store(tmp_path / "store")


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One store for the refusal cases (each must leave it empty)."""
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield _store(tmp_path_factory.mktemp("refusals"))
    if old is not None:
        os.environ["MLFLOW_TRACKING_URI"] = old


def _nothing_registered(client, out: Path):
    assert client.search_registered_models() == [] or all(
        not client.search_model_versions(f"name='{m.name}'") for m in client.search_registered_models())
    assert not (out / "register.json").exists()


def test_register_version_with_card_champion_and_download(evaluated, store, tmp_path, monkeypatch):
    from get3d.tracking import download_generator

    cfg, client = store
    res = run_register(evaluated["model"], evaluated["metrics"], tmp_path / "out", cfg,
                       export_cfg=tiny_export_config())
    assert res["version"] == "1" and res["decision"] == "promoted" and res["champion_version"] == "1"
    fid = json.loads((evaluated["metrics"] / "metrics.json").read_text())["fid"]
    assert res["metrics"]["fid"] == fid and res["gate"]["candidate_value"] == fid
    mv = client.get_model_version(cfg.model_name, "1")
    assert "# GET3D generator" in mv.description and f"{fid:.6g}" in mv.description
    assert mv.tags["get3d.gate.decision"] == "promoted" and mv.tags["get3d.gate.reason"] == "no champion yet"
    assert float(mv.tags["get3d.metric.fid"]) == fid
    assert set(mv.aliases) == {"champion", "challenger"}
    # the packaged model: generator, card, code, pinned requirements
    path = download_generator(f"models:/{cfg.model_name}@champion", tmp_path / "dl", cfg)
    assert path.read_bytes() == Path(evaluated["model"]).read_bytes()
    model_dir = path.parents[1]
    reqs = (model_dir / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in reqs) and any(r.startswith("mlflow==") for r in reqs)
    assert (model_dir / "code" / "get3d" / "export" / "sample.py").is_file()
    assert (model_dir / "artifacts" / "model_card.md").read_text() == mv.description

    # `get3d sample --model models:/<name>@champion` goes through the same download
    from get3d.export.sample import sample_meshes

    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    res_s = sample_meshes(f"models:/{cfg.model_name}@champion", tmp_path / "samples", tiny_export_config(), seeds=[0])
    assert res_s["meshes"][0]["geo_seed"] == 0 and Path(res_s["meshes"][0]["glb"]).read_bytes()[:4] == b"glTF"

    # the same evaluation again: no improvement -> rejected; champion stays, challenger moves
    res2 = run_register(evaluated["model"], evaluated["metrics"], tmp_path / "out2", cfg,
                        export_cfg=tiny_export_config())
    assert res2["decision"] == "rejected" and res2["champion_version"] == "1"
    assert str(client.get_model_version_by_alias(cfg.model_name, "challenger").version) == "2"
    assert str(client.get_model_version_by_alias(cfg.model_name, "champion").version) == "1"


def test_disabled_tracking_registers_nothing(evaluated, tmp_path):
    cfg = tracking_config(tmp_path, enabled=False)
    res = run_register(evaluated["model"], evaluated["metrics"], tmp_path / "out", cfg)
    assert res["decision"] == "skipped" and res["version"] is None


def _dead_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("case", ["missing_model", "corrupt_model", "no_gate_metric", "failed_evaluation",
                                  "other_snapshot", "unreachable_server"])
def test_bad_inputs_fail_naming_the_file_and_register_nothing(case, evaluated, shared_store, tmp_path,
                                                               monkeypatch):
    import dataclasses

    from get3d.tracking import TrackingError

    cfg, client = shared_store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model, metrics, out = Path(evaluated["model"]), evaluated["metrics"], tmp_path / "out"
    err, match = RegisterError, None
    if case == "missing_model":
        model = tmp_path / "nope" / "generator.pt"
        match = re.escape(f"{model}: generator snapshot not found")
    elif case == "corrupt_model":
        raw = model.read_bytes()
        model = tmp_path / "generator.pt"
        model.write_bytes(raw[: len(raw) // 2])
        match = re.escape(f"{model}: unusable generator snapshot") + ".*corrupt"
    elif case == "no_gate_metric":   # a real evaluation, but the gate asks for a metric it did not compute
        cfg = dataclasses.replace(cfg, gate_metric="cov_cd")
        match = "gate metric 'cov_cd' is None"
    elif case == "failed_evaluation":
        metrics = tmp_path / "metrics"
        metrics.mkdir()
        match = re.escape(f"{metrics / 'metrics.json'}: evaluation output missing")
    elif case == "other_snapshot":
        model = evaluated["other"]
        match = "not this generator"
    else:
        uri = _dead_uri()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        err, match = TrackingError, re.escape(f"tracking server {uri} is unreachable")
    with pytest.raises(err, match=match):
        run_register(model, metrics, out, cfg, export_cfg=tiny_export_config())
    _nothing_registered(client, out)


def test_cli_register_unreachable_server_exits_naming_the_uri(evaluated, tmp_path):
    import subprocess
    import sys

    uri = _dead_uri()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-m", "get3d.cli", "register", "--model", str(evaluated["model"]),
                           "--metrics", str(evaluated["metrics"]), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 1, proc.stderr
    assert f"get3d register: error: tracking server {uri} is unreachable" in proc.stderr
    assert not (tmp_path / "out").exists()
