"""The dataset format's one writer and reader: round trip, content hash, clear errors, nothing half-written."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from get3d.dataset import format as fmt


def _objects(n=3, views=2, res=8, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        az = rng.uniform(0, 6.28, views).astype(np.float32)
        po = rng.uniform(0.5, 1.5, views).astype(np.float32)
        c2w = np.tile(np.eye(4, dtype=np.float32), (views, 1, 1))
        c2w[:, 0, 3] = k
        out.append(fmt.ObjectViews(id=f"o{k}", synset="s", split=fmt.SPLITS[k % 3],
                                   rgba=rng.integers(0, 256, (views, res, res, 4), dtype=np.uint8),
                                   azimuth=az, polar=po, c2w=c2w))
    return out


INFO = fmt.DatasetInfo(resolution=8, views_per_object=2, fovy_deg=49.0, radius=1.2, source="t",
                       config={"elevation_min_deg": 0.0, "elevation_max_deg": 30.0})


def test_round_trip_and_hash(tmp_path):
    objs = _objects()
    w = fmt.write_dataset(tmp_path / "d.h5", objs, INFO)
    idx = fmt.read_index(tmp_path / "d.h5")
    assert idx.object_ids == ["o0", "o1", "o2"] and idx.object_split == ["train", "val", "test"]
    assert idx.resolution == 8 and idx.views_per_object == 2 and idx.content_hash == w.dataset_hash
    assert idx.rows_of_splits(["val"]).tolist() == [2, 3]
    np.testing.assert_array_equal(idx.view_index, [0, 1] * 3)
    np.testing.assert_array_equal(idx.azimuth, np.concatenate([o.azimuth for o in objs]))
    with fmt.open_dataset(tmp_path / "d.h5") as f:
        np.testing.assert_array_equal(f["images"][2:4], objs[1].rgba)
        np.testing.assert_array_equal(f["masks"][:], (f["images"][:][..., 3] > 0))
    assert fmt.dataset_hash(tmp_path / "d.h5")["sha256"] == w.dataset_hash
    assert fmt.render_settings(tmp_path / "d.h5") == {**INFO.config, "radius": 1.2, "fovy_deg": 49.0}
    # same content, same hash (and same bytes); other content, other hash
    assert fmt.write_dataset(tmp_path / "e.h5", objs, INFO).dataset_hash == w.dataset_hash
    assert (tmp_path / "e.h5").read_bytes() == (tmp_path / "d.h5").read_bytes()
    assert fmt.write_dataset(tmp_path / "f.h5", _objects(seed=1), INFO).dataset_hash != w.dataset_hash


def test_bad_input_names_file_and_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        fmt.read_index(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(fmt.DatasetFormatError, match="junk.h5: cannot read HDF5"):
        fmt.read_index(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((1, 2, 2, 4), np.uint8))
    with pytest.raises(fmt.DatasetFormatError, match="partial.h5: missing dataset 'azimuth'"):
        fmt.read_index(tmp_path / "partial.h5")
    with pytest.raises(fmt.DatasetFormatError, match="no 'dataset_hash'"):
        fmt.dataset_hash(tmp_path / "partial.h5")


def test_wrong_shape_leaves_nothing_behind(tmp_path):
    objs = _objects()
    bad = objs[:2] + [fmt.ObjectViews(**{**objs[2].__dict__, "rgba": np.zeros((2, 4, 4, 4), np.uint8)})]
    with pytest.raises(fmt.DatasetFormatError, match=r"o2: views of shape \(2, 4, 4, 4\)"):
        fmt.write_dataset(tmp_path / "d.h5", bad, INFO)
    assert list(tmp_path.iterdir()) == []
