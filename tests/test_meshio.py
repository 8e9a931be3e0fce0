"""get3d.meshio: OBJ/MTL/PNG and GLB writers read back by trimesh, deterministic bytes, all-or-nothing writes."""
from __future__ import annotations

import numpy as np
import pytest

from get3d import meshio


def _quad_mesh() -> meshio.TexturedMesh:
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32) * 0.5
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int64)
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:4] = (255, 0, 0)   # top half red (v > 0.5)
    tex[4:] = (0, 0, 255)   # bottom half blue
    return meshio.TexturedMesh(verts, faces, uvs, tex)


def test_obj_text_layout_and_reader(tmp_path):
    m = _quad_mesh()
    text = meshio.obj_text(m.verts, m.faces, m.uvs, mtllib="a.mtl", material="m", comments=["hello"])
    assert text.splitlines()[:3] == ["# hello", "mtllib a.mtl", "usemtl m"]
    assert "f 1/1 2/2 3/3" in text
    path = meshio.write_obj(tmp_path / "a.obj", m.verts, m.faces)
    v, f = meshio.read_obj(path)
    np.testing.assert_allclose(v, m.verts, atol=1e-6)
    np.testing.assert_array_equal(f, m.faces)
    (tmp_path / "bad.obj").write_text("v 0 0 zero\n")
    with pytest.raises(meshio.MeshIOError, match=r"bad.obj:1: malformed"):
        meshio.read_obj(tmp_path / "bad.obj")


@pytest.mark.parametrize("fmt", ["obj", "glb"])
def test_textured_round_trip_through_trimesh(tmp_path, fmt):
    m = _quad_mesh()
    with meshio.StagedFiles() as st:
        path = (meshio.write_textured_obj(st, tmp_path / "q.obj", m)["obj"] if fmt == "obj"
                else meshio.write_glb(st, tmp_path / "q.glb", m))
    back = meshio.load_textured(path)
    np.testing.assert_allclose(back.verts, m.verts, atol=1e-6)
    np.testing.assert_array_equal(back.faces, m.faces)
    np.testing.assert_allclose(back.uvs, m.uvs, atol=1e-6)  # both come back in the OBJ convention
    np.testing.assert_array_equal(back.texture, m.texture)
    # v = 0.9 is near the top of the image (red), v = 0.1 near the bottom (blue)
    top, bottom = meshio.sample_texture(back.texture, np.array([[0.5, 0.9], [0.5, 0.1]]))
    assert tuple(top) == (255, 0, 0) and tuple(bottom) == (0, 0, 255)


def test_glb_header_json_and_determinism(tmp_path):
    m = _quad_mesh()
    a, b = meshio.glb_bytes(m, "q"), meshio.glb_bytes(m, "q")
    assert a == b and len(a) % 4 == 0
    (tmp_path / "q.glb").write_bytes(a)
    js = meshio.read_glb_json(tmp_path / "q.glb")
    assert js["asset"]["version"] == "2.0" and js["images"][0]["mimeType"] == "image/png"
    assert js["accessors"][0]["max"] == pytest.approx([0.5, 0.5, 0.0])
    (tmp_path / "trunc.glb").write_bytes(a[:-4])
    with pytest.raises(meshio.MeshIOError, match="trunc.glb: not a glTF 2.0 binary"):
        meshio.read_glb_json(tmp_path / "trunc.glb")


def test_staged_files_leave_nothing_on_error(tmp_path):
    m = _quad_mesh()
    bad = meshio.TexturedMesh(m.verts, m.faces + 10, m.uvs, m.texture)
    with pytest.raises(meshio.MeshIOError, match="faces must be"), meshio.StagedFiles() as st:
        meshio.write_textured_obj(st, tmp_path / "good.obj", m)
        meshio.write_glb(st, tmp_path / "bad.glb", bad)
    assert list(tmp_path.iterdir()) == []
