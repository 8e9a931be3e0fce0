"""ShapeNet v1/v2, RenderPeople and folder sources on fixtures written here, broken files included."""
import json
import math

import numpy as np
import pytest

from get3d.assets import procedural
from get3d.assets.config import AssetsConfig
from get3d.assets.stage import StageFailed, build_assets, load_manifest
from get3d.assets.sources import AssetError, AssetItem, assign_splits, inspect_item, normalization

SYN = "03001627"


def _write_good(folder, name="model.obj", offset=(0.0, 0.0, 0.0), scale=1.0):
    folder.mkdir(parents=True, exist_ok=True)
    mesh = procedural.build_model(0, 1)[0]
    mesh.verts = [v * scale + np.asarray(offset) for v in mesh.verts]
    (folder / name).write_text(procedural.obj_text(mesh))
    (folder / "model.mtl").write_text(procedural.mtl_text())
    (folder / "images").mkdir(exist_ok=True)
    (folder / "images" / "texture0.png").write_bytes(procedural._texture(np.random.default_rng(0), 16))


def _broken_fixtures(base):
    """One folder per failure mode; returns {id: expected reason fragment}."""
    (base / "empty").mkdir(parents=True)
    (base / "empty" / "model.obj").write_text("")
    _write_good(base / "nomtl")
    (base / "nomtl" / "model.mtl").unlink()
    _write_good(base / "notex")
    (base / "notex" / "images" / "texture0.png").unlink()
    (base / "nanverts").mkdir()
    (base / "nanverts" / "model.obj").write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n")
    (base / "garbage").mkdir()
    (base / "garbage" / "model.obj").write_bytes(bytes(range(256)) * 8)
    (base / "nofaces").mkdir()
    (base / "nofaces" / "model.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    _write_good(base / "faraway", offset=(5.0, 0.0, 0.0))
    return {"empty": "empty file", "nomtl": "missing material file model.mtl",
            "notex": "missing texture images/texture0.png", "nanverts": "NaN/Inf",
            "garbage": "not a mesh: binary data", "nofaces": "empty mesh", "faraway": "far off the origin"}


def _cfg(**kw):
    base = dict(source="shapenet_v1", root="/nonexistent", synset=SYN, max_failure_fraction=1.0)
    base.update(kw)
    return AssetsConfig(**base)


def test_shapenet_v1_reports_each_broken_item_and_keeps_the_good(tmp_path):
    root = tmp_path / "ShapeNetCore.v1"
    for i in range(3):
        _write_good(root / SYN / f"good{i}")
    expected = _broken_fixtures(root / SYN)
    manifest = build_assets(_cfg(root=str(root)), tmp_path / "out")
    assert sorted(i["id"] for i in manifest["items"]) == ["good0", "good1", "good2"]
    reasons = {f["id"]: f["reason"] for f in manifest["failures"]}
    assert set(reasons) == set(expected)
    for key, fragment in expected.items():
        assert fragment in reasons[key], (key, reasons[key])
    assert json.loads((tmp_path / "out" / "failures.json").read_text()) == manifest["failures"]
    loaded = load_manifest(tmp_path / "out" / "manifest.json")
    assert all(p["mesh_path"].endswith("model.obj") for p in loaded["items"])


def test_shapenet_v2_layout(tmp_path):
    root = tmp_path / "ShapeNetCore.v2"
    for i in range(2):
        _write_good(root / SYN / f"m{i}" / "models", name="model_normalized.obj")
    manifest = build_assets(_cfg(source="shapenet_v2", root=str(root)), tmp_path / "out")
    assert [i["id"] for i in manifest["items"]] == ["m0", "m1"]
    assert all(i["mesh"].endswith("models/model_normalized.obj") for i in manifest["items"])


def test_folder_source_obj_glb_ply(tmp_path):
    import trimesh

    root = tmp_path / "meshes"
    _write_good(root / "a")
    sub = root / "nested"
    sub.mkdir(parents=True)
    trimesh.creation.box().export(sub / "box.glb")
    trimesh.creation.icosphere().export(sub / "ball.ply")
    (sub / "broken.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 99\nend_header\n1 2\n")
    manifest = build_assets(_cfg(source="folder", root=str(root)), tmp_path / "out")
    assert sorted(i["id"] for i in manifest["items"]) == ["a_model", "nested_ball", "nested_box"]
    assert [f["id"] for f in manifest["failures"]] == ["nested_broken"]


def test_renderpeople_folders(tmp_path):
    root = tmp_path / "people"
    _write_good(root / "rp_alice_posed_001")
    (root / "rp_bob").mkdir(parents=True)
    (root / "rp_bob" / "bob.fbx").write_bytes(b"Kaydara FBX Binary")
    manifest = build_assets(_cfg(source="renderpeople", root=str(root)), tmp_path / "out")
    assert [i["id"] for i in manifest["items"]] == ["rp_alice_posed_001"]
    assert "FBX is not supported" in manifest["failures"][0]["reason"]


def test_failure_fraction_gate_names_items(tmp_path):
    root = tmp_path / "v1"
    _write_good(root / SYN / "good")
    _broken_fixtures(root / SYN)
    with pytest.raises(StageFailed, match=r"7/8 items failed .* max_failure_fraction 25%"):
        build_assets(_cfg(root=str(root), max_failure_fraction=0.25), tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()  # no manifest that looks complete
    assert len(json.loads((tmp_path / "out" / "failures.json").read_text())) == 7


def test_too_many_faces_rejected(tmp_path):
    _write_good(tmp_path / "m")
    with pytest.raises(AssetError, match="too many faces"):
        inspect_item(AssetItem("m", tmp_path / "m" / "model.obj", SYN), max_faces=10)


def test_normalization_scales_largest_side_without_recentering(tmp_path):
    _write_good(tmp_path / "m", offset=(0.1, 0.0, 0.0), scale=3.0)
    stats = inspect_item(AssetItem("m", tmp_path / "m" / "model.obj", SYN), max_faces=10**6)
    scale, t = normalization(stats, 0.9, recenter=False, max_offcenter=0.5)
    assert math.isclose(stats.extent * scale, 0.9) and t == [0.0, 0.0, 0.0]
    scale, t = normalization(stats, 0.9, recenter=True, max_offcenter=0.5)
    assert np.allclose(stats.center * scale + np.asarray(t), 0)


def test_splits_are_deterministic_and_exact():
    ids = [f"id{i}" for i in range(100)]
    a, b = assign_splits(ids, (0.7, 0.1, 0.2), 0), assign_splits(list(reversed(ids)), (0.7, 0.1, 0.2), 0)
    assert a == b
    assert [sum(v == s for v in a.values()) for s in ("train", "val", "test")] == [70, 10, 20]
    assert assign_splits(ids, (0.7, 0.1, 0.2), 1) != a


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no synset folder"):
        build_assets(_cfg(root=str(tmp_path / "nope")), tmp_path / "out")
