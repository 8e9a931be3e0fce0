"""The training dataset and the GET3D exporter on a real render (shares the test run's clean render)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from get3d.dataset import RenderedViews, make_loader
from get3d.dataset.get3d_layout import export_get3d_layout, load_get3d_layout

pytestmark = pytest.mark.render


def test_loader_two_workers_on_rendered_views(clean_run):
    ds = RenderedViews(clean_run["h5"], resolution=32, split=None)
    assert len(ds) == 16
    n = 0
    for batch in make_loader(ds, batch_size=4, num_workers=2, drop_last=False):
        img, mask = batch["image"], batch["mask"]
        assert img.shape[1:] == (3, 32, 32) and mask.shape[1:] == (1, 32, 32)
        assert (img[(mask == 0).expand_as(img)] == -1).all()  # black outside the silhouette
        assert mask.amax() == 1.0 and 0 < mask.mean() < 1
        n += len(img)
    assert n == 16
    assert len(RenderedViews(clean_run["h5"], split="train")) == 8


def test_export_round_trip_on_rendered_views(clean_run, tmp_path):
    export_get3d_layout(clean_run["h5"], tmp_path)
    with h5py.File(clean_run["h5"], "r") as f:
        back = load_get3d_layout(tmp_path, "03001627", "obj001")
        np.testing.assert_array_equal(back["rgba"], f["images"][4:8])
        np.testing.assert_allclose(back["azimuth"], f["azimuth"][4:8], atol=1e-6)
        np.testing.assert_allclose(back["polar"], f["polar"][4:8], atol=1e-6)
