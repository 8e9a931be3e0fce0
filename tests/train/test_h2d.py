"""h2d: several CPU tensors reach the device unchanged, as one pinned asynchronous copy on CUDA."""
import pytest
import torch

from get3d.train.h2d import h2d

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_h2d_moves_tensors_unchanged(device):
    xs = [torch.randn(3, 5), torch.randn(2, 4, 4)[:, 1], torch.arange(6.0).reshape(2, 3)]
    out = h2d(xs, torch.device(device))
    for x, y in zip(xs, out):
        assert y.device.type == device and y.shape == x.shape and y.dtype == x.dtype
        assert torch.equal(y.cpu(), x)
    mixed = h2d([torch.ones(2), torch.arange(3)], torch.device(device))
    assert mixed[1].dtype == torch.int64 and mixed[1].tolist() == [0, 1, 2]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_h2d_does_not_wait_for_the_gpu():
    a = torch.randn(2048, 2048, device="cuda")
    torch.cuda.synchronize()
    xs = [torch.randn(4, 512), torch.randn(4, 4, 4)]
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            a = a @ a                  # keep the GPU busy while the copies are queued
        out = h2d(xs, torch.device("cuda"))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(torch.equal(y.cpu(), x) for x, y in zip(xs, out))
