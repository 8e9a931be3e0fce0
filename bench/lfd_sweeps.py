"""How many flood-fill sweeps the LFD outside region takes per descriptor batch, for ``check`` = 1 and 2 sweep
pairs between convergence checks (device-independent work count; codes compared for identity).

    python bench/lfd_sweeps.py --n-single 8 --n-multi 4

Runs the GPU variants of the loop-heavy steps (``perf.lfd_algorithms: gpu``) on any device; on the CPU the
silhouettes come from the PyTorch rasterizer.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_metrics import _test_meshes

from get3d import perf
from get3d.metrics import lfd
from get3d.metrics.lfd import fast


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-single", type=int, default=8)
    ap.add_argument("--n-multi", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    perf.apply(perf.with_changes(lfd_algorithms="gpu"))
    calls = {"n": 0}
    sweep, sweeps = fast._sweep, fast._outside_sweeps

    def counting(*a, **k):
        calls["n"] += 1
        return sweep(*a, **k)

    fast._sweep = counting
    print(f"{'meshes':8s} {'n':>3s} {'sweeps check=2':>15s} {'sweeps check=1':>15s} {'codes identical':>16s}")
    try:
        for kind, n in (("single", args.n_single), ("multi", args.n_multi)):
            if n <= 0:
                continue
            sil = lfd.render_meshes_silhouettes(_test_meshes(n, kind), args.device).to(args.device)
            res = {}
            for check in (2, 1):
                fast._outside_sweeps = functools.partial(sweeps, check=check)
                calls["n"] = 0
                d = lfd.descriptors_from_silhouettes(sil)
                res[check] = (calls["n"], d)
            same = all(torch.equal(getattr(res[1][1], k), getattr(res[2][1], k)) for k in ("art", "fd", "cir", "ecc"))
            print(f"{kind:8s} {n:3d} {res[2][0]:15d} {res[1][0]:15d} {same!s:>16}")
    finally:
        fast._sweep, fast._outside_sweeps = sweep, sweeps
        perf.apply(perf.with_changes(lfd_algorithms="auto"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
