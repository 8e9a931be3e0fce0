"""The train task sets ``train.num_processes`` from the GPUs its worker sees (torchrun when several)."""
import dataclasses

from get3d.train.config import TrainConfig
from get3d.train.stage import RESUMABLE_KEYS
from tasks.train import processes_for, visible_gpu_count


def test_one_process_per_visible_gpu_bounded_by_the_batch_chunks():
    cfg = TrainConfig(batch_size=32, batch_per_gpu=4)
    assert processes_for(cfg, 4).num_processes == 4
    assert processes_for(cfg, 16).num_processes == 8  # 32 / 4 chunks
    assert processes_for(cfg, 1) is cfg and processes_for(cfg, 0) is cfg
    two = dataclasses.replace(cfg, num_processes=2)
    assert processes_for(two, 0).num_processes == 2  # no GPU: params.yaml decides (gloo on the CPU)
    assert "num_processes" in RESUMABLE_KEYS  # changing it resumes the same run (dvc.lock stays valid)


def test_visible_gpus_on_this_machine():
    import torch

    assert visible_gpu_count() == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
