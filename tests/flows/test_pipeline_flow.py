"""End to end through Prefect (real ephemeral API): assets → BlenderProc render → train → reference → evaluate.

Tiny sizes, real components: procedural assets, Blender renders, the real GET3D networks and losses, and
the metric registry. This is the smoke test of the whole product on a CPU.
"""
import json
import math

import pytest
import yaml

TINY_MODEL = {
    "z_dim": 16, "w_dim": 16, "mapping_layers": 2, "img_resolution": 32, "triplane_resolution": 16,
    "triplane_channels": [16, 16, 8], "plane_channels": 4, "decoder_hidden": 8, "texture_features": 4,
    "tet_res": 8, "d_channels": [8, 16, 16, 16], "d_mapping_layers": 1, "num_fp16_res": 0,
    "channels_last": False, "raster_backend": "torch", "cmap_dim": 16,
}


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.render
def test_pipeline_flow_end_to_end(repo_root, tmp_path, render_python, prefect_api):
    from flows.pipeline import pipeline

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["assets"].update(count=4, texture_size=16, split=[0.5, 0.25, 0.25])
    params["render"].update(resolution=32, views_per_object=3, samples=4, workers=1)
    params["model"] = {**params["model"], **TINY_MODEL}
    params["train"].update(total_kimg=0.008, batch_size=4, batch_per_gpu=4, kimg_per_tick=0.004,
                           snapshot_kimg=0.004, image_snapshot_ticks=0, device="cpu", backend="torch")
    params["evaluate"].update(num_fake_images=8, fake_mesh_factor=2.0, num_points=256, kid_subsets=2,
                              kid_subset_size=4, batch_size=4, num_preview=4, num_detail_shapes=1, device="cpu",
                              backend="torch")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = pipeline(params_path="params.yaml", root=str(tmp_path))

    data = tmp_path / "data"
    assert json.loads((data / "assets" / "manifest.json").read_text())["counts"]["ok"] == 4
    assert (data / "dataset" / "dataset.h5").is_file() and (data / "model" / "generator.pt").is_file()
    metrics = json.loads((data / "metrics" / "metrics.json").read_text())
    for key in ("fid", "kid", "cov_cd", "mmd_cd"):
        assert key in metrics and metrics[key] is not None and math.isfinite(metrics[key]), key
    assert out["metrics"]["fid"] == metrics["fid"]
