"""Shared fixture for render tests: one small clean render per test run (64², 4 views, 4 samples)."""
from __future__ import annotations

from pathlib import Path

import pytest

from get3d.render.testing import make_test_assets, render_python_or_none, small_cfg


def require_render_env() -> Path:
    p = render_python_or_none()
    if p is None:
        pytest.skip("render environment missing: .venv-render/bin/python not found (create it from "
                    "envs/render-requirements.txt or set GET3D_RENDER_PYTHON)")
    return p


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory):
    require_render_env()
    from get3d.render.stage import render_dataset

    root = tmp_path_factory.mktemp("clean")
    manifest = make_test_assets(root / "assets")
    cfg = small_cfg()
    summary = render_dataset(manifest, root / "out" / "renders.h5", cfg, root / "work", progress=False)
    return {"root": root, "manifest": manifest, "cfg": cfg, "summary": summary,
            "h5": Path(summary["h5"]), "json": Path(summary["manifest"])}


@pytest.fixture(autouse=True)
def _skip_render_tests_without_env(request):
    """Every test marked `render` skips with the reason when the render venv is missing."""
    if request.node.get_closest_marker("render") is not None:
        require_render_env()
