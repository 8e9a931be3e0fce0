"""The DVC bookkeeping every non-DVC entry point goes through, on a real git+DVC copy of the project."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from get3d.dvcstage import PATHS, DvcStageError, commit_stage, run_stage, stage_changes

PROJECT_FILES = ("get3d", "dvc.yaml", "params.yaml", "profiles", "envs")


def make_dvc_workspace(repo_root: Path, dest: Path, extra=()) -> tuple[Path, dict]:
    """A throw-away git+DVC checkout of the project's pipeline files (and ``extra`` ones)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES + tuple(extra):
        src = repo_root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", ".prefect"))
        elif src.exists():
            shutil.copy(src, dest / name)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(dest), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest, env


def dvc_status(work: Path, env: dict, *targets: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", *targets], check=False, cwd=work, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def workspace(repo_root, tmp_path):
    return make_dvc_workspace(repo_root, tmp_path / "ws")


def _build_assets(work: Path):
    from get3d.assets.stage import build_assets
    from get3d.config import load_params

    return build_assets(load_params(work / PATHS["params"], only=["assets"]).assets, work / PATHS["assets"])


def test_run_stage_records_results_so_dvc_agrees(workspace):
    work, env = workspace
    assert stage_changes(work, "assets")  # never run
    first = run_stage(work, "assets", lambda: _build_assets(work))
    assert first.ran and first.result["counts"]["ok"] > 0
    assert "up to date" in dvc_status(work, env, "assets")
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]["assets"]
    assert lock["outs"][0]["path"] == PATHS["assets"] and lock["params"]["params.yaml"]["assets"]["count"] == 24

    again = run_stage(work, "assets", lambda: pytest.fail("an up-to-date stage must not run"))
    assert not again.ran
    out = subprocess.run([sys.executable, "-m", "dvc", "repro", "assets"], check=False, cwd=work, env=env,
                         capture_output=True,
                         text=True)
    assert out.returncode == 0 and "didn't change, skipping" in out.stdout + out.stderr


def test_param_change_reruns_and_failure_leaves_lock_alone(workspace):
    work, env = workspace
    run_stage(work, "assets", lambda: _build_assets(work))
    lock_before = (work / "dvc.lock").read_text()
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["assets"]["count"] = 3
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changes = stage_changes(work, "assets")
    assert any("params.yaml" in c for c in changes), changes

    def broken():
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        run_stage(work, "assets", broken)
    assert (work / "dvc.lock").read_text() == lock_before
    assert "changed" in dvc_status(work, env, "assets")

    rerun = run_stage(work, "assets", lambda: _build_assets(work))
    assert rerun.ran and rerun.result["counts"]["ok"] == 3
    assert "up to date" in dvc_status(work, env, "assets")


def test_forced_run_and_unknown_stage(workspace):
    work, _ = workspace
    run_stage(work, "assets", lambda: _build_assets(work))
    assert run_stage(work, "assets", lambda: _build_assets(work), force=True).ran
    with pytest.raises(DvcStageError, match="no stage named 'nope'"):
        stage_changes(work, "nope")
    with pytest.raises(DvcStageError, match="not a DVC project"):
        commit_stage(work / "data", "assets")


def test_paths_are_the_ones_dvc_yaml_passes(repo_root):
    """Every path argument of every stage command is one of PATHS, so both entry points write the same files."""
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    known = set(PATHS.values())
    for name, stage in stages.items():
        for path in re.findall(r"--(?:params|out|manifest|dataset|data|work-dir|run-dir|model-out|model|reference)"
                               r"\s+(\S+)", stage["cmd"]):
            assert path in known, f"stage {name}: {path} is not in get3d.dvcstage.PATHS"
