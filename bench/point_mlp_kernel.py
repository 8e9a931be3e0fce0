"""The fused point-decoder kernel (get3d/nn/ops/point_mlp_triton.py) per setting, side by side: dot-product
precision × points per program × warps, at the shapes of the fid50k generator pass (batch 32 at 1024²: the
texture decoder over the covered pixels, the SDF decoder over the tet-grid vertices), against the layer-by-layer
PyTorch path.  Error: max |y − y_float64| / max |y_float64| over the output.

    python3 bench/point_mlp_kernel.py                    # CUDA
    TRITON_INTERPRET=1 python3 bench/point_mlp_kernel.py --device cpu --points 300 --batch 2   # logic check only
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_ms

from get3d import perf
from get3d.nn import decoders
from get3d.nn.ops import point_mlp_triton as kern

#: (label, decoder factory, points per sample at fid50k's batch of 1024² images)
CASES = {
    "texture 32-32-16-3": (lambda dev: decoders.TextureDecoder(32, 32, 16, w_dim=512, device=dev), 350_000),
    "sdf 32-32-1": (lambda dev: decoders.ModulatedMLP(32, 32, 1, w_dim=512, device=dev), 200_000),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--points", type=int, default=None, help="points per sample (default: per case)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--precisions", default="ieee,tf32x3,tf32")
    ap.add_argument("--blocks", default="64,128")
    ap.add_argument("--warps", default="4,8")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cpu":  # Triton's interpreter: the dispatch takes CUDA tensors only
        torch.Tensor.is_cuda = property(lambda self: True)
    settings = list(itertools.product(args.precisions.split(","), map(int, args.blocks.split(",")),
                                      map(int, args.warps.split(","))))
    print(f"point decoders on {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}, batch {args.batch}")
    print(f"{'case':<20} {'setting':<22} {'ms':>8} {'ratio':>7} {'rel err':>9}")
    for label, (make, n) in CASES.items():
        n = args.points or n
        torch.manual_seed(0)
        net = make(dev).eval().requires_grad_(False)
        x = torch.randn(args.batch, n, 32, device=dev)
        w = torch.randn(args.batch, 512, device=dev)
        with torch.no_grad():
            ref64 = net.double()(x.double(), w.double()).float()
            net.float()
            with perf.using(point_mlp_fused=False):
                t_torch = median_ms(lambda net=net, x=x, w=w: net(x, w), args.reps, dev)
                scale = ref64.abs().max().item()
                rows = [("torch layers", t_torch, (net(x, w) - ref64).abs().max().item() / scale)]
            for prec, block, warps in settings:
                kern.BLOCK, kern.NUM_WARPS = block, warps
                with perf.using(point_mlp_fused=True, point_mlp_precision=prec):
                    y = net(x, w)
                    err = (y - ref64).abs().max().item() / scale
                    rows.append((f"{prec} b{block} w{warps}", median_ms(lambda net=net, x=x, w=w: net(x, w), args.reps, dev), err))
        base = rows[1][1]
        for name, ms, err in rows:
            print(f"{label:<20} {name:<22} {ms:8.3f} {ms / base:7.3f} {err:9.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
