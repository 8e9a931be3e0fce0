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
