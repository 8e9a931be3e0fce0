"""On a CUDA machine: a few real training steps with nvdiffrast, resume, and the published snapshot."""
import math

import pytest
import torch
from train_helpers import tiny_configs

pytestmark = pytest.mark.gpu


def test_train_steps_on_cuda_with_nvdiffrast(tiny_dataset, tmp_path):
    pytest.importorskip("nvdiffrast.torch")
    from get3d.train.stage import run_train_stage

    cm, ct = tiny_configs(total_kimg=0.008, device="cuda", backend="nvdiffrast", deterministic=False)
    cm = cm.with_overrides(raster_backend="nvdiffrast")
    res = run_train_stage(cm, ct, tiny_dataset, tmp_path / "train", tmp_path / "generator.pt")
    assert res["status"] == "completed" and res["kimg"] >= 0.008
    stats = (tmp_path / "train" / "stats.jsonl").read_text().splitlines()
    assert stats and all("nan" not in line.lower() for line in stats)
    # Resume to a longer schedule on the GPU as well.
    cm2, ct2 = tiny_configs(total_kimg=0.012, device="cuda", backend="nvdiffrast", deterministic=False)
    res2 = run_train_stage(cm2.with_overrides(raster_backend="nvdiffrast"), ct2, tiny_dataset, tmp_path / "train",
                           tmp_path / "generator.pt")
    assert res2["kimg"] >= 0.012 and math.isfinite(res2["kimg"])
    assert torch.cuda.max_memory_allocated() > 0


@pytest.mark.parametrize("step_check", ["deferred", "per_phase"])
def test_train_steps_with_the_launch_cutting_switches(tiny_dataset, tmp_path, step_check):
    """Training steps with CUDA graphs and every switch that cuts launches on: the padded surface filled by the
    Triton marching kernels, the paired mapping and the captured shading (``perf.shade_graph``)."""
    pytest.importorskip("nvdiffrast.torch")
    from get3d import perf
    from get3d.train.loop import train

    cm, ct = tiny_configs(total_kimg=0.012, device="cuda", backend="nvdiffrast", deterministic=False,
                          cuda_graphs=True, step_check=step_check)
    with perf.using(padded_surface=True, marching_kernel="triton", paired_mapping=True, shade_graph=True):
        res = train(cm.with_overrides(raster_backend="nvdiffrast"), ct, tiny_dataset, tmp_path / "train")
    assert res["kimg"] >= 0.012
    stats = (tmp_path / "train" / "stats.jsonl").read_text().splitlines()
    assert stats and all("nan" not in line.lower() for line in stats)
