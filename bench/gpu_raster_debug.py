"""Where do the torch rasterizer and nvdiffrast differ? Error quantiles and gradient cosines on masked pixels."""
import sys

import torch

sys.path.insert(0, ".")
from get3d import cameras
from get3d.raster import get_backend
from get3d.raster.agreement import random_scene


def icosphere_scene(batch, subdiv, seed, device):
    import trimesh
    m = trimesh.creation.icosphere(subdivisions=subdiv, radius=0.35)
    g = torch.Generator().manual_seed(seed)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    v = v * (1 + 0.2 * (torch.rand(v.shape[0], 1, generator=g) - 0.5))
    f = torch.tensor(m.faces, dtype=torch.int32)
    az, polar = cameras.CameraPrior(0.0, 45.0).sample(batch, generator=g)
    mvp = cameras.mvp_from_c2w(cameras.camera_to_world(az.double(), polar.double())).float()
    vh = torch.cat([v, torch.ones(v.shape[0], 1)], 1)
    return torch.einsum("bij,vj->bvi", mvp, vh).to(device).contiguous(), f.to(device)


def interior(ids):
    same = torch.ones_like(ids, dtype=torch.bool)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        same &= torch.roll(ids, (dy, dx), (1, 2)) == ids
    return same & (ids > 0)


def cos(a, b):
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def run(name, pos, tri, res, ref, tst):
    g = torch.Generator().manual_seed(0)
    attr = torch.rand(pos.shape[1], 3, generator=g).to(pos.device)
    w = torch.randn(pos.shape[0], res, res, 3, generator=g).to(pos.device)
    outs = []
    for bk in (ref, tst):
        p = pos.detach().clone().requires_grad_(True)
        rast = bk.rasterize(p, tri, (res, res))
        col = bk.interpolate(attr, rast, tri)
        outs.append((p, rast, col))
    ids0, ids1 = outs[0][1][..., 3], outs[1][1][..., 3]
    both = (ids0 == ids1) & (ids0 > 0)
    inner = interior(ids0) & interior(ids1) & both
    err = (outs[0][2] - outs[1][2]).abs().amax(-1)[both]
    duv = (outs[0][1][..., :2] - outs[1][1][..., :2]).abs().amax(-1)[both]
    q = torch.quantile(err.float(), torch.tensor([0.5, 0.99, 0.999], device=err.device)).tolist()
    grads = []
    for (p, rast, col) in outs:
        (gi,) = torch.autograd.grad((col * w * inner[..., None]).sum(), p)
        grads.append(gi)
    gu = []
    for (p, rast, col) in outs:
        p2 = p.detach().clone().requires_grad_(True)
        (gg,) = torch.autograd.grad(((ref if len(gu) == 0 else tst).rasterize(p2, tri, (res, res))[..., :2]
                                     * w[..., :2] * inner[..., None]).sum(), p2)
        gu.append(gg)
    print(f"{name:10s} {res:5d} agree={float((ids0 == ids1).float().mean()):.5f} "
          f"attr_err q50/q99/q999={q[0]:.1e}/{q[1]:.1e}/{q[2]:.1e} frac>1e-4={float((err > 1e-4).float().mean()):.2e} "
          f"max_duv={float(duv.max()):.2e} cos_interp(interior)={cos(grads[0], grads[1]):.4f} "
          f"cos_uv(interior)={cos(gu[0], gu[1]):.4f} |g_ref|={float(grads[0].norm()):.3e} |g_tst|={float(grads[1].norm()):.3e}")


ref = get_backend("nvdiffrast", "cuda")
tst = get_backend("torch", "cuda")
for res in (256, 1024):
    for seed in range(2):
        run(f"ico{seed}", *icosphere_scene(4, 4, seed, "cuda"), res, ref, tst)
        run(f"uvs{seed}", *random_scene(4, 40000, seed, "cuda"), res, ref, tst)
# single triangle, explicit numbers
pos = torch.tensor([[[-0.6, -0.5, 0.2, 1.0], [0.7, -0.4, 0.3, 1.2], [0.1, 0.6, 0.5, 0.9]]], device="cuda")
tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device="cuda")
for bk in (ref, tst):
    p = pos.clone().requires_grad_(True)
    r = bk.rasterize(p, tri, (8, 8))
    (g,) = torch.autograd.grad((r[..., 0] * 1.0 + r[..., 1] * 2.0).sum(), p)
    print(bk.name if hasattr(bk, "name") else bk, "uv[0,4,4]", r[0, 4, 4].tolist(), "grad", g[0].tolist())
