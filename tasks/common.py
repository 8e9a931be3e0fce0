"""Shared bits of the task wrappers."""
from __future__ import annotations

from pathlib import Path

from get3d.config import Params, load_params


def params(params_path: str | Path, *sections: str) -> Params:
    """Validate the sections a task reads (fails the task before any work on a bad file)."""
    return load_params(params_path, only=list(sections))
