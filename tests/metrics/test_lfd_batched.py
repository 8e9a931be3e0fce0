"""Batched LFD extraction: many meshes per raster call / descriptor call == one mesh at a time, and the GPU
variants of the loop-heavy steps (run here on CPU) == the reference path."""
import numpy as np
import pytest
import torch
from test_lfd import _test_silhouettes

from get3d.metrics import lfd as L
from get3d.metrics.lfd import core, descriptors, fast, reference


def _mixed_meshes():
    import trimesh
    from trimesh import creation
    rng = np.random.default_rng(3)
    box = creation.box([1.0, 0.5, 0.3])
    torus = creation.torus(1.0, 0.3, major_sections=16, minor_sections=8)
    parts = []
    for _ in range(5):
        b = creation.box(rng.uniform(0.05, 0.2, 3))
        b.apply_translation(rng.uniform(-1, 1, 3))
        parts.append(b)
    frag = trimesh.util.concatenate(parts)
    flat = (np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0.0]]), np.array([[0, 1, 2]]))      # zero area
    empty = (np.zeros((0, 3)), np.zeros((0, 3), int))
    return [(box.vertices, box.faces), empty, (frag.vertices, frag.faces), flat, (torus.vertices, torus.faces)]


def test_batched_render_equals_single_mesh_render():
    meshes = _mixed_meshes()
    batched = L.render_meshes_silhouettes(meshes, "cpu", res=48, max_images=200)   # 2 meshes per raster call
    for i, (v, f) in enumerate(meshes):
        assert torch.equal(batched[i], L.render_meshes_silhouettes([(v, f)], "cpu", res=48)[0]), i
    assert not batched[1].any() and not batched[3].any() and batched[2].any()
    with pytest.raises(ValueError, match="faces index vertex"):
        L.render_meshes_silhouettes([(np.zeros((3, 3)), np.array([[0, 1, 3]]))])


@pytest.mark.parametrize("algorithms", ["cpu", "gpu"])
def test_batched_descriptors_equal_one_by_one(algorithms, set_perf):
    set_perf(lfd_algorithms=algorithms)
    meshes = _mixed_meshes()
    with pytest.warns(RuntimeWarning):
        together = L.mesh_descriptors(meshes, "cpu", batch=len(meshes), res=48)
    for i, m in enumerate(meshes):
        with pytest.warns(RuntimeWarning) if i in (1, 3) else _no_warning():
            one = L.mesh_descriptors([m], "cpu", batch=1, res=48)
        for k in ("art", "fd", "cir", "ecc"):
            assert torch.equal(getattr(together, k)[i:i + 1], getattr(one, k)), (i, k)
    assert torch.all(together.art[1] == 0) and torch.all(together.art[3] == 0)


class _no_warning:
    def __enter__(self):
        import warnings
        self.c = warnings.catch_warnings()
        self.c.__enter__()
        warnings.simplefilter("error", RuntimeWarning)

    def __exit__(self, *exc):
        self.c.__exit__(*exc)


def test_silhouette_batch_equals_one_by_one_and_gpu_variants_equal_reference(set_perf):
    sil = _test_silhouettes()                                   # [1, 10, 10, 96, 96]
    ref = L.descriptors_from_silhouettes(sil, reference=True)
    set_perf(lfd_algorithms="gpu")
    batch = L.descriptors_from_silhouettes(torch.cat([sil, sil.flip(-1)]))
    flipped = L.descriptors_from_silhouettes(sil.flip(-1))
    for k in ("art", "fd", "cir", "ecc"):
        assert torch.equal(getattr(batch, k)[:1], getattr(ref, k)), k
        assert torch.equal(getattr(batch, k)[1:], getattr(flipped, k)), k
    s = sil.reshape(-1, 96, 96)
    cont = reference._contour_mask(*fast.trace_contours(s), s.shape)
    assert torch.equal(fast._outside_region(cont), reference._outside_region_reference(cont))
    multi = s[[2, 3, 4, 6, 13, 14, 23, 24]]
    for buff in (descriptors._bbox_fill(multi), reference._dilate(multi, core._OFF3)):
        assert torch.equal(fast.thin(buff, multi), reference.thin_reference(buff, multi))


def test_trace_handles_empty_isolated_and_border_pixels():
    s = torch.zeros(4, 12, 12, dtype=torch.bool)
    s[1, 5, 5] = True                                            # isolated pixel: length -1
    s[2, 0, :] = True                                            # a line along the border
    s[3, 3:9, 3:9] = True
    s[3, 5:7, 5:7] = False                                       # a square ring
    a, b = fast.trace_contours(s), reference.trace_contours_reference(s)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[2].tolist()[:2] == [-1, -1]
