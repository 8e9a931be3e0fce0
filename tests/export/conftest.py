"""Fixtures of the export tests: one smoke-config generator snapshot and one export-stage run per session."""
from __future__ import annotations

import pytest
from export_helpers import small_export, viewer_available, write_snapshot


@pytest.fixture(scope="session")
def snapshot(tmp_path_factory):
    return write_snapshot(tmp_path_factory.mktemp("model") / "generator.pt")


@pytest.fixture(scope="session")
def export_run(snapshot, tmp_path_factory):
    """The export stage on a small synthetic render-stage dataset (its reference features computed in memory)."""
    from get3d.export.stage import run_export
    from get3d.render.testing import synthetic_dataset

    root = tmp_path_factory.mktemp("export_stage")
    dataset = synthetic_dataset(root / "data", n_objects=4, views=3, resolution=32, seed=0)
    cfg = small_export(seeds="0-2", fid_samples=4, turntable_frames=4, gallery=viewer_available())
    out = root / "export"
    return {"out": out, "dataset": dataset, "cfg": cfg,
            "result": run_export(snapshot, out, cfg, dataset_h5=dataset)}
