"""Fast checks (no Blender): config validation, seeded cameras, input validation with named failures."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from get3d import cameras
from get3d.render.config import RenderConfig
from get3d.render.stage import (
    FailureGateError,
    RenderEnvironmentError,
    RenderError,
    file_stem,
    load_manifest,
    object_cameras,
    object_key,
    render_dataset,
    render_python,
    validate_object,
)
from get3d.render.testing import make_fixture_set, torus_geometry, write_textured_obj
from get3d.schema import ConfigError, parse_section


def test_config_parses_and_rejects_bad_values():
    cfg = parse_section(RenderConfig, {"resolution": 128, "denoiser": "openimagedenoise"}, "render")
    assert cfg.resolution == 128 and cfg.view_transform == "Standard"
    with pytest.raises(ConfigError, match="render.denoiser"):
        parse_section(RenderConfig, {"denoiser": "optix"}, "render")
    with pytest.raises(ConfigError, match="render.resolution"):
        parse_section(RenderConfig, {"resolution": 8}, "render")
    with pytest.raises(ConfigError, match="elevation_min_deg"):
        parse_section(RenderConfig, {"elevation_min_deg": 40.0, "elevation_max_deg": 10.0}, "render")
    with pytest.raises(ConfigError, match="max_extent"):
        parse_section(RenderConfig, {"max_extent": 2.0, "radius": 1.2}, "render")


def test_cameras_are_seeded_per_object_and_follow_the_prior():
    cfg = RenderConfig(views_per_object=50, elevation_min_deg=10.0, elevation_max_deg=20.0)
    a = object_cameras(cfg, "abc")
    b = object_cameras(cfg, "abc")
    c = object_cameras(cfg, "abd")
    np.testing.assert_array_equal(a["c2w"], b["c2w"])
    assert not np.allclose(a["c2w"], c["c2w"])
    elev = 90.0 - np.degrees(a["polar"])
    assert elev.min() >= 10.0 and elev.max() <= 20.0
    assert (a["azimuth"] >= 0).all() and (a["azimuth"] < 2 * np.pi).all()
    np.testing.assert_allclose(a["c2w"], cameras.camera_to_world(a["azimuth"], a["polar"], cfg.radius))
    np.testing.assert_allclose(np.linalg.norm(a["c2w"][:, :3, 3], axis=1), cfg.radius)
    np.testing.assert_allclose(a["K"], cameras.intrinsics(cfg.resolution, cfg.fovy_deg))
    # a different base seed gives different cameras
    assert not np.allclose(object_cameras(RenderConfig(views_per_object=50, seed=1), "abc")["c2w"],
                           object_cameras(RenderConfig(views_per_object=50, seed=2), "abc")["c2w"])


def test_file_stem_is_safe_and_unique():
    assert file_stem("1a2b3c") == "1a2b3c"
    a, b = file_stem("x/y"), file_stem("x_y")
    assert "/" not in a and a != b


def _bad_assets(root):
    """Each bad asset with the failure reason it must produce."""
    bad = {}
    good = write_textured_obj(root / "good", *torus_geometry(0.3, 0.1), seed=1)
    bad["missing_file"] = {"mesh": "nope/model.obj"}
    p = root / "corrupt" / "model.obj"
    p.parent.mkdir(parents=True)
    p.write_bytes(os.urandom(4096) + b"\0")
    bad["corrupt_file"] = {"mesh": str(p.relative_to(root))}
    g = root / "corrupt_glb" / "model.glb"
    g.parent.mkdir(parents=True)
    g.write_bytes(b"glTF" + os.urandom(64))
    bad["corrupt_file_glb"] = {"mesh": str(g.relative_to(root)), "expect": "corrupt_file"}
    e = root / "empty" / "model.obj"
    e.parent.mkdir(parents=True)
    (e.parent / "model.mtl").write_text("newmtl m\nKd 1 1 1\n")
    e.write_text("mtllib model.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\n")
    bad["empty_mesh"] = {"mesh": str(e.relative_to(root))}
    nt = write_textured_obj(root / "notex", *torus_geometry(0.3, 0.1), seed=2, texture=False)
    bad["missing_texture"] = {"mesh": str(nt.relative_to(root))}
    nm = root / "nomtl" / "model.obj"
    nm.parent.mkdir(parents=True)
    nm.write_text(good.read_text())
    bad["missing_material"] = {"mesh": str(nm.relative_to(root))}
    ct = write_textured_obj(root / "badtex", *torus_geometry(0.3, 0.1), seed=3)
    (ct.parent / "images" / "texture0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(50))
    bad["corrupt_texture"] = {"mesh": str(ct.relative_to(root))}
    dense = write_textured_obj(root / "dense", *torus_geometry(0.3, 0.1, n=64, m=32), seed=4)
    bad["too_many_faces"] = {"mesh": str(dense.relative_to(root))}
    bad["out_of_bounds"] = {"mesh": str(good.relative_to(root)), "translation": [3.0, 0.0, 0.0]}
    bad["invalid_transform"] = {"mesh": str(good.relative_to(root)), "scale": -1.0}
    ply = root / "x" / "model.stl"
    ply.parent.mkdir(parents=True)
    ply.write_text("solid x\nendsolid x\n")
    bad["unsupported_format"] = {"mesh": str(ply.relative_to(root))}
    items = []
    for name, it in bad.items():
        items.append({"id": f"bad_{name}", "synset": "03001627", "scale": 1.0, "translation": [0, 0, 0],
                      "split": "train", "sha256": "", **{k: v for k, v in it.items() if k != "expect"},
                      "_expect": it.get("expect", name)})
    return items


def test_each_bad_asset_is_a_named_failure(tmp_path):
    items = _bad_assets(tmp_path / "a")
    manifest = make_fixture_set(tmp_path / "a", n=2,
                                extra_items=[{k: v for k, v in it.items() if k != "_expect"} for it in items])
    man = load_manifest(manifest)
    cfg = RenderConfig(max_faces=2000)
    expect = {it["id"]: it["_expect"] for it in items}
    for item in man.items:
        got = validate_object(item, cfg)
        if item.id in expect:
            assert got is not None and got[0] == expect[item.id], (item.id, got)
            assert got[1]  # a detail naming the problem
        else:
            assert got is None, (item.id, got)


def test_failure_gate_stops_before_rendering(tmp_path, monkeypatch):
    # all-bad manifest: the gate fires after validation, without needing Blender at all
    items = [it for it in _bad_assets(tmp_path / "a")][:3]
    manifest = tmp_path / "a" / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "items": [{k: v for k, v in it.items() if k != "_expect"}
                                                            for it in items]}))
    monkeypatch.setenv("GET3D_RENDER_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(FailureGateError, match=r"3 of 3 objects failed .*max_failure_fraction.*missing_file"):
        render_dataset(manifest, tmp_path / "o.h5", RenderConfig(), tmp_path / "w", progress=False)
    assert not (tmp_path / "o.h5").exists()


def test_missing_render_python_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GET3D_RENDER_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(RenderEnvironmentError, match="GET3D_RENDER_PYTHON"):
        render_python()
    manifest = make_fixture_set(tmp_path / "a", n=1)
    with pytest.raises(RenderEnvironmentError, match="render python not found"):
        render_dataset(manifest, tmp_path / "o.h5", RenderConfig(), tmp_path / "w", progress=False)


def test_manifest_errors_name_the_key(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"version": 1, "items": [{"id": "a", "mesh": "x.obj", "split": "bogus"}]}))
    with pytest.raises(RenderError, match=r"items\[0\]\.split"):
        load_manifest(p)
    p.write_text(json.dumps({"version": 1, "items": [{"id": "a", "mesh": "x.obj"}, {"id": "a", "mesh": "y.obj"}]}))
    with pytest.raises(RenderError, match="duplicate id"):
        load_manifest(p)
    with pytest.raises(RenderError, match="not found"):
        load_manifest(tmp_path / "missing.json")


def test_key_changes_with_inputs(tmp_path):
    man = load_manifest(make_fixture_set(tmp_path, n=1))
    item = man.items[0]
    cfg = RenderConfig()
    k = object_key(item, object_cameras(cfg, item.id), cfg)
    cfg2 = RenderConfig(samples=64)
    assert object_key(item, object_cameras(cfg2, item.id), cfg2) != k
    assert object_key(item, object_cameras(cfg, item.id), RenderConfig(workers=3)) == k  # not content


def test_gpu_discovery_and_worker_plan(monkeypatch):
    from get3d.render.stage import _GpuPool, plan_workers, visible_gpus

    monkeypatch.setenv("GET3D_RENDER_GPUS", "0,1,3")
    assert visible_gpus() == ["0", "1", "3"]
    monkeypatch.setenv("GET3D_RENDER_GPUS", "")
    assert visible_gpus() == []
    monkeypatch.delenv("GET3D_RENDER_GPUS")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert visible_gpus() == ["2"]
    monkeypatch.setattr("get3d.render.stage._cpu_count", lambda: 16)
    assert plan_workers(RenderConfig(), 100, ["0", "1"]) == (2, 8)        # one process per GPU
    assert plan_workers(RenderConfig(device="cpu"), 100, ["0", "1"]) == (4, 4)
    assert plan_workers(RenderConfig(), 1, ["0", "1"]) == (1, 16)          # never more than objects
    assert plan_workers(RenderConfig(workers=3), 100, []) == (3, 5)
    seen = []
    pool = _GpuPool(["0", "1"], 2)
    for _ in range(3):
        pool.run(lambda env=None: seen.append(env["CUDA_VISIBLE_DEVICES"]))
    assert seen == ["0", "1", "0"]
    assert _GpuPool([], 1).run(lambda **kw: kw) == {}
