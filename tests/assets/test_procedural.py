import numpy as np
import trimesh

from get3d.assets import procedural
from get3d.io import sha256_files


def _tree_hash(root):
    return sha256_files([p for p in root.rglob("*") if p.is_file()], root=root)


def test_same_seed_byte_identical_and_different_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    procedural.write_category(a, "99000001", 6, seed=3, texture_size=32)
    procedural.write_category(b, "99000001", 6, seed=3, texture_size=32)
    procedural.write_category(c, "99000001", 6, seed=4, texture_size=32)
    assert _tree_hash(a) == _tree_hash(b)
    assert _tree_hash(a) != _tree_hash(c)


def test_shapenet_v1_layout_and_loadable_with_textures(tmp_path):
    paths = procedural.write_category(tmp_path, "99000001", 3, seed=0, texture_size=32)
    for obj in paths:
        folder = obj.parent
        assert obj.name == "model.obj" and folder.parent.name == "99000001" and len(folder.name) == 32
        assert (folder / "model.mtl").read_text().strip().endswith("map_Kd images/texture0.png")
        assert (folder / "images" / "texture0.png").is_file()
        mesh = trimesh.load(obj, force="mesh")
        assert len(mesh.faces) > 100
        assert mesh.visual.uv is not None and len(mesh.visual.uv) == len(mesh.vertices)
        assert np.isfinite(mesh.vertices).all()


def test_bounding_box_centred():
    for i in range(8):
        v = procedural.build_model(0, i)[0].arrays()[0]
        assert np.allclose((v.min(0) + v.max(0)) / 2, 0, atol=1e-9)


def test_category_has_varied_topology():
    """Across a small category we see every leg, back and arm style, i.e. frames, rings (holes) and handles."""
    styles = [procedural.build_model(0, i)[1] for i in range(40)]
    for part, kinds in {"legs": {"four", "pedestal", "sled"}, "back": {"panel", "slats", "ring"},
                        "arms": {"none", "handle", "rail"}}.items():
        assert {s[part] for s in styles} == kinds


def test_ring_back_has_a_through_hole():
    """A ring part is a closed tube: a genus-1 surface (Euler characteristic 0)."""
    mesh = procedural.PartMesh()
    path = procedural._arc((0, 0, 0), 0.2, 0, 2 * np.pi, "xy", 24)[:-1]
    procedural._tube(mesh, path, 0.02, closed=True)
    v, _, f = mesh.arrays()
    tm = trimesh.Trimesh(v, f[:, :3], process=True)
    assert tm.is_watertight and tm.euler_number == 0
