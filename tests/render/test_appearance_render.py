"""Untextured and vertex-coloured meshes render (Blender): a geometry-only OBJ in the neutral grey material,
vertex colours of OBJ, PLY and GLB files kept."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from get3d.render.stage import render_dataset
from get3d.render.testing import small_cfg, write_appearance_fixtures

pytestmark = pytest.mark.render
OBJECTS = ("obj_none", "obj_vertex_colors", "ply_vertex_colors", "glb_vertex_colors")


def test_untextured_and_vertex_coloured_meshes_render(tmp_path):
    paths = write_appearance_fixtures(tmp_path / "meshes")
    items = [{"id": name, "mesh": str(paths[name]), "scale": 1.2, "split": "train"} for name in OBJECTS]
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 1, "items": items}))
    cfg = small_cfg(resolution=32, views_per_object=4, samples=4, workers=1, max_failure_fraction=0.0)
    s = render_dataset(tmp_path / "manifest.json", tmp_path / "o.h5", cfg, tmp_path / "w", progress=False)
    assert s["counts"]["rendered"] == len(OBJECTS)
    assert s["counts"]["rendered_as"] == {"neutral_material": 1, "vertex_colors": 3}
    with h5py.File(s["h5"], "r") as h:
        ids = [i.decode() if isinstance(i, bytes) else i for i in h["object_ids"][:]]
        index, images = h["object_index"][:], h["images"][:]
    for k, name in enumerate(ids):
        rgb = images[index == k][..., :3].astype(int)[images[index == k][..., 3] == 255]
        assert len(rgb) > 100, name
        spread = rgb.max(-1) - rgb.min(-1)
        if name == "obj_none":  # the neutral grey material under white light: grey pixels, lit
            assert np.mean(spread <= 6) > 0.95 and 40 < rgb.mean() < 250, (name, spread.max(), rgb.mean())
        else:  # red where x < 0, blue elsewhere: both colours show, not Cycles' default grey
            red = np.mean((rgb[:, 0] > rgb[:, 2] + 40) & (rgb[:, 0] > rgb[:, 1] + 40))
            blue = np.mean((rgb[:, 2] > rgb[:, 0] + 40) & (rgb[:, 2] > rgb[:, 1] + 40))
            assert red > 0.05 and blue > 0.05 and red + blue > 0.5, (name, red, blue)
