"""Change detection of the asset source against the last manifest (content hashes)."""
import dataclasses
import json
import shutil

from get3d.assets.changes import diff_manifests, scan_changes
from get3d.assets.config import AssetsConfig
from get3d.assets.stage import build_assets


def test_diff_manifests_by_id_and_hash():
    old = {"items": [{"id": "a", "sha256": "1"}, {"id": "b", "sha256": "2"}, {"id": "c", "sha256": "3"}]}
    new = {"items": [{"id": "a", "sha256": "1"}, {"id": "b", "sha256": "X"}, {"id": "d", "sha256": "4"}]}
    assert diff_manifests(old, new) == {"added": ["d"], "changed": ["b"], "removed": ["c"], "total": 3}
    assert diff_manifests(None, new)["added"] == ["a", "b", "d"]


def test_scan_finds_a_new_and_a_changed_file_in_a_folder_source(tmp_path):
    gen = AssetsConfig(count=3, texture_size=16)
    build_assets(gen, tmp_path / "procedural")
    src = tmp_path / "src"
    meshes = sorted((tmp_path / "procedural").rglob("model.obj"))
    for i, obj in enumerate(meshes[:2]):
        shutil.copytree(obj.parent, src / f"m{i}")
    cfg = dataclasses.replace(gen, source="folder", root=str(src))
    manifest = tmp_path / "assets" / "manifest.json"
    build_assets(cfg, manifest.parent)

    scratch = tmp_path / "scratch"
    same = scan_changes(cfg, manifest, scratch)
    assert not same["any"] and same["total"] == 2
    assert list(scratch.iterdir()) == []  # the scan leaves nothing behind

    shutil.copytree(meshes[2].parent, src / "m2")
    obj = next((src / "m0").rglob("model.obj"))
    obj.write_text(obj.read_text() + "\n# edited\n")
    diff = scan_changes(cfg, manifest, scratch)
    assert diff["any"] and len(diff["added"]) == 1 and len(diff["changed"]) == 1 and not diff["removed"]
    assert json.loads(manifest.read_text())["counts"]["ok"] == 2  # the workspace's manifest is untouched
