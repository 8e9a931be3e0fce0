"""Training logs to one MLflow run; a resumed training continues it (local SQLite store, real MLflow)."""
from __future__ import annotations

import json

import pytest
from tracking_helpers import tracking_config

mlflow = pytest.importorskip("mlflow")


def test_train_logs_one_run_and_resume_continues_it(tmp_path, monkeypatch):
    from train_helpers import tiny_configs, write_tiny_dataset

    from get3d.tracking import RUN_FILE, connect
    from get3d.train.stage import run_train_stage

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = write_tiny_dataset(tmp_path / "tiny.h5")
    cfg = tracking_config(tmp_path / "store")
    run_dir, model_out = tmp_path / "train", tmp_path / "model" / "generator.pt"

    cm, ct = tiny_configs(total_kimg=0.004, image_snapshot_ticks=1)
    res = run_train_stage(cm, ct, data, run_dir, model_out, tracking=cfg)
    run_id = json.loads((run_dir / RUN_FILE).read_text())["run_id"]
    assert res["mlflow_run_id"] == run_id

    client = connect(cfg)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.z_dim"] == "16" and run.data.params["train.batch_size"] == "4"
    assert run.data.tags["get3d.dataset_sha256"] == json.loads((run_dir / "run.json").read_text())["dataset"]["sha256"]
    assert run.data.tags["get3d.version.torch"]
    assert "mlflow.source.git.commit" in run.data.tags
    steps = [m.step for m in client.get_metric_history(run_id, "loss/G")]
    assert steps == [4]
    arts = {a.path for a in client.list_artifacts(run_id)}
    assert {"images", "plots", "provenance"} <= arts
    assert {a.path for a in client.list_artifacts(run_id, "plots")} >= {"plots/loss_G.csv", "plots/loss_curves.png"}
    assert any(a.path.endswith(".png") for a in client.list_artifacts(run_id, "images"))
    # the snapshot's provenance names the run: evaluation and registration find it from generator.pt
    from get3d.tracking import run_ref_of_snapshot
    assert run_ref_of_snapshot(model_out)["run_id"] == run_id

    # longer schedule: the run directory resumes, and so does the MLflow run (no second run)
    cm, ct = tiny_configs(total_kimg=0.008, image_snapshot_ticks=1)
    res = run_train_stage(cm, ct, data, run_dir, model_out, tracking=cfg)
    assert res["mlflow_run_id"] == run_id
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    steps = [m.step for m in client.get_metric_history(run_id, "loss/G")]
    assert steps == [4, 8]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.total_kimg"] == "0.004"
    assert run.data.tags["get3d.resumed_with.train.total_kimg"] == "0.008"


def test_unreachable_server_fails_before_training(tmp_path, monkeypatch):
    import socket

    from train_helpers import tiny_configs, write_tiny_dataset

    from get3d.tracking import TrackingError
    from get3d.train.stage import run_train_stage

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # nothing listens here once the socket closes
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    data = write_tiny_dataset(tmp_path / "tiny.h5")
    cm, ct = tiny_configs(total_kimg=0.004)
    with pytest.raises(TrackingError, match=f"tracking server {uri} is unreachable"):
        run_train_stage(cm, ct, data, tmp_path / "train", tmp_path / "g.pt", tracking=tracking_config(tmp_path))
    assert not (tmp_path / "train" / "checkpoints").exists()
