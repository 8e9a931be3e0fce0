"""Marching tets: the exactly sized extraction (one host read) against the fixed-capacity one (none), side by side;
on CUDA each with PyTorch's selections and with the Triton kernels of ``perf.marching_kernel``.

    python bench/marching_speed.py                      # tet 90, batch 4, on CUDA when there is one
    python bench/marching_speed.py --res 64 --batch 8 --device cpu
    python bench/marching_speed.py --library DIR        # the same, with another checkout's get3d (before/after)

The field is a noisy ball (many small components, like an untrained generator's surface); the capacity is
``--slack`` × the largest sample's need.  Prints the median milliseconds per call (CUDA events, or the wall clock on
the CPU) and the ratio of the padded extraction to the exact one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=90, help="tet grid resolution")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--slack", type=float, default=1.5, help="padded capacity as a multiple of the largest need")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--library", type=Path, default=None, help="import get3d from this checkout instead")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.library.resolve() if args.library else REPO))
    sys.path.insert(1, str(REPO / "bench"))
    from timing import median_ms

    from get3d.geometry.dmtet import marching_tets
    from get3d.geometry.padded import SurfaceCapacity, marching_tets_padded
    from get3d.geometry.tetgrid import load_tet_grid

    auto = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(auto if args.device == "auto" else args.device)
    grid = load_tet_grid(args.res, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    n = grid.verts.shape[0]
    v = grid.verts[None].expand(args.batch, -1, -1) + 0.003 * torch.randn(args.batch, n, 3, generator=g, device=dev)
    sdf = 0.3 - grid.verts.norm(dim=-1)[None] + 0.02 * torch.randn(args.batch, n, generator=g, device=dev)
    exact = marching_tets(v, sdf, grid.tets, grid.edges)
    need_v, need_f = max(p.shape[0] for p, _ in exact), max(f.shape[0] for _, f in exact)
    cap = SurfaceCapacity(int(need_v * args.slack), int(need_f * args.slack))
    from get3d import perf
    has_kernel = "marching_kernel" in perf.PerfConfig.__dataclass_fields__   # not in a --library before it

    def timed(kernel, fn):
        def run():
            if not has_kernel:
                return fn()
            with perf.using(marching_kernel=kernel):
                return fn()
        return run

    def run_exact():
        return marching_tets(v, sdf, grid.tets, grid.edges)

    def run_padded():
        return marching_tets_padded(v, sdf, grid.tets, grid.edges, cap)

    kernels = ("torch", "triton") if dev.type == "cuda" and has_kernel else ("torch",)
    rows = [(f"{name}{', Triton' if k == 'triton' else ''}", timed(k, fn))
            for name, fn in (("exact (one host read)", run_exact), ("padded (no host read)", run_padded)) for k in kernels]
    print(f"tet grid {args.res} ({grid.tets.shape[0]:,} tets), batch {args.batch}, {dev}"
          + (f" {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else f", {torch.get_num_threads()} threads")
          + f"; largest need {need_v:,} vertices / {need_f:,} faces, padded capacity {cap.verts:,} / {cap.faces:,}")
    times = [median_ms(fn, args.reps, dev) for _, fn in rows]
    print(f"{'extraction':26s} {'ms':>9s} {'ratio':>7s}")
    for (name, _), t in zip(rows, times):
        print(f"{name:26s} {t:9.2f} {t / times[0]:7.2f}")


if __name__ == "__main__":
    main()
