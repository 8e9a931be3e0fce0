import math

import numpy as np
import pytest
import torch

from get3d import cameras
from get3d.raster import TorchRasterBackend, get_backend, ortho_view_mvp, render_meshes
from get3d.raster.torch_backend import opposite_vertices

BK = TorchRasterBackend("cpu")


def _tri(pts, z=0.0, w=1.0):
    return torch.tensor([[[x * w, y * w, z * w, w] for x, y in pts]], dtype=torch.float32)


def test_known_triangle_ids_rows_and_centres():
    # Triangle in the upper half of clip space (y > 0) must land in high rows (row 0 = clip y = -1).
    pos = _tri([(-1.0, 0.0), (1.0, 0.0), (-1.0, 1.0)], z=0.25)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast = BK.rasterize(pos, tri, (8, 8))
    ids = rast[0, ..., 3]
    assert ids[:4].sum() == 0 and ids[4:].sum() > 0
    # pixel (x, y) centre = ((2x+1)/8 - 1, (2y+1)/8 - 1): covered iff cy > 0 and cx + 2 cy < 1 (hypotenuse)
    for y in range(8):
        for x in range(8):
            cx, cy = (2 * x + 1) / 8 - 1, (2 * y + 1) / 8 - 1
            if abs(cx + 2 * cy - 1) < 1e-9:
                continue  # exactly on the hypotenuse: decided by the fill rule
            assert bool(ids[y, x] == 1) == (cy > 0 and cx + 2 * cy < 1), (x, y)
    # barycentrics: p = u*v0 + v*v1 + (1-u-v)*v2 (affine case)
    y, x = 4, 1
    cx, cy = (2 * x + 1) / 8 - 1, (2 * y + 1) / 8 - 1
    u, v = rast[0, y, x, 0].item(), rast[0, y, x, 1].item()
    px = u * -1 + v * 1 + (1 - u - v) * -1
    py = u * 0 + v * 0 + (1 - u - v) * 1
    assert abs(px - cx) < 1e-5 and abs(py - cy) < 1e-5
    assert torch.allclose(rast[0, ..., 2][ids > 0], torch.tensor(0.25))


def test_perspective_correct_barycentrics_and_depth():
    # One triangle seen in perspective: interpolated world position must re-project to the pixel centre.
    c2w = cameras.camera_to_world(torch.tensor([0.7], dtype=torch.float64), torch.tensor([1.1], dtype=torch.float64))
    mvp = cameras.mvp_from_c2w(c2w).float()
    v = torch.tensor([[-0.4, -0.3, 0.2], [0.5, -0.2, -0.3], [0.0, 0.45, 0.1]])
    f = torch.tensor([[0, 1, 2]])
    out = render_meshes(BK, [(v, f)], mvp, 64)
    rast = out["rast"]
    world = BK.interpolate(v, rast, out["tri"])[0]
    # Barycentrics are clamped to [0, 1] like nvdiffrast's, so pixels accepted by the snapped coverage test but
    # a hair outside the float triangle do not re-project exactly: check the strictly interior ones.
    u, v_ = rast[0, ..., 0], rast[0, ..., 1]
    inside = (rast[0, ..., 3] > 0) & (u > 0) & (v_ > 0) & (u + v_ < 1)
    ys, xs = torch.nonzero(inside, as_tuple=True)
    assert ys.numel() > 50
    K = cameras.intrinsics(64)
    uv = cameras.project_points(world[ys, xs].double().numpy(), c2w[0].numpy(), K)
    # rasterizer row y (bottom-up) is image row 63 - y
    assert np.abs(uv[:, 0] - (xs.numpy() + 0.5)).max() < 1e-2
    assert np.abs(uv[:, 1] - (63 - ys.numpy() + 0.5)).max() < 1e-2
    # z/w matches clip of the interpolated point
    ph = torch.cat([world[ys, xs], torch.ones(len(ys), 1)], 1) @ mvp[0].T
    assert torch.allclose(rast[0, ys, xs, 2], ph[:, 2] / ph[:, 3], atol=1e-4)


def test_depth_test_and_deterministic_ties():
    pos = torch.tensor([[[-1, -1, 0.5, 1], [3, -1, 0.5, 1], [-1, 3, 0.5, 1],
                         [-1, -1, -0.5, 1], [3, -1, -0.5, 1], [-1, 3, -0.5, 1]]], dtype=torch.float32)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5], [0, 1, 2]], dtype=torch.int32)
    rast = BK.rasterize(pos, tri, (4, 4))
    assert (rast[0, ..., 3] == 2).all()  # nearer (z=-0.5) wins
    tri2 = torch.tensor([[0, 1, 2], [0, 1, 2]], dtype=torch.int32)
    assert (BK.rasterize(pos, tri2, (4, 4))[0, ..., 3] == 1).all()  # exact tie: lowest id


