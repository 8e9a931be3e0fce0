"""DVC really tracks the pipeline: repro, no-op repro, param change reruns only what depends on it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture
def dvc_project(repo_root, tmp_path):
    """A throw-away git+DVC checkout of the project's pipeline files."""
    work = tmp_path / "proj"
    work.mkdir()
    for name in ("get3d", "dvc.yaml", "params.yaml", "profiles"):
        src = repo_root / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, work / name)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(work), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    _run(["git", "init", "-q"], work, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], work, env)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], work, env)
    return work, env


def test_assets_stage_repro_is_incremental(dvc_project):
    work, env = dvc_project
    dvc = [sys.executable, "-m", "dvc"]
    out = _run(dvc + ["repro", "assets"], work, env)
    assert "Running stage 'assets'" in out
    manifest = work / "data" / "assets" / "manifest.json"
    first = manifest.read_bytes()
    out = _run(dvc + ["repro", "assets"], work, env)
    assert "didn't change, skipping" in out and "Running stage" not in out

    params = yaml.safe_load((work / "params.yaml").read_text())
    params["assets"]["count"] = params["assets"]["count"] + 2
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(dvc + ["repro", "assets"], work, env)
    assert "Running stage 'assets'" in out
    assert manifest.read_bytes() != first
    assert len(list((work / "data" / "assets" / params["assets"]["synset"]).iterdir())) == params["assets"]["count"]


def test_stage_twice_gives_identical_outputs_and_default_remote_round_trips(dvc_project, repo_root):
    """The project's .dvc/config: `dvc push` / `dvc pull` work with no set-up (default remote `local`, a folder
    beside the checkout); a forced re-run of a stage gives byte-identical outputs (dvc.lock unchanged)."""
    work, env = dvc_project
    dvc = [sys.executable, "-m", "dvc"]
    shutil.copy(repo_root / ".dvc" / "config", work / ".dvc" / "config")
    remote = work.parent / "get3d-dvc-remote"
    assert str(remote) in _run(dvc + ["remote", "list"], work, env)

    _run(dvc + ["repro", "assets"], work, env)
    lock = (work / "dvc.lock").read_text()
    out = _run(dvc + ["repro", "--force", "assets"], work, env)
    assert "Running stage 'assets'" in out
    assert (work / "dvc.lock").read_text() == lock, "a second run of the same stage changed its outputs"

    # targets: the other stages never ran here, so their outputs are in no cache
    assert "pushed" in _run(dvc + ["push", "assets"], work, env)
    assert any(p.is_file() for p in remote.rglob("*"))
    manifest = work / "data" / "assets" / "manifest.json"
    before = manifest.read_bytes()
    shutil.rmtree(work / "data" / "assets")
    shutil.rmtree(work / ".dvc" / "cache")
    assert "not in cache" in _run(dvc + ["status", "assets"], work, env)

    _run(dvc + ["pull", "assets"], work, env)
    assert manifest.read_bytes() == before
    assert "up to date" in _run(dvc + ["status", "assets"], work, env)
    assert "in sync" in _run(dvc + ["status", "--cloud", "assets"], work, env)
