"""LFD flood-fill sweep as a Triton kernel == the PyTorch sweep, and the outside region it builds == the
reference labelling, on random contours (both axes, non-square stacks).

Runs on CUDA; without a GPU but with Triton installed it runs on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1`` must be set before Triton is imported)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nn"))
from triton_device import triton_test_device

from get3d.metrics.lfd import fast, reference

tri = pytest.importorskip("get3d.metrics.lfd_triton", reason="needs Triton")

DEVICE = triton_test_device()


def _stack(n, h, w, density, seed):
    g = torch.Generator().manual_seed(seed)
    contour = torch.rand(n, h, w, generator=g) < density
    border = torch.zeros_like(contour)
    border[:, 0] = border[:, -1] = True
    border[:, :, 0] = border[:, :, -1] = True
    return (~contour | border).to(DEVICE), border.to(DEVICE)


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 16, 64), (2, 64, 8)])
@pytest.mark.parametrize("dim", [1, 2])
def test_sweep_matches_torch(shape, dim, set_perf):
    set_perf(lfd_sweep="torch")  # the reference side: PyTorch's sweep
    free, border = _stack(*shape, density=0.3, seed=sum(shape) + dim)
    run = (~free).cumsum(dim, dtype=torch.int16)
    out = border.clone()
    for _ in range(3):  # a few rounds, so the region grows past the border
        want = fast._sweep(out, run, free, dim)
        got = tri.sweep(out, run, free, dim)
        assert got.dtype == torch.bool and torch.equal(got, want)
        out = want
        run = (~free).cumsum(3 - dim, dtype=torch.int16)  # alternate axes with the other run ids
        dim = 3 - dim


def test_outside_region_matches_the_reference_labelling():
    free, border = _stack(4, 32, 32, density=0.35, seed=7)
    run_x = (~free).cumsum(2, dtype=torch.int16)
    run_y = (~free).cumsum(1, dtype=torch.int16)
    out = border.clone()
    for _ in range(40):
        out = tri.sweep(tri.sweep(out, run_x, free, 2), run_y, free, 1)
    want = reference._outside_region_reference((~free).cpu())  # free already includes the border
    assert torch.equal(out.cpu(), want)


@pytest.mark.skipif(DEVICE != "cuda", reason="the flood fill takes the kernel for CUDA tensors only")
@pytest.mark.parametrize("density", [0.05, 0.3])
def test_outside_region_with_the_kernel_equals_the_torch_sweeps(density, set_perf):
    """Whole flood fill at the descriptor size (256², L = 256 per scanned line), the kernel switched on."""
    g = torch.Generator().manual_seed(11)
    contour = (torch.rand(6, 256, 256, generator=g) < density).to(DEVICE)
    want = fast._outside_region(contour)
    set_perf(lfd_sweep="triton")
    got = fast._outside_region(contour)
    assert torch.equal(got, want)
    assert torch.equal(got.cpu(), reference._outside_region_reference(contour.cpu()))