def test_shared_edge_watertight():
    # Two triangles forming the full screen quad (diagonal through pixel centres): every pixel exactly once.
    pos = _tri([(-1, -1), (1, -1), (1, 1), (-1, 1)])
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    rast = BK.rasterize(pos, tri, (16, 16))
    assert (rast[0, ..., 3] > 0).all()
    assert (rast[0, ..., 3] == 1).sum() + (rast[0, ..., 3] == 2).sum() == 256


def test_near_plane_and_behind_camera():
    c2w = cameras.look_at(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))
    mvp = cameras.mvp_from_c2w(c2w).float()
    behind = torch.tensor([[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]])   # z=2 is behind the camera
    out = render_meshes(BK, [(behind, torch.tensor([[0, 1, 2]]))], mvp, 32)
    assert out["hard_mask"].sum() == 0
    # a floor triangle passing under/behind the camera: rendered partially, no crash, nothing at w <= near
    cross = torch.tensor([[-3.0, -0.2, 3.0], [3.0, -0.2, 3.0], [0.0, -0.2, -5.0]])
    out = render_meshes(BK, [(cross, torch.tensor([[0, 1, 2]]))], mvp, 32)
    covered = out["rast"][0, ..., 3] > 0
    assert covered.sum() > 0
    d = out["rast"][0, ..., 2][covered]
    assert (d >= -1).all() and (d <= 1).all()
    assert (out["depth"][0, 0][out["hard_mask"][0, 0] > 0] >= cameras.NEAR - 1e-4).all()


def test_range_mode_matches_instance_mode():
    torch.manual_seed(0)
    v = torch.rand(30, 4) * 1.6 - 0.8
    v[:, 3] = 1.0
    v[:, 2] = torch.rand(30) * 0.5
    tri = torch.randint(0, 30, (20, 3), dtype=torch.int32)
    r_inst = BK.rasterize(v[None].expand(2, -1, -1).contiguous(), tri, (32, 32))
    r_rng = BK.rasterize(torch.cat([v, v]), torch.cat([tri, tri + 30]), (32, 32),
                         ranges=torch.tensor([[0, 20], [20, 20]], dtype=torch.int32))
    ids_inst = r_inst[..., 3]
    ids_rng = r_rng[..., 3].clone()
    ids_rng[1][ids_rng[1] > 0] -= 20
    assert torch.equal(ids_inst, ids_rng)
    assert torch.allclose(r_inst[..., :3], r_rng[..., :3], atol=1e-5)


def test_small_chunks_same_result():
    torch.manual_seed(1)
    v = torch.rand(1, 200, 4) * 2 - 1
    v[..., 3] = 1.0
    tri = torch.randint(0, 200, (300, 3), dtype=torch.int32)
    a = BK.rasterize(v, tri, (48, 40))
    b = TorchRasterBackend("cpu", max_fragments=1024).rasterize(v, tri, (48, 40))
    assert torch.equal(a, b)


