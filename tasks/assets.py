from __future__ import annotations

from pathlib import Path

from prefect import task

from get3d.assets.stage import build_assets
from tasks.common import params


@task(name="assets")
def assets_task(params_path: str, out_dir: str) -> str:
    """Materialise/validate the asset source; returns the manifest path."""
    build_assets(params(params_path, "assets").assets, out_dir)
    return str(Path(out_dir) / "manifest.json")
