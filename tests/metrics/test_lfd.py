import os
from pathlib import Path

import numpy as np
import pytest
import torch

from get3d.metrics import lfd as L
from get3d.metrics.lfd import core, descriptors, fast, reference


def _meshes():
    import trimesh
    from trimesh import creation
    a = creation.cylinder(0.2, 1.0, sections=12)
    rot = trimesh.transformations.rotation_matrix(0.7, [0.3, 1.0, 0.2])
    a_rot = a.copy()
    a_rot.apply_transform(rot)
    b = creation.icosphere(1)
    return [(a.vertices, a.faces), (a_rot.vertices, a_rot.faces), (b.vertices, b.faces)]


@pytest.fixture(scope="module")
def desc():
    return L.mesh_descriptors(_meshes(), device="cpu")


def test_alignment_table_is_rotation_group():
    t = L.alignment_table()
    assert t.shape == (60, 10) and len({tuple(r) for r in t.tolist()}) == 60
    assert t[0].tolist() == list(range(10))
    assert all(sorted(r) == list(range(10)) for r in t.tolist())


def test_lfd_self_zero_symmetric_rotation(desc):
    d = L.lfd_matrix(desc, desc, device="cpu")
    assert torch.all(torch.diagonal(d) == 0)
    assert torch.equal(d, d.T)
    # a rotated copy of the cylinder is closer than a sphere
    assert d[0, 1] < d[0, 2] and d[1, 0] < d[1, 2]


def test_descriptor_shapes_and_ranges(desc):
    assert desc.art.shape == (3, 10, 10, 35) and desc.fd.shape == (3, 10, 10, 10)
    assert desc.cir.dtype == torch.uint8 and desc.ecc.shape == (3, 10, 10)


def test_degenerate_meshes_defined():
    with pytest.warns(RuntimeWarning):
        d = L.mesh_descriptors([(np.zeros((0, 3)), np.zeros((0, 3), int)),
                                (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.0]]), np.array([[0, 1, 2]]))])
    assert torch.all(d.art[0] == 0)
    m = L.lfd_matrix(d, d, device="cpu")
    assert torch.isfinite(m).all() and m[0, 0] == 0 and m[1, 1] == 0


def test_silhouette_descriptors_on_disc_and_square():
    H = 256
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    disc = ((xx - 127.5) ** 2 + (yy - 127.5) ** 2) < 80 ** 2
    sq = (xx > 60) & (xx < 190) & (yy > 60) & (yy < 190)
    s = torch.stack([disc, sq])
    cx, cy = core._centres(s)
    assert fast.eccentricity(s, cx, cy)[0] < 0.01
    cir = fast.circularity(s)
    assert torch.all((cir > 0.5) & (cir <= 1))  # 4 pi A / P^2 with P = boundary pixel count
    fd = L.fourier_descriptors(s, cx, cy)
    assert fd[0, 0] < 0.02  # a disc has a flat centroid-distance signal
    art = fast.art_coefficients(s, cx, cy, torch.tensor([80.0, 92.0], dtype=torch.float64))
    assert art[0, 2:].max() < 0.05  # only p=0 terms survive for a centred disc


REF = Path(os.environ.get("GET3D_LFD_REFERENCE", "/tmp/get3d_lfd_reference")) / "lfd" / "Executable"


@pytest.mark.slow
@pytest.mark.skipif(not (REF / "3DAlignment").is_file(), reason="original LightField program not built "
                    "(run scripts/lfd_reference/compare.py)")
def test_against_original_program(tmp_path):
    import shutil
    import sys
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run missing")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from scripts.lfd_reference.compare import main
    res = main(["--work", str(REF.parents[1]), "--n", "4", "--json", str(tmp_path / "r.json")])
    assert res["alignment_table_matches"] and res["cameras_match"]
    assert res["summary"]["all"]["within_1_pct"] > 98.0


# ---------------------------------------------------------------------------------- fast path == reference path

