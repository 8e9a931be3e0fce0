import numpy as np
import pytest
import torch

from get3d.metrics import MetricContext, compute_metrics
from get3d.metrics.lfd import LFDDescriptor
from get3d.metrics.pointcloud import sample_many


def _boxes(n):
    import trimesh
    return [(trimesh.creation.box((1.0, 0.3 + 0.1 * i, 0.5)).vertices, trimesh.creation.box().faces)
            for i in range(n)]


def test_cd_uses_public_real_points():
    fake, real = _boxes(3), _boxes(2)
    pts = sample_many(real, 256, 0 + 1_000_000)
    a = MetricContext(fake_meshes=lambda: fake, real_meshes=lambda: real, num_points=256)
    b = MetricContext(fake_meshes=lambda: fake, real_points=pts, num_points=256)  # no real_meshes needed
    ra, rb = compute_metrics(["cd"], a), compute_metrics(["cd"], b)
    assert ra["cov_cd"] == rb["cov_cd"] and ra["mmd_cd"] == pytest.approx(rb["mmd_cd"])
    assert torch.equal(a.distance_matrix("cd"), b.distance_matrix("cd"))
    assert b.distance_matrix("lfd") is None
    with pytest.raises(KeyError):
        b.distance_matrix("fid")


def test_lfd_uses_public_descriptors():
    z = torch.zeros(2, 10, 10, dtype=torch.uint8)
    real = LFDDescriptor(torch.zeros(2, 10, 10, 35, dtype=torch.uint8), torch.zeros(2, 10, 10, 10, dtype=torch.uint8),
                         z, z)
    fake = LFDDescriptor(real.art[:1] + 3, real.fd[:1], z[:1], z[:1])
    ctx = MetricContext(real_lfd=real, fake_lfd=lambda: fake, device="cpu")  # no meshes at all
    r = compute_metrics(["lfd"], ctx)
    assert r["mmd_lfd"] == pytest.approx(3 * 35 * 10) and r["cov_lfd"] == pytest.approx(50.0)
    assert ctx.distance_matrix("lfd").shape == (1, 2)


def test_real_points_shape_checked():
    ctx = MetricContext(fake_meshes=lambda: _boxes(1), real_points=np.zeros((2, 5)), num_points=16)
    with pytest.raises(ValueError, match="real_points"):
        compute_metrics(["cd"], ctx)
