"""RenderedViews dataset + DataLoader, and the GET3D-layout exporter round trip."""
from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from get3d.dataset import RenderedViews, make_loader
from get3d.dataset.get3d_layout import export_get3d_layout, load_get3d_layout
from get3d.dataset.get3d_layout import main as export_main
from get3d.render.testing import synthetic_dataset


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    return synthetic_dataset(tmp_path_factory.mktemp("syn"), n_objects=4, views=3, resolution=32)


def test_items_match_the_file(h5):
    ds = RenderedViews(h5, split="train")
    assert len(ds) == 2 * 3  # objects 0, 1 are train
    with h5py.File(h5, "r") as f:
        rgba = f["images"][0]
        az, po, c2w = f["azimuth"][0], f["polar"][0], f["c2w"][0]
    it = ds[0]
    assert it["image"].shape == (3, 32, 32) and it["mask"].shape == (1, 32, 32)
    m = rgba[..., 3] > 0
    np.testing.assert_array_equal(it["mask"][0].numpy(), m.astype(np.float32))
    expect = np.where(m[..., None], rgba[..., :3] / 255.0, 0.0) * 2 - 1
    np.testing.assert_allclose(it["image"].permute(1, 2, 0).numpy(), expect, atol=1e-6)
    assert it["image"].min() >= -1 and it["image"].max() <= 1
    assert (it["image"][:, ~torch.from_numpy(m)] == -1).all()  # black background
    np.testing.assert_allclose(it["camera"].numpy(), [az, po])
    np.testing.assert_allclose(it["c2w"].numpy(), c2w)
    assert it["object_index"] == 0


def test_splits_and_resolution(h5):
    assert len(RenderedViews(h5, split="val")) == 3 and len(RenderedViews(h5, split="test")) == 3
    assert len(RenderedViews(h5, split=None)) == 12
    assert len(RenderedViews(h5, split=["val", "test"])) == 6
    with pytest.raises(ValueError, match="split"):
        RenderedViews(h5, split="bogus")
    full, small = RenderedViews(h5, split=None), RenderedViews(h5, resolution=16, split=None)
    a, b = full[5], small[5]
    assert b["image"].shape == (3, 16, 16) and b["mask"].shape == (1, 16, 16)
    # area downsample: means are preserved, mask becomes coverage in [0, 1]
    np.testing.assert_allclose(b["mask"].mean(), a["mask"].mean(), atol=1e-6)
    np.testing.assert_allclose(((b["image"] + 1) / 2).mean(), ((a["image"] + 1) / 2).mean(), atol=1e-5)
    assert 0 < ((b["mask"] > 0) & (b["mask"] < 1)).sum()  # antialiased edge
    binary = RenderedViews(h5, resolution=16, split=None, mask_mode="binary")[5]["mask"]
    assert set(binary.unique().tolist()) <= {0.0, 1.0}


def test_pickle_drops_the_handle(h5):
    ds = RenderedViews(h5, split=None)
    _ = ds[0]
    assert ds._h5 is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None
    torch.testing.assert_close(clone[3]["image"], ds[3]["image"])


def test_dataloader_with_two_workers(h5):
    ds = RenderedViews(h5, resolution=16, split=None)
    loader = make_loader(ds, batch_size=4, shuffle=True, num_workers=2, seed=0, drop_last=False)
    seen = []
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 16, 16) and batch["camera"].shape[1:] == (2,)
        assert batch["c2w"].shape[1:] == (4, 4)
        seen += batch["object_index"].tolist()
    assert sorted(seen) == sorted(ds.object_index.tolist())


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="rendered dataset not found"):
        RenderedViews(tmp_path / "nope.h5")


def test_get3d_layout_round_trip(h5, tmp_path):
    counts = export_get3d_layout(h5, tmp_path / "layout")
    assert counts == {"objects": 4, "images": 12, "root": str(tmp_path / "layout")}
    with h5py.File(h5, "r") as f:
        ids = [x.decode() for x in f["object_ids"][:]]
        for k, oid in enumerate(ids):
            rows = np.nonzero(f["object_index"][:] == k)[0]
            back = load_get3d_layout(tmp_path / "layout", "03001627", oid)
            np.testing.assert_array_equal(back["rgba"], f["images"][rows[0]:rows[-1] + 1])
            np.testing.assert_allclose(back["azimuth"], f["azimuth"][rows], atol=1e-6)
            np.testing.assert_allclose(back["polar"], f["polar"][rows], atol=1e-6)
            elev = np.load(tmp_path / "layout" / "camera" / "03001627" / oid / "elevation.npy")
            assert np.all((elev >= 0) & (elev <= 60.0 + 1e-4))  # degrees, within the prior
    assert (tmp_path / "layout" / "split" / "train.txt").read_text().split() == ids[:2]
    assert (tmp_path / "layout" / "img" / "03001627" / ids[0] / "000.png").is_file()
    assert export_main([str(h5), str(tmp_path / "l2"), "--splits", "val"]) == 0
    assert sorted(p.name for p in (tmp_path / "l2" / "img" / "03001627").iterdir()) == [ids[2]]


def test_dataset_hash_reads_the_render_stage_hash(h5):
    from get3d.dataset import dataset_hash

    d = dataset_hash(h5)
    with h5py.File(h5, "r") as f:
        assert d["sha256"] == f.attrs["dataset_hash"] and d["images"] == 12 and d["resolution"] == 32