def _test_silhouettes():
    """[1, 10, 10, 96, 96] silhouettes: single blobs, rings, several parts (near and far apart), slivers, empty."""
    g = torch.Generator().manual_seed(0)
    H = 96
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    out = []
    for i in range(100):
        kind = i % 10
        cx, cy = 20 + int(torch.randint(0, 56, (), generator=g)), 20 + int(torch.randint(0, 56, (), generator=g))
        r = 6 + int(torch.randint(0, 14, (), generator=g))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        if kind == 0:
            s = disc
        elif kind == 1:  # ring (hole)
            s = disc & ((xx - cx) ** 2 + (yy - cy) ** 2 >= (r // 2) ** 2)
        elif kind in (2, 3):  # two / three parts
            s = disc | ((xx - (95 - cx)) ** 2 + (yy - (95 - cy)) ** 2 < 25)
            if kind == 3:
                s |= (xx > 5) & (xx < 9) & (yy > 70) & (yy < 90)
        elif kind == 4:  # scattered fragments (random generator style)
            s = torch.rand(H, H, generator=g) > 0.995
            s |= (xx - cx).abs() + (yy - cy).abs() < 4
        elif kind == 5:  # parts 2 px apart (merged by the 3x3 dilation)
            s = ((xx > 20) & (xx < 40) & (yy > 20) & (yy < 60)) | ((xx > 41) & (xx < 60) & (yy > 30) & (yy < 50))
        elif kind == 6:  # parts 4 px apart (need the 5x5 dilation)
            s = ((xx > 20) & (xx < 40) & (yy > 20) & (yy < 60)) | ((xx > 43) & (xx < 60) & (yy > 30) & (yy < 50))
        elif kind == 7:  # one-pixel lines and a lone pixel
            s = ((yy == cy) & (xx > 10) & (xx < 80)) | ((xx == 5) & (yy == 5))
        elif kind == 8:
            s = torch.zeros(H, H, dtype=torch.bool)
        else:  # touching the image border
            s = disc | (xx < 3) | (yy > 93)
        out.append(s)
    return torch.stack(out).view(1, 10, 10, H, H)


def test_fast_path_equals_reference():
    sil = _test_silhouettes()
    got = L.descriptors_from_silhouettes(sil)
    ref = L.descriptors_from_silhouettes(sil, reference=True)
    for k in ("art", "fd", "cir", "ecc"):
        assert torch.equal(getattr(got, k), getattr(ref, k)), k
    s = sil.reshape(-1, 96, 96)
    a, b = fast.trace_contours(s), reference.trace_contours_reference(s)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    cont = reference._contour_mask(*a, s.shape)
    assert torch.equal(fast._outside_region(cont), reference._outside_region_reference(cont))


def test_thin_equals_reference_on_multi_part():
    s = _test_silhouettes().reshape(-1, 96, 96)
    s = s[[2, 3, 4, 6, 13, 14, 23, 24]]
    buff = descriptors._bbox_fill(s)
    assert torch.equal(fast.thin(buff, s), reference.thin_reference(buff, s))
    buff = reference._dilate(s, core._OFF3)
    assert torch.equal(fast._dilate_fast(s, core._OFF3), buff)
    assert torch.equal(fast.thin(buff, s), reference.thin_reference(buff, s))


def test_fast_path_equals_reference_on_rendered_multi_part_mesh():
    import trimesh
    from trimesh import creation
    rng = np.random.default_rng(1)
    parts = []
    for _ in range(6):
        b = creation.box(rng.uniform(0.05, 0.2, 3))
        b.apply_translation(rng.uniform(-1, 1, 3))
        parts.append(b)
    m = trimesh.util.concatenate(parts)
    sil = L.render_silhouettes(m.vertices, m.faces, res=64)[None]
    got = L.descriptors_from_silhouettes(sil)
    ref = L.descriptors_from_silhouettes(sil, reference=True)
    for k in ("art", "fd", "cir", "ecc"):
        assert torch.equal(getattr(got, k), getattr(ref, k)), k