def test_interpolate_gradients_finite_differences():
    torch.manual_seed(0)
    pos = torch.tensor([[[-0.8, -0.7, 0.1, 1.0], [0.9, -0.5, 0.2, 1.3], [0.1, 0.8, -0.1, 0.9]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    attr = torch.randn(1, 3, 2, dtype=torch.float32)
    base_ids = BK.rasterize(pos, tri, (24, 24))[..., 3]
    cov = (base_ids > 0).float()
    # weights only on pixels 2+ px inside the triangle, so the FD step cannot change the weighted coverage
    inner = -torch.nn.functional.max_pool2d(-cov[:, None], 5, stride=1, padding=2)[:, 0]
    wts = torch.randn(1, 24, 24, 2) * inner[..., None]
    assert inner.sum() > 20

    def loss(p, a):
        r = BK.rasterize(p, tri, (24, 24))
        return (BK.interpolate(a, r, tri) * wts).sum()

    p = pos.clone().requires_grad_(True)
    a = attr.clone().requires_grad_(True)
    loss(p, a).backward()
    eps = 1e-3
    for idx in [(0, 0, 0), (0, 1, 1), (0, 2, 3), (0, 2, 0)]:
        pp, pm = pos.clone(), pos.clone()
        pp[idx] += eps
        pm[idx] -= eps
        fd = (loss(pp, attr) - loss(pm, attr)).item() / (2 * eps)
        assert abs(fd - p.grad[idx].item()) < 2e-2 * max(1.0, abs(fd)), (idx, fd, p.grad[idx].item())
    for idx in [(0, 0, 0), (0, 2, 1)]:
        ap, am = attr.clone(), attr.clone()
        ap[idx] += eps
        am[idx] -= eps
        fd = (loss(pos, ap) - loss(pos, am)).item() / (2 * eps)
        assert abs(fd - a.grad[idx].item()) < 1e-2 * max(1.0, abs(fd))


def _square(x_right):
    # quad covering x in [-0.9, x_right], y in [-0.9, 0.9]
    return torch.tensor([[[-0.9, -0.9, 0, 1], [x_right, -0.9, 0, 1], [x_right, 0.9, 0, 1], [-0.9, 0.9, 0, 1]]])


def test_antialias_gradient_sign_and_finite_differences():
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    res = (16, 16)

    def coverage(xr, grad=False):
        pos = _square(xr).requires_grad_(grad)
        rast = BK.rasterize(pos, tri, res)
        mask = (rast[..., 3:] > 0).float()
        aa = BK.antialias(mask, rast, pos, tri)
        return aa.sum(), pos

    x0 = 0.1 + 0.3 / 8  # edge between pixel centres (pixel width = 2/16 clip units)
    s, pos = coverage(x0, grad=True)
    s.backward()
    g = pos.grad[0, 1, 0] + pos.grad[0, 2, 0]  # d(sum)/d(x of right edge) in clip units
    assert g > 0
    eps = 1e-3
    fd = (coverage(x0 + eps)[0] - coverage(x0 - eps)[0]).item() / (2 * eps)
    assert abs(fd - g.item()) < 0.05 * abs(fd), (fd, g.item())
    # AA coverage ~ true area in pixels: rows covered (y in [-0.9, 0.9] → 14 rows with centres inside)
    true_area_px = (x0 + 0.9) / 2 * 16 * 14.4
    assert abs(s.item() - true_area_px) < 1.0


def test_antialias_interior_edges_untouched():
    # The quad's diagonal is an interior edge (both triangles face the same way): no blending across it.
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    pos = _square(0.9)
    rast = BK.rasterize(pos, tri, (16, 16))
    color = (rast[..., 3:] == 1).float()
    aa = BK.antialias(color, rast, pos, tri)
    cov = (rast[..., 3] > 0).float()
    inner = -torch.nn.functional.max_pool2d(-cov[:, None], 3, stride=1, padding=1)[:, 0] > 0
    assert (color != aa)[..., 0][inner].sum() == 0      # no blending across the diagonal
    assert (color != aa).sum() > 0                      # but the outer silhouette is blended
    assert opposite_vertices(tri).tolist() == [[-1, 3, -1], [-1, -1, 1]]


def test_render_cube_projects_where_cameras_say():
    corners = torch.tensor([[x, y, z] for x in (-0.2, 0.2) for y in (-0.2, 0.2) for z in (-0.2, 0.2)])
    import trimesh
    box = trimesh.creation.box(extents=(0.4, 0.4, 0.4))
    v = torch.tensor(box.vertices, dtype=torch.float32)
    f = torch.tensor(box.faces, dtype=torch.long)
    az = torch.tensor([0.6], dtype=torch.float64)
    polar = torch.tensor([math.radians(65.0)], dtype=torch.float64)
    c2w = cameras.camera_to_world(az, polar)
    mvp = cameras.mvp_from_c2w(c2w).float()
    res = 128
    out = render_meshes(BK, [(v, f)], mvp, res)
    mask = out["hard_mask"][0, 0].numpy() > 0
    uv = cameras.project_points(corners.double().numpy(), c2w[0].numpy(), cameras.intrinsics(res))
    ys, xs = np.nonzero(mask)
    # bounding box of the silhouette (outer pixel borders) vs projected corners, within 1 px
    assert abs(xs.min() - uv[:, 0].min()) < 1.0 and abs(xs.max() + 1 - uv[:, 0].max()) < 1.0
    assert abs(ys.min() - uv[:, 1].min()) < 1.0 and abs(ys.max() + 1 - uv[:, 1].max()) < 1.0
    # each projected corner lies on/next to a covered pixel
    for u_, v_ in uv:
        yy, xx = int(np.clip(v_, 0, res - 1)), int(np.clip(u_, 0, res - 1))
        assert mask[max(yy - 1, 0):yy + 2, max(xx - 1, 0):xx + 2].any()


def test_render_empty_and_mixed_batch():
    empty = (torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))
    c2w = cameras.camera_to_world(torch.tensor([0.0, 1.0]), torch.tensor([1.2, 1.0]))
    mvp = cameras.mvp_from_c2w(c2w)
    out = render_meshes(BK, [empty, empty], mvp, 16, texture_fn=lambda p, s: p)
    assert out["mask"].shape == (2, 1, 16, 16) and out["mask"].sum() == 0 and out["rgb"].shape == (2, 3, 16, 16)
    import trimesh
    ico = trimesh.creation.icosphere(2, radius=0.4)
    mesh = (torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces))
    out = render_meshes(BK, [empty, mesh], mvp, 16, texture_fn=lambda p, s: torch.cat([p, s[:, None].float()], 1))
    assert out["mask"][0].sum() == 0 and out["mask"][1].sum() > 10
    assert out["rgb"].shape == (2, 4, 16, 16)
    assert torch.allclose(out["rgb"][1, 3], out["mask"][1, 0])  # sample index 1 everywhere covered


def test_texture_only_at_covered_pixels_and_gradients():
    import trimesh
    ico = trimesh.creation.icosphere(2, radius=0.4)
    v = torch.tensor(ico.vertices, dtype=torch.float32).requires_grad_(True)
    f = torch.tensor(ico.faces)
    c2w = cameras.camera_to_world(torch.tensor([0.3]), torch.tensor([1.2]))
    mvp = cameras.mvp_from_c2w(c2w)
    colour = torch.zeros(3, requires_grad=True)
    calls = []

    def tex(p, s):
        calls.append(p.shape[0])
        return torch.sigmoid(p @ torch.ones(3, 3) + colour)

    out = render_meshes(BK, [(v, f)], mvp, 32, texture_fn=tex)
    assert calls == [int(out["hard_mask"].sum())]
    (out["rgb"].sum() + out["mask"].sum()).backward()
    assert colour.grad.abs().sum() > 0 and v.grad.abs().sum() > 0


def test_ortho_view_unit_box_fits():
    dirs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    mvp = ortho_view_mvp(dirs)
    corners = torch.tensor([[x, y, z, 1.0] for x in (-.5, .5) for y in (-.5, .5) for z in (-.5, .5)])
    clip = torch.einsum("bij,vj->bvi", mvp, corners)
    assert (clip[..., :3].abs() <= 1.0 + 1e-5).all() and torch.allclose(clip[..., 3], torch.ones(()))
    import trimesh
    box = trimesh.creation.box(extents=(1, 1, 1))
    out = render_meshes(BK, [(torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces))] * 3, mvp, 64)
    # front view of the unit box: a square of side 1/sqrt(3) of the frame
    frac = out["hard_mask"][0].mean().item()
    assert abs(frac - 1 / 3) < 0.03


