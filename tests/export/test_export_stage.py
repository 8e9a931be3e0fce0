"""The export stage: meshes, previews, gallery, the export FID, its report; the DVC stage definition."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from export_helpers import REPO, viewer_available
from PIL import Image

from get3d.export.sample import ExportError


def test_stage_outputs(export_run):
    out, res = export_run["out"], export_run["result"]
    names = [m["name"] for m in res["samples"]["meshes"]]
    assert names == ["seed0000", "seed0001", "seed0002"]
    for m in res["samples"]["meshes"]:
        if not m["empty"]:
            assert (out / "meshes" / f"{m['name']}.glb").is_file()
            for ext in ("gif", "mp4", "png"):
                assert (out / "turntables" / f"{m['name']}.{ext}").stat().st_size > 0
    gif = Image.open(out / "turntables" / "seed0000.gif")
    assert gif.n_frames == 4
    assert (out / "turntables" / "seed0000.mp4").read_bytes()[4:8] == b"ftyp"
    grid = np.asarray(Image.open(out / "previews" / "geo_tex_grid.png"))
    tile = 64
    cells = [grid[2 + r * (tile + 2):2 + r * (tile + 2) + tile, 2 + c * (tile + 2):2 + c * (tile + 2) + tile]
             for r in range(2) for c in range(2)]
    # rows share geometry: the silhouettes (non-white) of a row agree, those of two rows do not
    sil = [np.any(c < 255, axis=-1) for c in cells]
    assert (sil[0] == sil[1]).mean() > 0.98 and (sil[2] == sil[3]).mean() > 0.98
    assert (sil[0] != sil[2]).any()
    for name in ("samples.png", "interpolation.png", "perturbation.png", "interpolation.gif", "interpolation.mp4"):
        assert (out / "previews" / name).stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    for k in ("fid_export", "fid_generator", "fid_export_gap", "export_pixel_error"):
        assert math.isfinite(metrics[k]), k
    assert metrics["fid_samples"] == 4 and metrics["fid_export"] >= 0
    assert metrics["export_pixel_error"] < 20, "re-rendered exports should look like the generator's renders"
    report = json.loads((out / "export.json").read_text())
    assert report["config"]["seeds"] == "0-2" and report["model"]["source"].endswith("generator.pt")
    assert any("reference image features" in w for w in report["warnings"])
    print(f"export FID {metrics['fid_export']:.1f} vs generator FID {metrics['fid_generator']:.1f}; "
          f"pixel error {metrics['export_pixel_error']:.2f} levels")


def test_fid_needs_the_dataset(snapshot, tmp_path):
    from export_helpers import small_export

    from get3d.export.stage import run_export

    with pytest.raises(ExportError, match="fid_samples is 4 but the dataset .*missing.h5 is missing"):
        run_export(snapshot, tmp_path / "out", small_export(fid_samples=4), dataset_h5=tmp_path / "missing.h5")
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_missing_viewer_fails_before_any_work(snapshot, tmp_path, monkeypatch):
    from export_helpers import small_export

    from get3d.export.gallery import GalleryError
    from get3d.export.stage import run_export

    monkeypatch.setenv("GET3D_MODEL_VIEWER_JS", str(tmp_path / "missing-viewer.js"))
    monkeypatch.chdir(tmp_path)  # no node_modules here
    monkeypatch.setattr("get3d.export.gallery.VIEWER_NPM_PATH", tmp_path / "nowhere.js")
    with pytest.raises(GalleryError, match="missing-viewer.js"):
        run_export(snapshot, tmp_path / "out", small_export(gallery=True))
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_dvc_stage_reads_only_export_params_and_tracks_its_code():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    st = stages["export"]
    assert st["params"] == ["export"]
    assert "get3d export" in st["cmd"] and "data/export" in st["cmd"]
    deps = set(st["deps"])
    for d in ("data/model/generator.pt", "data/dataset/dataset.h5", "data/reference", "get3d/export",
              "get3d/meshio.py", "get3d/nn", "get3d/raster", "get3d/metrics", "package-lock.json"):
        assert d in deps, d
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    from get3d.config import parse_params

    assert parse_params(params, only=["export"]).export.texture_size == params["export"]["texture_size"]


def test_cli_export_as_the_dvc_stage_calls_it(snapshot, tmp_path):
    """`get3d export` with a params file (the DVC stage's command line), without the FID."""
    import os
    import subprocess
    import sys

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["export"].update(seeds="0-1", texture_size=64, preview_resolution=32, turntable_frames=2, grid_size=2,
                            interpolation_steps=2, perturbation_count=1, fid_samples=0, device="cpu",
                            atlas_workers=1, gallery=viewer_available())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "get3d.cli", "export", "--params", "params.yaml", "--model",
                           str(snapshot), "--dataset", "missing.h5", "--out", "data/export"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "num_samples=2" in proc.stdout
    out = tmp_path / "data" / "export"
    assert json.loads((out / "metrics.json").read_text())["num_samples"] == 2
    if params["export"]["gallery"]:
        assert (out / "gallery.html").is_file() and (out / "model-viewer-umd.min.js").is_file()


def test_samples_without_surface_export_nothing_but_fail_nothing(snapshot, tmp_path):
    """DMTet's empty-shape guard always leaves a surface, but clean-up can remove all of it: simulated here by
    a generator whose meshes come out empty."""
    from export_helpers import small_export

    from get3d.export.sample import load_model, sample_meshes

    gen = load_model(snapshot, "cpu", "torch")
    extract = gen.G.extract_meshes

    def no_surface(*args, **kw):
        meshes, texture_fn = extract(*args, **kw)
        return [(v[:0], f[:0]) for v, f in meshes], texture_fn

    gen.G.extract_meshes = no_surface
    with pytest.warns(RuntimeWarning, match="2 of 2 samples have no surface"):
        res = sample_meshes(gen, tmp_path, small_export(seeds="0-1"))
    assert all(m["empty"] and "glb" not in m for m in res["meshes"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.json"]
