"""What colours a mesh carries, what render does with it, and that the assets and render stages agree."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from get3d.appearance import AppearanceError, mesh_appearance, render_plan
from get3d.assets.config import AssetsConfig
from get3d.assets.stage import build_assets
from get3d.render.config import RenderConfig
from get3d.render.stage import load_manifest, object_render_as, validate_object
from get3d.render.testing import write_appearance_fixtures

REPO = Path(__file__).resolve().parents[1]
EXPECTED_APPEARANCE = {"obj_texture": "texture", "glb_texture": "texture",
                       "obj_vertex_colors": "vertex_colors", "ply_vertex_colors": "vertex_colors",
                       "glb_vertex_colors": "vertex_colors", "obj_material_colors": "material_colors",
                       "glb_material_colors": "material_colors", "obj_none": "none", "ply_none": "none",
                       "glb_none": "none"}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("appearance") / "meshes"
    return root, write_appearance_fixtures(root)


def test_each_file_kind_is_classified(fixtures):
    _, paths = fixtures
    assert set(paths) == set(EXPECTED_APPEARANCE)
    assert {name: mesh_appearance(p) for name, p in paths.items()} == EXPECTED_APPEARANCE


def test_obj_texture_wins_over_vertex_colours_and_missing_mtl_is_not_a_texture(tmp_path):
    (tmp_path / "m.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd t.png\n")
    (tmp_path / "both.obj").write_text("mtllib m.mtl\nv 0 0 0 1 0 0\nv 1 0 0 1 0 0\nv 0 1 0 1 0 0\nf 1 2 3\n")
    assert mesh_appearance(tmp_path / "both.obj") == "texture"
    (tmp_path / "lost.obj").write_text("mtllib gone.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert mesh_appearance(tmp_path / "lost.obj") == "none"  # the stages fail it as a missing material file


@pytest.mark.parametrize("name, data, match", [
    ("bad.glb", b"glTF\x02\x00\x00\x00" + b"\x00" * 4 + b"\x05\x00\x00\x00BIN\x00abcde", "not JSON"),
    ("bad.glb", b"GLTF" + b"\x00" * 30, "bad magic"),
    ("bad.glb", b"glTF\x02\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00JSON{oops", "unreadable glTF JSON"),
    ("bad.gltf", b"{not json", "unreadable glTF JSON"),
    ("bad.ply", b"solid x\n", "not a PLY file"),
])
def test_unreadable_files_name_the_file_and_reason(tmp_path, name, data, match):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(AppearanceError, match=rf"{name}: .*{match}"):
        mesh_appearance(tmp_path / name)


def test_render_plan_under_each_policy():
    allow = {a: render_plan(a, "allow") for a in ("texture", "vertex_colors", "material_colors", "none")}
    assert allow == {"texture": "textured", "vertex_colors": "vertex_colors",
                     "material_colors": "material_colors", "none": "neutral_material"}
    refuse = {a: render_plan(a, "refuse") for a in allow}
    assert refuse == {"texture": "textured", "vertex_colors": "refused", "material_colors": "refused",
                      "none": "refused"}
    with pytest.raises(ValueError, match="render.untextured: 'never'"):
        render_plan("none", "never")
    with pytest.raises(ValueError, match="unknown appearance 'shiny'"):
        render_plan("shiny", "allow")


@pytest.mark.parametrize("policy", ["allow", "refuse"])
def test_assets_reports_what_render_does_and_render_agrees(fixtures, tmp_path, policy):
    root, paths = fixtures
    cfg = AssetsConfig(source="folder", root=str(root), max_failure_fraction=0.0)
    manifest = build_assets(cfg, tmp_path / "assets", untextured=policy)
    items = {it["id"]: it for it in manifest["items"]}
    assert len(items) == len(paths)  # every kind passes the assets stage; nothing is dropped silently
    by_file = {Path(it["mesh"]).resolve(): it for it in items.values()}
    for name, path in paths.items():
        it = by_file[path.resolve()]
        assert it["appearance"] == EXPECTED_APPEARANCE[name]
        assert it["render_as"] == render_plan(EXPECTED_APPEARANCE[name], policy)
    counts = manifest["counts"]["render_as"]
    assert sum(counts.values()) == len(paths)
    assert counts.get("refused", 0) == (8 if policy == "refuse" else 0)
    assert manifest["render_untextured"] == policy

    render_cfg = RenderConfig(untextured=policy, max_extent=1.0)
    for spec in load_manifest(tmp_path / "assets" / "manifest.json").items:
        want = items[spec.id]["render_as"]
        assert object_render_as(spec, render_cfg) == want
        verdict = validate_object(spec, render_cfg)
        if want == "refused":
            assert verdict[0] == "untextured" and "render.untextured is 'refuse'" in verdict[1], verdict
        else:
            assert verdict is None, (spec.id, verdict)


def test_cli_prints_the_render_plan(fixtures, tmp_path):
    root, _ = fixtures
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["assets"].update(source="folder", root=str(root), max_failure_fraction=0.0)
    params["render"]["untextured"] = "refuse"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "get3d.cli", "assets", "--params", str(tmp_path / "params.yaml"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "render will draw: 2 textured, 8 refused (render.untextured: refuse)" in proc.stdout
    assert proc.stdout.count("refused by render: ") == 8 and "obj_none: no image texture (none)" in proc.stdout
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["render_as"] == \
        {"textured": 2, "refused": 8}
