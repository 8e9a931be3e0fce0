"""What every stage task shares: the workspace layout, validated params, retry policy, result files."""
from __future__ import annotations

import json
from pathlib import Path

from get3d.config import Params, load_params
from get3d.dvcstage import PATHS

#: Transient failures (a lost NFS mount, a busy tracking server, an OOM-killed worker) get two more tries;
#: a deterministic failure fails three times, and the flow run fails with its message.
RETRIES = 2
RETRY_DELAYS_S = [10, 60]


def workspace(root: str | Path) -> Path:
    """The project checkout the stages run in (a DVC workspace)."""
    path = Path(root).resolve()
    if not (path / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{path}: no dvc.yaml here; the flows run in a checkout of the project")
    return path


def path(root: Path, name: str) -> Path:
    """Absolute path of one of the pipeline's files (the ones ``dvc.yaml`` names)."""
    return root / PATHS[name]


def params(root: Path, *sections: str) -> Params:
    """Validate the sections a task reads (fails the task before any work on a bad params.yaml)."""
    return load_params(path(root, "params"), only=list(sections))


def read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: expected this stage output; is the workspace's dvc.lock current?") \
            from None
