"""Render stage end to end (real BlenderProc renders, 64², 4 views, 4 samples)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from get3d.render.stage import FailureGateError, make_job, object_cameras, render_dataset, render_shard
from get3d.render.testing import make_test_assets as make_assets
from get3d.render.testing import small_cfg, torus_geometry, write_textured_obj

pytestmark = pytest.mark.render
REPO = Path(__file__).resolve().parents[2]


def _arrays(h5):
    with h5py.File(h5, "r") as f:
        return {k: f[k][:] for k in ("images", "masks", "azimuth", "polar", "c2w", "K", "object_index",
                                     "object_ids", "object_split")} | {"attrs": dict(f.attrs)}


def _assert_same_dataset(a_h5, b_h5):
    a, b = _arrays(a_h5), _arrays(b_h5)
    for k in a:
        if k == "attrs":
            assert a[k]["dataset_hash"] == b[k]["dataset_hash"]
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_clean_run_contents(clean_run):
    s = clean_run["summary"]
    assert s["counts"]["rendered"] == 4 and s["counts"]["failed"] == 0 and s["rendered"] == 4
    with h5py.File(clean_run["h5"], "r") as f:
        im = f["images"]
        assert im.shape == (16, 64, 64, 4) and im.dtype == np.uint8 and im.chunks == (1, 64, 64, 4)
        assert im.compression == "lzf"
        np.testing.assert_array_equal(f["masks"][:], (im[:][..., 3] > 0).astype(np.uint8))
        assert [x.decode() for x in f["object_split"][:]] == ["train", "train", "val", "test"]
        assert f["splits/train"][:].tolist() == [0, 1]
        assert f.attrs["resolution"] == 64 and "+y up" in f.attrs["conventions"]
        rgb = im[:][..., :3][im[:][..., 3] > 0]
        assert rgb.std() > 10  # textured, lit, not a flat colour
    man = json.loads(clean_run["json"].read_text())
    assert man["counts"]["images"] == 16 and len(man["objects"]) == 4
    assert all(len(o["images_sha256"]) == 64 for o in man["objects"])
    assert Path(s["contact_sheet"]).stat().st_size > 1000


def test_same_seed_same_images_and_manifest(clean_run, tmp_path):
    manifest = make_assets(tmp_path / "assets")
    s = render_dataset(manifest, tmp_path / "out" / "renders.h5", clean_run["cfg"], tmp_path / "work",
                       progress=False)
    _assert_same_dataset(clean_run["h5"], s["h5"])
    assert Path(s["manifest"]).read_bytes() == clean_run["json"].read_bytes()  # stable manifest hash

    # any object can be re-rendered alone, identically (cameras seeded by (seed, id))
    data = json.loads(Path(manifest).read_text())
    data["items"] = [data["items"][2]]
    single = tmp_path / "assets" / "single.json"
    single.write_text(json.dumps(data))
    s1 = render_dataset(single, tmp_path / "out1" / "one.h5", clean_run["cfg"], tmp_path / "work1", progress=False)
    with h5py.File(s1["h5"], "r") as f, h5py.File(clean_run["h5"], "r") as g:
        np.testing.assert_array_equal(f["images"][:], g["images"][8:12])

    # a different seed gives different cameras
    other = small_cfg(seed=8)
    assert not np.allclose(object_cameras(other, "obj000")["c2w"], object_cameras(clean_run["cfg"], "obj000")["c2w"])


def test_bad_assets_fail_by_name_good_ones_render(tmp_path):
    root = tmp_path / "assets"
    nt = write_textured_obj(root / "notex", *torus_geometry(0.3, 0.1), seed=2, texture=False)
    extra = [{"id": "no_texture", "mesh": str(nt.relative_to(root)), "scale": 1.0, "translation": [0, 0, 0],
              "split": "train"},
             {"id": "no_file", "mesh": "nothing/here.obj", "split": "train"}]
    manifest = make_assets(root, n=3, extra_items=extra)
    s = render_dataset(manifest, tmp_path / "o.h5", small_cfg(max_failure_fraction=0.5), tmp_path / "w",
                       progress=False)
    reasons = {f["id"]: f["reason"] for f in s["failures"]}
    assert reasons == {"no_texture": "missing_texture", "no_file": "missing_file"}
    assert s["counts"]["rendered"] == 3
    man = json.loads(Path(s["manifest"]).read_text())
    assert {f["id"] for f in man["failures"]} == {"no_texture", "no_file"}
    with h5py.File(s["h5"], "r") as f:
        assert [x.decode() for x in f["object_ids"][:]] == ["obj000", "obj001", "obj002"]
    # the gate: same input, stricter limit -> clear error, no dataset
    with pytest.raises(FailureGateError, match=r"2 of 5 objects failed \(40.0%\).*missing_texture"):
        render_dataset(manifest, tmp_path / "o2.h5", small_cfg(max_failure_fraction=0.2), tmp_path / "w",
                       progress=False)
    assert not (tmp_path / "o2.h5").exists()


def test_worker_reports_per_object_failures_without_dying(tmp_path):
    """Objects that get past validation but fail inside Blender become named failures; the rest render."""
    root = tmp_path / "a"
    good = write_textured_obj(root / "good", *torus_geometry(0.3, 0.1), seed=1)
    junk = root / "junk" / "model.glb"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"not a gltf at all")
    cfg = small_cfg()
    objs = []
    for oid, mesh in (("junk", junk), ("missing", root / "missing.obj"), ("good", good)):
        objs.append({"id": oid, "stem": oid, "mesh": str(mesh), "scale": 1.0, "translation": [0, 0, 0],
                     "c2w": object_cameras(cfg, oid)["c2w"], "key": f"k-{oid}"})
    rep = render_shard(make_job(objs, cfg, tmp_path / "objects", threads=2), tmp_path / "jobs" / "j.json")
    assert rep["returncode"] == 0, rep["stderr_tail"]
    assert rep["done"] == ["good"] and sorted(rep["failed"]) == ["junk", "missing"]
    rec = json.loads((tmp_path / "objects" / "junk.failed.json").read_text())
    assert rec["reason"] == "import_failed" and rec["detail"]
    assert json.loads((tmp_path / "objects" / "missing.failed.json").read_text())["reason"] == "missing_file"
    with np.load(tmp_path / "objects" / "good.npz") as z:
        assert z["rgba"].shape == (4, 64, 64, 4) and str(z["key"]) == "k-good"


def test_kill_midway_then_resume_renders_only_missing(clean_run, tmp_path):
    manifest = make_assets(tmp_path / "assets")
    out, work = tmp_path / "out" / "renders.h5", tmp_path / "work"
    code = ("import sys; from get3d.render.stage import render_dataset; from get3d.render.config import RenderConfig;"
            f"render_dataset({str(manifest)!r}, {str(out)!r}, RenderConfig(**{clean_run['cfg'].__dict__!r}), "
            f"{str(work)!r}, progress=False)")
    env = dict(os.environ, GET3D_RENDER_TEST_DELAY_S="1")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, process_group=0)
    objects = work / "objects"
    deadline = time.time() + 60
    while time.time() < deadline and not list(objects.glob("*.npz")):
        assert proc.poll() is None, "render finished or died before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the pipeline and its Blender worker, mid-way
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in objects.glob("*.npz")}
    assert 1 <= len(before) < 4 and not out.exists()

    s = render_dataset(manifest, out, clean_run["cfg"], work, progress=False)
    assert s["skipped_existing"] == len(before) and s["rendered"] == 4 - len(before)
    assert all(p.stat().st_mtime_ns == before[p.name] for p in objects.glob("*.npz") if p.name in before)
    _assert_same_dataset(clean_run["h5"], out)
    assert Path(s["manifest"]).read_bytes() == clean_run["json"].read_bytes()

    s2 = render_dataset(manifest, out, clean_run["cfg"], work, progress=False)  # nothing left to do
    assert s2["rendered"] == 0 and s2["skipped_existing"] == 4 and s2["shards"] == 0


def test_crashed_worker_is_replaced(clean_run, tmp_path, monkeypatch):
    """A Blender process that dies between objects: a new one picks up the rest; result unchanged."""
    manifest = make_assets(tmp_path / "assets", n=2)
    monkeypatch.setenv("GET3D_RENDER_TEST_ABORT_AFTER", "1")
    s = render_dataset(manifest, tmp_path / "o.h5", clean_run["cfg"], tmp_path / "w", progress=False)
    assert s["counts"]["rendered"] == 2 and s["shards"] == 2 and not s["failures"]
    with h5py.File(s["h5"], "r") as f, h5py.File(clean_run["h5"], "r") as g:
        np.testing.assert_array_equal(f["images"][:], g["images"][:8])


def test_crash_inside_an_object_fails_it_by_name_and_retries_on_rerun(clean_run, tmp_path, monkeypatch):
    manifest = make_assets(tmp_path / "assets", n=3)
    monkeypatch.setenv("GET3D_RENDER_TEST_CRASH_ON", "obj001")
    cfg = small_cfg(max_failure_fraction=0.5)
    s = render_dataset(manifest, tmp_path / "o.h5", cfg, tmp_path / "w", progress=False)
    assert [(f["id"], f["reason"]) for f in s["failures"]] == [("obj001", "renderer_crashed")]
    assert s["counts"]["rendered"] == 2 and "exited with code" in s["failures"][0]["detail"]
    monkeypatch.delenv("GET3D_RENDER_TEST_CRASH_ON")
    s2 = render_dataset(manifest, tmp_path / "o.h5", cfg, tmp_path / "w", progress=False)
    assert s2["rendered"] == 1 and s2["skipped_existing"] == 2 and not s2["failures"]
    with h5py.File(s2["h5"], "r") as f, h5py.File(clean_run["h5"], "r") as g:
        np.testing.assert_array_equal(f["images"][:], g["images"][:12])


def test_any_shard_executor_gives_the_same_dataset(clean_run, tmp_path):
    """render_dataset with an orchestrator's executor: shards in any order, elsewhere, in parallel."""
    import concurrent.futures as cf

    seen = []

    def run_shards(jobs):
        seen.append([len(job["objects"]) for job, _ in jobs])
        with cf.ThreadPoolExecutor(2) as pool:   # the last shard first
            futs = {i: pool.submit(render_shard, job, path) for i, (job, path) in reversed(list(enumerate(jobs)))}
            return [futs[i].result() for i in range(len(jobs))]

    manifest = make_assets(tmp_path / "assets")
    s = render_dataset(manifest, tmp_path / "out" / "renders.h5", small_cfg(objects_per_shard=1), tmp_path / "w",
                       progress=False, run_shards=run_shards)
    assert seen == [[1, 1, 1, 1]] and s["shards"] == 4
    _assert_same_dataset(clean_run["h5"], s["h5"])
