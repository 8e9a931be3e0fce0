"""The retraining report: metrics against the champion, the decision, MLflow links."""
from flows.report import mlflow_links, retraining_markdown

REGISTER = {"model_name": "get3d-generator", "version": "3", "run_id": "abc123", "experiment_id": "1",
            "decision": "promoted", "reason": "fid 41.2 < champion 45.0", "champion_version": "3",
            "compared_with": "2", "champion_metrics": {"fid": 45.0, "cov_cd": 50.0}}


def test_report_has_table_decision_and_links():
    md = retraining_markdown(changes={"added": ["x"], "changed": [], "removed": [], "total": 5},
                             dataset={"rendered": 1, "reused": 4, "dataset_hash": "f00d" * 8},
                             train={"ran": True, "status": "finished"},
                             metrics={"fid": 41.2, "cov_cd": 55.0, "fid_time_s": 3.0}, register=REGISTER,
                             tracking_uri="http://127.0.0.1:5000/")
    assert "1 added, 0 changed, 0 removed (of 5 items)" in md
    assert "1 object(s) rendered, 4 reused" in md
    assert "| `fid` | 41.2 | 45 | lower |" in md and "| `cov_cd` | 55 | 50 | higher |" in md
    assert "| metric | challenger (v3) | champion (v2) | better |" in md and "fid_time_s" not in md
    assert "**promoted** — fid 41.2 < champion 45.0" in md
    assert "(http://127.0.0.1:5000/#/experiments/1/runs/abc123)" in md
    assert "(http://127.0.0.1:5000/#/models/get3d-generator/versions/3)" in md


def test_no_links_for_a_local_store_and_no_champion_yet():
    assert mlflow_links("sqlite:///mlflow/mlflow.db", REGISTER) == {}
    md = retraining_markdown(changes={}, dataset={}, train={"ran": False}, metrics={"fid": 50.0},
                             register={**REGISTER, "champion_metrics": None, "compared_with": None}, tracking_uri=None)
    assert "champion (none yet)" in md and "| `fid` | 50 | – | – |" in md and "up to date" in md and "MLflow)" not in md


def test_an_unchanged_run_says_nothing_was_registered():
    md = retraining_markdown(changes={"added": [], "changed": [], "removed": [], "total": 5}, dataset={},
                             train={"ran": False}, metrics={"fid": 41.2},
                             register={**REGISTER, "ran": False, "current_champion": "3"})
    assert "**no new challenger** — inputs unchanged, nothing registered" in md
    assert "champion after this run: version 3" in md and "**promoted**" not in md