def test_get_backend_errors():
    assert get_backend("auto", "cpu").name == "torch"
    with pytest.raises(ValueError):
        get_backend("opengl", "cpu")
    with pytest.raises(RuntimeError):
        get_backend("nvdiffrast", "cpu")


def test_render_antialiases_mask_and_colour_in_one_call_like_two():
    """render_meshes antialiases mask and colour together; each channel equals its own antialias call, and the
    vertex gradients of a loss on both are the same."""
    import trimesh
    ico = trimesh.creation.icosphere(2, radius=0.4)
    f = torch.tensor(ico.faces)
    c2w = cameras.camera_to_world(torch.tensor([0.3, 1.1]), torch.tensor([1.2, 0.9]))
    mvp = cameras.mvp_from_c2w(c2w)

    def tex(p, s):
        return torch.sigmoid(p @ torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.0, -1.0], [2.0, 0.1, 1.0]]))

    def loss(out):
        return (out["rgb"] * torch.linspace(0, 1, 32)).sum() + (out["mask"] ** 2).sum()

    v = torch.tensor(ico.vertices, dtype=torch.float32).requires_grad_(True)
    out = render_meshes(BK, [(v, f), (v * 0.8, f)], mvp, 32, texture_fn=tex)
    loss(out).backward()

    v2 = torch.tensor(ico.vertices, dtype=torch.float32).requires_grad_(True)
    plain = render_meshes(BK, [(v2, f), (v2 * 0.8, f)], mvp, 32, texture_fn=tex, antialias=False)
    rast, pos, tri = plain["rast"], plain["pos_clip"], plain["tri"]
    hw = lambda x: cameras.flip_rows(x).permute(0, 3, 1, 2)  # rasterizer layout → [B,C,H,W]
    mask = hw(BK.antialias((rast[..., 3:] > 0).float(), rast, pos, tri))
    rgb = hw(BK.antialias(cameras.flip_rows(plain["rgb"].permute(0, 2, 3, 1)).contiguous(), rast, pos, tri))
    assert (mask != plain["mask"]).any()                       # the antialiasing does something here
    torch.testing.assert_close(out["mask"], mask, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["rgb"], rgb, rtol=0, atol=1e-6)
    loss({"rgb": rgb, "mask": mask}).backward()
    torch.testing.assert_close(v.grad, v2.grad, rtol=1e-5, atol=1e-6)
