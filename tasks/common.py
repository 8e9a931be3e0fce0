"""What every stage task shares: the workspace layout, validated params, retry policy, result files."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from prefect.cache_policies import NO_CACHE

from get3d.config import Params, load_params
from get3d.dvcstage import PATHS

#: Transient failures (I/O errors of shared storage, an unreachable tracking server, DVC's lock held by another
#: command, a CUDA out-of-memory on a shared card) get two more tries; anything else (bad params, a missing
#: input, a bug) fails the task at once with its message, since a retry would fail the same way.
RETRIES = 2
RETRY_DELAYS_S = [10, 60]
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_TRANSIENT_NAMES = {"TrackingError", "DvcCommandError", "OutOfMemoryError", "TimeoutExpired"}


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _PERMANENT_OS_ERRORS):
        return False
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only :func:`is_transient` failures."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


#: keyword arguments of every stage task's ``@task``: retries of transient failures; no Prefect result cache
#: (``dvc.lock`` decides what is reused, see ``tasks/__init__.py``)
RETRY = {"retries": RETRIES, "retry_delay_seconds": RETRY_DELAYS_S, "retry_condition_fn": retry_if_transient,
         "cache_policy": NO_CACHE}


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


def tracking_in(ws: Path, cfg):
    """The ``tracking`` section with its local store paths (``sqlite:///<relative>``, ``artifact_location``)
    taken relative to the workspace, as the DVC stages (run from the checkout) see them."""
    uri = cfg.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(ws / uri[len('sqlite:///'):]).resolve()}"
    location = cfg.artifact_location
    if location and "://" not in location and not Path(location).is_absolute():
        location = str((ws / location).resolve())
    return dataclasses.replace(cfg, uri=uri, artifact_location=location)


def read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: expected this stage output; is the workspace's dvc.lock current?") \
            from None
