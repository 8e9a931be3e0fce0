"""Run a pipeline stage's function under DVC's bookkeeping, whatever the entry point (CLI, Prefect, a script).

``dvc.lock`` is the one record of which results belong to which inputs.  An orchestrator that calls a stage
function directly (instead of ``dvc repro``) asks DVC first whether the stage is up to date (same deps,
params, command as the lock; outputs present and unmodified) and reuses the results if so; otherwise it runs
the function and commits the stage (``dvc commit <stage>``), so the lock describes the new results exactly as
``dvc repro`` would have written it.  Afterwards ``dvc status`` is clean and ``dvc repro`` has nothing to do.

The stage function must write the stage's outputs at the paths ``dvc.yaml`` names (see :data:`PATHS`).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

#: Workspace-relative paths the DVC stages pass to the ``get3d`` CLI (``dvc.yaml``); every other entry point
#: uses the same ones, so its outputs are the outputs DVC tracks (``tests/test_dvcstage.py`` checks them).
PATHS = {
    "params": "params.yaml",
    "assets": "data/assets",
    "manifest": "data/assets/manifest.json",
    "dataset": "data/dataset/dataset.h5",
    "render_work": "data/render_work",
    "train_run": "data/train",
    "model": "data/model/generator.pt",
    "reference": "data/reference",
    "metrics": "data/metrics",
    "export": "data/export",
    "register": "data/register",
}


class DvcStageError(RuntimeError):
    """The workspace is not a DVC project, or it has no such stage."""


class DvcCommandError(DvcStageError):
    """A DVC command failed (e.g. another DVC command holds the repository lock)."""


@dataclass
class StageRun:
    """What :func:`run_stage` did: ``ran`` False means the locked results were reused."""

    stage: str
    ran: bool
    changes: list[str] = field(default_factory=list)
    result: Any = None


def _dvc(root: Path, *args: str) -> str:
    """One DVC command in the workspace (its own process: DVC resolves paths from the working directory)."""
    root = Path(root)
    if not (root / ".dvc").is_dir():
        raise DvcStageError(f"{root}: not a DVC project (no .dvc/ folder); run `git init && dvc init` there "
                            "so that every entry point records its results in dvc.lock")
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], check=False, cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    if proc.returncode != 0:
        raise DvcCommandError(f"`dvc {' '.join(args)}` in {root} failed (exit {proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


def pipeline_stages(root: str | Path) -> list[str]:
    """Names of the stages ``dvc.yaml`` defines."""
    path = Path(root) / "dvc.yaml"
    try:
        return list((yaml.safe_load(path.read_text()) or {}).get("stages", {}))
    except (OSError, yaml.YAMLError) as exc:
        raise DvcStageError(f"{path}: cannot read the pipeline ({exc})") from None


def _describe(entry) -> str:
    if isinstance(entry, dict):
        return "; ".join(f"{k}: {v}" for k, v in entry.items())
    return str(entry)


def stage_changes(root: str | Path, stage: str) -> list[str]:
    """Why ``stage`` is out of date (``dvc status <stage>``); empty when its locked results are current."""
    if stage not in pipeline_stages(root):
        raise DvcStageError(f"{Path(root) / 'dvc.yaml'}: no stage named {stage!r}")
    out = _dvc(Path(root), "status", "--json", stage)
    status = json.loads(out or "{}")
    return [_describe(e) for e in status.get(stage, [])]


def commit_stage(root: str | Path, stage: str) -> None:
    """Record the stage's current deps, params and outputs in ``dvc.lock`` (``dvc commit -f <stage>``)."""
    _dvc(Path(root), "commit", "--force", stage)
    leftover = stage_changes(root, stage)
    if leftover:
        raise DvcCommandError(f"dvc commit {stage}: still out of date afterwards ({'; '.join(leftover)})")


def run_stage(root: str | Path, stage: str, fn: Callable[[], Any], *, force: bool = False) -> StageRun:
    """Run ``fn`` (the stage function) unless DVC says ``stage`` is up to date; then commit the stage.

    ``force`` runs it even when DVC sees no change (an input DVC does not track changed, e.g. an external
    asset folder).  A failing ``fn`` leaves ``dvc.lock`` untouched (the stage stays out of date).
    """
    changes = stage_changes(root, stage)
    if not changes and not force:
        log.info("%s: up to date in dvc.lock, reusing its results", stage)
        return StageRun(stage, ran=False)
    log.info("%s: running (%s)", stage, "; ".join(changes) if changes else "forced")
    result = fn()
    commit_stage(root, stage)
    return StageRun(stage, ran=True, changes=changes or ["forced"], result=result)
