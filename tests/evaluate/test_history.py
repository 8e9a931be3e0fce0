"""The same evaluation twice gives the same numbers; fid_kimg.csv (FID against kimg for `dvc plots`) keeps one
row per evaluated snapshot, grows with kimg and restarts when the evaluation protocol changes."""
from __future__ import annotations

import csv
import json

from get3d.evaluate import history
from get3d.evaluate import stage as S
from get3d.evaluate.config import smoke_config


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_twice_is_identical_and_history_keeps_one_row_per_snapshot(eval_inputs, reference_dir, tmp_path):
    cfg = smoke_config(metrics=["fid"], num_fake_images=4)
    out = tmp_path / "eval"
    args = (eval_inputs["snapshot"], eval_inputs["dataset"], eval_inputs["manifest"], reference_dir, out)
    first = S.evaluate(*args, cfg)["metrics"]
    per_shape = (out / S.PER_SHAPE_FILE).read_bytes()
    second = S.evaluate(*args, cfg)["metrics"]
    timing = {k for k in first if k.endswith("time_s")}
    assert timing and {k: v for k, v in first.items() if k not in timing} == \
        {k: v for k, v in second.items() if k not in timing}
    assert (out / S.PER_SHAPE_FILE).read_bytes() == per_shape

    rows = _rows(out / history.HISTORY_FILE)
    report = json.loads((out / S.REPORT_FILE).read_text())
    assert [(float(r["kimg"]), float(r["fid"])) for r in rows] == [(report["kimg"], second["fid"])]
    assert rows[0]["comparison_key"] == report["comparison_key"]


def test_history_grows_with_kimg_and_drops_rows_of_a_replaced_run(tmp_path):
    path = tmp_path / history.HISTORY_FILE
    for kimg, fid in ((1.0, 300.0), (2.0, 250.0), (3.0, 200.0)):
        history.update_history(path, kimg, {"fid": fid, "fid_3d": fid + 1}, "k", "sha")
    assert [r["kimg"] for r in _rows(path)] == ["1.000000", "2.000000", "3.000000"]
    history.update_history(path, 2.0, {"fid": 260.0}, "k", "sha2")  # a shorter retrained run replaces 2 and 3
    assert [(r["kimg"], r["fid"], r["fid_3d"]) for r in _rows(path)] == [("1.000000", "300.0", "301.0"),
                                                                          ("2.000000", "260.0", "")]
    history.update_history(path, 4.0, {"fid": None}, "k", "sha3")  # no finite FID: no row
    assert len(_rows(path)) == 2
    path.write_text("step,value\n1,2\n")  # a file of other columns is replaced, not mixed in
    history.update_history(path, 1.0, {"fid": 9.0}, "k", "s")
    assert [r["fid"] for r in _rows(path)] == ["9.0"]
    history.update_history(path, 2.0, {"fid": 8.0}, "other protocol", "s")  # not comparable: starts over
    assert [(r["kimg"], r["comparison_key"]) for r in _rows(path)] == [("2.000000", "other protocol")]


def test_an_evaluation_without_fid_still_writes_the_declared_output(tmp_path):
    """Mesh-only evaluations (no FID) leave a header-only history: DVC needs the stage output to exist."""
    path = tmp_path / history.HISTORY_FILE
    assert history.update_history(path, 1.0, {"mmd_cd": 2.5}, "k", "sha") == []
    assert path.read_text().splitlines() == [",".join(history.COLUMNS)]
