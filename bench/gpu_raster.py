#!/usr/bin/env python
"""Raster backends on a GPU: agreement checks (torch rasterizer vs nvdiffrast) + timings, one run.

    python bench/gpu_raster.py --json out/raster.json             # CUDA machine, nvdiffrast importable
    python bench/gpu_raster.py --device cpu --json /tmp/r.json    # small sizes, torch backend only (debugging)

(a) installs nothing; on CUDA it assumes ``nvdiffrast.torch`` (diffrp-nvdiffrast 0.3.3.1) is importable.
(b) agreement on several random meshes/cameras at 256² and 1024²: pixels agreeing %, max attribute error,
    position-gradient cosine (interpolate loss and antialias loss).
(c) timings of rasterize+interpolate+antialias, batch 8, 40k triangles, 256²/512²/1024², both backends, and
    DMTet marching tets (this repo's tet grid, res 90, batch 4).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from get3d.geometry import dmtet_extract, load_tet_grid
from get3d.raster import TorchRasterBackend, get_backend
from get3d.raster.agreement import compare_backends, random_scene


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_fn(fn, dev, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(dev)
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(dev)
    return (time.perf_counter() - t) / iters * 1000.0


def pipeline(bk, pos, tri, res, attr):
    def run():
        p = pos.detach().requires_grad_(True)
        rast = bk.rasterize(p, tri, (res, res))
        col = bk.interpolate(attr, rast, tri)
        aa = bk.antialias(col, rast, p, tri)
        aa.sum().backward()
    return run


@dataclasses.dataclass(frozen=True)
class Sizes:
    agree_res: list
    time_res: list
    batch: int
    ntris: int
    tet_res: int
    tet_batch: int
    warm: int
    iters: int


CPU_SIZES = Sizes([64, 128], [64, 128], 2, 2000, 32, 2, 1, 2)
GPU_SIZES = Sizes([256, 1024], [256, 512, 1024], 8, 40000, 90, 4, 3, 10)


def run_agreement(ref_bk, torch_bk, sz: Sizes, scenes: int, dev, cpu: bool, results: dict) -> None:
    """(b) Backend agreement on well-shaped random meshes (gated) and sliver UV spheres (reported)."""
    print(f"\n== agreement: {ref_bk.name} (ref) vs torch ==")
    print(f"{'res':>5} {'scene':>5} {'covered%':>9} {'agree%':>9} {'max_attr':>10} {'q999_attr':>9} {'max_zw':>10} "
          f"{'cos_interp':>10} {'cos_aa':>8}")
    results["stress"] = []
    for res in sz.agree_res:
        for s in range(scenes):
            for kind in ("geodesic", "uv"):
                pos, tri = random_scene(sz.batch if cpu else 4, sz.ntris, seed=100 + s, device=dev, kind=kind)
                r = compare_backends(ref_bk, torch_bk, pos, tri, res, seed=s)
                r.update(res=res, scene=f"{kind}{s}")
                results["agreement" if kind == "geodesic" else "stress"].append(r)
                print(f"{res:>5} {r['scene']:>9} {100 * r['covered']:>9.2f} {100 * r['pixels_agree']:>9.3f} "
                      f"{r['max_attr_err']:>10.2e} {r['q999_attr_err']:>9.1e} {r['max_zw_err']:>10.2e} "
                      f"{r['grad_cos_interp']:>10.4f} {r['grad_cos_aa']:>8.4f}"
                      + ("" if kind == "geodesic" else "   (sliver stress, not gated)"))
    rows = results["agreement"]
    results["agreement_pass"] = bool(
        min(r["pixels_agree"] for r in rows) >= 0.999 and max(r["q999_attr_err"] for r in rows) <= 1e-4
        and max(r["max_attr_err"] for r in rows) <= 1e-3
        and min(r["grad_cos_interp"] for r in rows) >= 0.99 and min(r["grad_cos_aa"] for r in rows) >= 0.99)
    print(f"agreement thresholds (>=99.9% ids, attr q99.9<=1e-4 and max<=1e-3, cos>=0.99): "
          f"{'PASS' if results['agreement_pass'] else 'FAIL'}")


def run_timing(ref_bk, torch_bk, sz: Sizes, dev, skip_torch_above: int, results: dict) -> None:
    """(c) rasterize + interpolate + antialias, forward + backward, both backends side by side."""
    print(f"\n== rasterize+interpolate+antialias (fwd+bwd), batch {sz.batch}, ~{sz.ntris} tris ==")
    print(f"{'res':>5} {ref_bk.name + ' ms':>14} {'torch ms':>10} {'torch/ref':>10}")
    pos, tri = random_scene(sz.batch, sz.ntris, seed=7, device=dev)
    attr = torch.rand(pos.shape[1], 3, device=dev)
    results["timing_tris"] = int(tri.shape[0])
    for res in sz.time_res:
        t_ref = time_fn(pipeline(ref_bk, pos, tri, res, attr), dev, sz.warm, sz.iters)
        t_t = None
        if res <= skip_torch_above:
            t_t = time_fn(pipeline(torch_bk, pos, tri, res, attr), dev, 1, max(2, sz.iters // 3))
        results["timing"].append({"res": res, "ref_ms": t_ref, "torch_ms": t_t,
                                  "ratio": (t_t / t_ref) if t_t else None})
        print(f"{res:>5} {t_ref:>14.2f} {t_t if t_t else float('nan'):>10.2f} "
              f"{(t_t / t_ref) if t_t else float('nan'):>10.2f}")


def run_dmtet(sz: Sizes, dev, results: dict) -> None:
    """DMTet (guard + SDF reg + marching tets) on a noisy sphere SDF, forward and forward + backward."""
    grid = load_tet_grid(sz.tet_res, device=dev)
    g = torch.Generator().manual_seed(0)
    base = 0.3 - grid.verts.norm(dim=-1)
    noise = 0.02 * torch.randn(sz.tet_batch, grid.verts.shape[0], generator=g).to(dev)
    sdf = (base[None] + noise).requires_grad_(True)
    deform = torch.zeros(sz.tet_batch, grid.verts.shape[0], 3, device=dev, requires_grad=True)

    def dm_bwd():
        o = dmtet_extract(grid, sdf, deform)
        (sum(v.sum() for v, _ in o["meshes"]) + o["sdf_reg"]).backward()

    t_dm = time_fn(lambda: dmtet_extract(grid, sdf, deform), dev, sz.warm, sz.iters)
    nf = [int(f.shape[0]) for _, f in dmtet_extract(grid, sdf, deform)["meshes"]]
    t_dmb = time_fn(dm_bwd, dev, sz.warm, sz.iters)
    results["dmtet"] = {"tet_res": sz.tet_res, "batch": sz.tet_batch, "grid_verts": int(grid.verts.shape[0]),
                        "grid_tets": int(grid.tets.shape[0]), "faces_per_sample": nf, "fwd_ms": t_dm,
                        "fwd_bwd_ms": t_dmb}
    print(f"\n== DMTet (guard + reg + marching tets), tet res {sz.tet_res} ({grid.verts.shape[0]} verts, "
          f"{grid.tets.shape[0]} tets), batch {sz.tet_batch} ==")
    print(f"fwd {t_dm:.2f} ms, fwd+bwd {t_dmb:.2f} ms, faces/sample {nf}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None, help="write results as JSON to this path")
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--skip-torch-timing-above", type=int, default=4096,
                    help="skip torch-backend timing above this resolution (it is the slow one)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    cpu = dev.type != "cuda"
    sz = CPU_SIZES if cpu else GPU_SIZES
    results: dict = {"device": torch.cuda.get_device_name(dev) if not cpu else platform.processor() or "cpu",
                     "torch": torch.__version__, "agreement": [], "timing": [], "dmtet": {}}
    torch_bk = TorchRasterBackend(dev)
    if cpu:
        ref_bk = TorchRasterBackend(dev, max_fragments=1 << 16)   # self-check with different chunking
        print("CPU mode: comparing the torch backend with itself (different chunking); nvdiffrast not used")
    else:
        ref_bk = get_backend("nvdiffrast", dev)
    results["ref_backend"] = ref_bk.name
    run_agreement(ref_bk, torch_bk, sz, args.scenes, dev, cpu, results)
    run_timing(ref_bk, torch_bk, sz, dev, args.skip_torch_timing_above, results)
    run_dmtet(sz, dev, results)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
