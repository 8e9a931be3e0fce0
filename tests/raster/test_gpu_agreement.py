"""torch rasterizer vs nvdiffrast on CUDA (skipped without CUDA / nvdiffrast)."""
import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
pytest.importorskip("nvdiffrast.torch")

from get3d.raster import TorchRasterBackend, get_backend, render_meshes
from get3d.raster.agreement import compare_backends, random_scene, uv_sphere


@pytest.fixture(scope="module")
def backends():
    return get_backend("nvdiffrast", "cuda"), TorchRasterBackend("cuda")


@pytest.mark.parametrize("res", [256, 1024])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backends_agree(backends, res, seed):
    ref, tb = backends
    pos, tri = random_scene(4, 20000, seed=seed, device="cuda")
    r = compare_backends(ref, tb, pos, tri, res, seed=seed)
    assert r["pixels_agree"] >= 0.999, r
    assert r["q999_attr_err"] <= 1e-4 and r["max_attr_err"] <= 1e-3, r
    assert r["grad_cos_interp"] >= 0.99, r
    assert r["grad_cos_aa"] >= 0.99, r


def test_range_mode_renderer_agrees(backends):
    ref, tb = backends
    from get3d import cameras
    meshes = [tuple(t.cuda() for t in uv_sphere(20 + 5 * i, 30, radius=0.3)) for i in range(3)]
    meshes = [(v, f.long()) for v, f in meshes] + [(torch.zeros(0, 3, device="cuda"),
                                                    torch.zeros(0, 3, dtype=torch.long, device="cuda"))]
    az, polar = cameras.CameraPrior().sample(4)
    mvp = cameras.mvp_from_c2w(cameras.camera_to_world(az, polar)).cuda()
    a = render_meshes(ref, meshes, mvp, 256, texture_fn=lambda p, s: p)
    b = render_meshes(tb, meshes, mvp, 256, texture_fn=lambda p, s: p)
    assert (a["rast"][..., 3] == b["rast"][..., 3]).float().mean() >= 0.999
    assert (a["mask"] - b["mask"]).abs().mean() < 1e-3
    assert a["mask"][3].sum() == 0 and b["mask"][3].sum() == 0
