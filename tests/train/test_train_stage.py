"""The train stage resumes a compatible run directory and starts fresh when settings or data changed."""
import json

from train_helpers import tiny_configs, write_tiny_dataset

from get3d.train.stage import run_train_stage


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "run-history.jsonl").read_text().splitlines()]


def test_resume_when_compatible_fresh_when_changed(tiny_dataset, tmp_path):
    run_dir, model_out = tmp_path / "train", tmp_path / "model" / "generator.pt"
    cm, ct = tiny_configs(total_kimg=0.004)
    res = run_train_stage(cm, ct, tiny_dataset, run_dir, model_out)
    assert res["status"] == "completed" and model_out.is_file()
    first_bytes = model_out.read_bytes()

    # Longer schedule, same learning settings: resumes from the newest state.
    cm, ct = tiny_configs(total_kimg=0.008)
    run_train_stage(cm, ct, tiny_dataset, run_dir, model_out)
    assert _history(run_dir)[-1]["resumed_from"] is not None
    assert model_out.read_bytes() != first_bytes
    assert not (tmp_path / "train.stale").exists()

    # A learning setting changed: old run moved aside, new run from scratch.
    cm, ct = tiny_configs(total_kimg=0.004, lr_g=0.001)
    run_train_stage(cm, ct, tiny_dataset, run_dir, model_out)
    assert (tmp_path / "train.stale" / "config.json").is_file()
    assert len(_history(run_dir)) == 1 and _history(run_dir)[0]["resumed_from"] is None

    # Same settings, different data: fresh again.
    other = write_tiny_dataset(tmp_path / "other.h5", seed=5)
    run_train_stage(cm, ct, other, run_dir, model_out)
    assert len(_history(run_dir)) == 1 and _history(run_dir)[0]["resumed_from"] is None
