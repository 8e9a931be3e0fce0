"""Integration: a real ``mlflow server`` (SQLite backend, artifact folder) on 127.0.0.1; training, evaluation,
export and registration log to it; everything is read back through the REST API (plain HTTP), the registered
model loads in a fresh offline process and generates a textured mesh on CPU, and the UI shows the versions with
their aliases and the run's preview image in headless Chromium."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow_server import chromium, get_bytes, list_artifacts, mlflow_server, rest
from tracking_helpers import (
    evaluate_tiny,
    tiny_export_config,
    tiny_pipeline_inputs,
    tracking_config,
    train_tiny,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install "
                                                                         "chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


def _text(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)).replace("&nbsp;", " ")


def test_pipeline_logs_registers_and_serves_through_a_server(server, tmp_path, monkeypatch):
    from get3d.export.stage import run_export
    from get3d.register import run_register

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    cfg = tracking_config(tmp_path, uri=server)
    inputs = tiny_pipeline_inputs(tmp_path)

    # ---- train -> evaluate -> export -> register, all against the server
    tr = train_tiny(inputs, tmp_path, cfg)
    run_id, model = tr["mlflow_run_id"], Path(tr["model"])
    ev = evaluate_tiny(inputs, model, tmp_path / "metrics", cfg)
    assert ev["mlflow_run_id"] == run_id
    run_export(model, tmp_path / "export", tiny_export_config(), dataset_h5=inputs["dataset"])
    reg1 = run_register(model, tmp_path / "metrics", tmp_path / "register", cfg, export_dir=tmp_path / "export",
                        export_cfg=tiny_export_config())
    assert reg1["run_id"] == run_id and reg1["decision"] == "promoted" and reg1["version"] == "1"
    assert json.loads((tmp_path / "register" / "register.json").read_text())["version"] == "1"
    # the same generator evaluated on other generated samples: a real second FID, a real gate decision
    ev2 = evaluate_tiny(inputs, model, tmp_path / "metrics2", cfg, seed=1)
    reg2 = run_register(model, tmp_path / "metrics2", tmp_path / "register2", cfg, export_cfg=tiny_export_config())
    fid1, fid2 = ev["metrics"]["fid"], ev2["metrics"]["fid"]
    assert fid1 != fid2
    expected_champion = "2" if fid2 < fid1 else "1"
    assert reg2["decision"] == ("promoted" if fid2 < fid1 else "rejected")
    assert reg2["champion_version"] == expected_champion

    run, previews = _check_run_over_rest(server, run_id, fid1, fid2)
    _check_registry_over_rest(server, cfg, run_id, ev["comparison_key"], fid1, fid2, expected_champion)
    _check_fresh_process_loads_champion(server, cfg, tmp_path)
    _check_ui(server, cfg, tmp_path, run, run_id, previews)


def _check_run_over_rest(server, run_id, fid1, fid2):
    """The run: params, per-tick + evaluation metrics, artifacts (previews, GLBs, card)."""
    run = rest(server, "runs/get", run_id=run_id)["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert params["model.z_dim"] == "16" and "train.lr_g" in params
    assert "loss/G" in metrics and "timing/sec_per_kimg" in metrics
    assert metrics["eval/fid"] in (fid1, fid2)
    assert tags["get3d.dataset_sha256"] and tags["get3d.version.torch"] and tags["mlflow.source.git.commit"]
    hist = rest(server, "metrics/get-history", run_id=run_id, metric_key="loss/G")["metrics"]
    assert [h["step"] for h in hist] == [4]
    files = list_artifacts(server, run_id)
    previews = [f for f in files if f.startswith("images/") and f.endswith(".png")]
    glbs = [f for f in files if f.startswith("export/") and f.endswith(".glb")]
    assert previews and glbs, files
    assert {"plots/loss_curves.png", "provenance/run.json", "evaluate/metrics.json", "model_card.md"} <= set(files)
    png = get_bytes(server, "get-artifact", path=previews[0], run_uuid=run_id)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    glb = get_bytes(server, "get-artifact", path=glbs[0], run_uuid=run_id)
    assert glb[:4] == b"glTF"
    return run, previews


def _check_registry_over_rest(server, cfg, run_id, reference_key, fid1, fid2, expected_champion):
    """The registered model, its versions (card, gate tags) and aliases."""
    rm = rest(server, "registered-models/get", name=cfg.model_name)["registered_model"]
    aliases = {a["alias"]: a["version"] for a in rm["aliases"]}
    assert aliases == {"champion": expected_champion, "challenger": "2"}
    versions = {v["version"]: v for v in rest(server, "model-versions/search",
                                               filter=f"name='{cfg.model_name}'")["model_versions"]}
    assert set(versions) == {"1", "2"}
    for v, fid in (("1", fid1), ("2", fid2)):
        mv = versions[v]
        vtags = {t["key"]: t["value"] for t in mv["tags"]}
        assert mv["run_id"] == run_id and mv["status"] == "READY"
        assert "## Metrics" in mv["description"] and "## Limits" in mv["description"]
        assert float(vtags["get3d.metric.fid"]) == pytest.approx(fid)
        assert vtags["get3d.reference_key"] == reference_key
        assert vtags["get3d.gate.decision"] in ("promoted", "rejected")
    assert versions["2"]["tags"] and {t["key"]: t["value"] for t in versions["2"]["tags"]}[
        "get3d.gate.champion_version"] == "1"
    by_alias = rest(server, "registered-models/alias", name=cfg.model_name, alias="champion")["model_version"]
    assert by_alias["version"] == expected_champion


def _check_fresh_process_loads_champion(server, cfg, tmp_path):
    """A fresh process, no project code on its path, no network but the server: load @champion, generate."""
    out_glb = tmp_path / "fresh.glb"
    code = ("import json, sys, mlflow\n"
            f"m = mlflow.pyfunc.load_model('models:/{cfg.model_name}@champion')\n"
            "out = m.predict([{'seed': 3}, {'geo_seed': 1, 'tex_seed': 2}])\n"
            "import get3d\n"
            "open(sys.argv[1], 'wb').write(out['glb'][0])\n"
            "print(json.dumps({'get3d': get3d.__file__, 'faces': [int(x) for x in out['num_faces']],\n"
            "                  'pairs': [[int(a), int(b)] for a, b in zip(out['geo_seed'], out['tex_seed'])]}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env.update(MLFLOW_TRACKING_URI=server, HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               NO_PROXY="127.0.0.1,localhost", PIP_NO_INDEX="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", code, str(out_glb)], cwd=tmp_path, env=env, capture_output=True,
                          check=False,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not info["get3d"].startswith((str(REPO), "/work/main")), info["get3d"]   # the model's packaged code
    assert info["pairs"] == [[3, 3], [1, 2]] and info["faces"][0] > 0
    import trimesh

    scene = trimesh.load(io.BytesIO(out_glb.read_bytes()), file_type="glb")
    geom = next(iter(scene.geometry.values()))
    assert len(geom.faces) == info["faces"][0]
    assert geom.visual.kind == "texture" and geom.visual.material.baseColorTexture is not None


def _check_ui(server, cfg, tmp_path, run, run_id, previews):
    """The UI in headless Chromium: model page (versions + aliases), run page (preview image)."""
    img_dir = Path(os.environ.get("GET3D_DOCS_IMG", tmp_path / "img"))
    dom = chromium(f"{server}/#/models/{cfg.model_name}", tmp_path / "chromium",
                   img_dir / "mlflow-registered-model.png")
    text = _text(dom)
    assert "Version 1" in text and "Version 2" in text, text[:2000]
    assert "@ champion" in text and "@ challenger" in text, text[:2000]
    exp_id = run["info"]["experiment_id"]
    dom = chromium(f"{server}/#/experiments/{exp_id}/runs/{run_id}/artifactPath/{previews[-1]}",
                   tmp_path / "chromium", img_dir / "mlflow-run-preview.png")
    assert re.search(rf'<img[^>]+alt="{re.escape(previews[-1])}"[^>]+src="blob:', dom), _text(dom)[:2000]
    for name in ("mlflow-registered-model.png", "mlflow-run-preview.png"):
        assert (img_dir / name).stat().st_size > 10_000
