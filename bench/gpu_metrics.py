"""GPU benchmark of the evaluation metrics: CD+COV+MMD at car-protocol size, LFD descriptor throughput,
LFD matching throughput and Inception throughput at 1024^2 input.  Prints a table; ``--json PATH`` saves it.

    python bench/gpu_metrics.py                     # CUDA, full sizes
    python bench/gpu_metrics.py --device cpu --small  # debugging
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(dev):
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    dev = args.device
    if torch.device(dev).type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA requested but not available (use --device cpu --small)")
    from get3d.metrics.chamfer import chamfer_matrix
    from get3d.metrics.coverage import coverage_mmd
    from get3d.metrics.lfd import lfd_matrix, mesh_descriptors

    rows = []
    G, R, N = (64, 16, 2048) if args.small else (7470, 1494, 2048)
    gen = torch.rand(G, N, 3)
    ref = torch.rand(R, N, 3)
    _sync(dev)
    t0 = time.perf_counter()
    d = chamfer_matrix(gen, ref, device=dev)
    r = coverage_mmd(d, 1e3)
    _sync(dev)
    t = time.perf_counter() - t0
    rows.append({"what": f"CD+COV+MMD {G}x{R}x{N}", "seconds": t, "rate": G * R / t, "unit": "pairs/s",
                 "check": f"cov={r['cov']:.1f}"})

    import trimesh
    meshes = []
    for i in range(4 if args.small else 64):
        m = trimesh.creation.icosphere(3) if i % 2 else trimesh.creation.torus(1.0, 0.3)
        m.apply_scale([1.0, 0.5 + 0.01 * i, 1.0])
        meshes.append((m.vertices, m.faces))
    mesh_descriptors(meshes[:2], device=dev)  # warm-up (JIT builds, allocations)
    _sync(dev)
    t0 = time.perf_counter()
    desc = mesh_descriptors(meshes, device=dev, batch=8)
    _sync(dev)
    t = time.perf_counter() - t0
    rows.append({"what": f"LFD descriptors ({len(meshes)} meshes, 100 views 256^2)", "seconds": t,
                 "rate": len(meshes) / t, "unit": "meshes/s", "check": f"art_sum={int(desc.art.sum())}"})
    rep = 8 if args.small else 1024
    va = desc.vector().repeat((rep // len(meshes)) + 1, 1, 1, 1)[:rep]
    _sync(dev)
    t0 = time.perf_counter()
    m = lfd_matrix(va, va[: max(4, rep // 4)], device=dev)
    _sync(dev)
    t = time.perf_counter() - t0
    rows.append({"what": f"LFD matching {m.shape[0]}x{m.shape[1]}", "seconds": t, "rate": m.numel() / t,
                 "unit": "pairs/s", "check": f"diag0={bool((m.diagonal() == 0).all())}"})

    try:
        from get3d.metrics.inception import InceptionFeatureExtractor
        ext = InceptionFeatureExtractor(dev, batch_size=8 if args.small else 64)
        n = 8 if args.small else 512
        res = 256 if args.small else 1024
        imgs = torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8)
        ext(imgs[: ext.batch_size])
        _sync(dev)
        t0 = time.perf_counter()
        f = ext(imgs)
        _sync(dev)
        t = time.perf_counter() - t0
        rows.append({"what": f"Inception {n} images {res}^2", "seconds": t, "rate": n / t, "unit": "images/s",
                     "check": f"feat_mean={float(f.mean()):.4f}"})
    except FileNotFoundError as exc:
        rows.append({"what": "Inception", "seconds": float("nan"), "rate": float("nan"), "unit": "images/s",
                     "check": f"skipped: {exc}"})

    dev_name = torch.cuda.get_device_name() if torch.device(dev).type == "cuda" else "cpu"
    print(f"device: {dev_name}  torch {torch.__version__}")
    print(f"{'benchmark':52s} {'seconds':>10s} {'rate':>14s}  check")
    for r in rows:
        print(f"{r['what']:52s} {r['seconds']:10.2f} {r['rate']:10.1f} {r['unit']:9s} {r['check']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev_name, "torch": torch.__version__, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
