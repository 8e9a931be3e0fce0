"""The discriminator's reduced-precision convolutions one layer at a time, in several layouts side by side.

At the paper recipe the two 1024² layers' backward passes are the largest single cost of a discriminator pass
(docs/dev/optimisation-log.md §8: cuDNN's fp16 weight-gradient kernels reach ~14 TFLOP/s there).  This times each fp16 block
layer of one discriminator (``conv0``: 3×3, ``conv1``: 3×3 with FIR downsampling) forward and forward+backward
(input and weight gradients, as in the D step) for each variant: memory format, reduced-precision dtype, and the
downsampling blur folded into the convolution or not (``perf.fold_downsample_conv``).  Median CUDA-event times;
``ratio`` is the variant's forward+backward over the first variant's for the same layer.

    python3 bench/d_conv_layers.py                      # H100: all layers, all variants
    python3 bench/d_conv_layers.py --device cpu --res 32 --dtype float32 --reps 2   # functional check
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import median_ms

from get3d import perf
from get3d.nn.layers import Conv2dLayer


def block_layers(res: int, channel_base: int, channel_max: int, fp16_blocks: int):
    """(name, in, out, resolution, down) of the ``fp16_blocks`` highest-resolution D blocks' convolutions."""
    width = lambda r: min(channel_base // r, channel_max)
    out, r = [], res
    for _ in range(fp16_blocks):
        out += [(f"{r}² conv0 3x3", width(r), width(r), r, 1), (f"{r}² conv1 3x3/2", width(r), width(r // 2), r, 2)]
        r //= 2
    return out


def measure(spec, batch, dtype, channels_last, fold, device, reps):
    _name, cin, cout, r, down = spec
    with perf.using(fold_downsample_conv=fold):
        torch.manual_seed(0)
        layer = Conv2dLayer(cin, cout, 3, activation="lrelu", down=down, conv_clamp=256,
                            channels_last=channels_last, device=device)
        mf = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(batch, cin, r, r, device=device).to(dtype=dtype, memory_format=mf).requires_grad_(True)
        gy = torch.randn_like(layer(x))
        folded = down > 1 and layer.folds_blur(x)
        with torch.no_grad():
            fwd = median_ms(lambda: layer(x), reps, device)

        def step():
            x.grad, layer.weight.grad, layer.bias.grad = None, None, None
            layer(x).backward(gy)
        return fwd, median_ms(step, reps, device), folded


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--res", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=4, help="fp16 blocks (paper: num_fp16_res 4)")
    ap.add_argument("--dtype", action="append", choices=("float16", "bfloat16", "float32"), default=None)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dtypes = [getattr(torch, d) for d in (args.dtype or ["float16", "bfloat16"])]
    variants = list(itertools.product(dtypes, (True, False), ("low_precision", "never")))
    print(f"D convolutions on {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, batch {args.batch}, "
          f"median of {args.reps}")
    print(f"{'layer':<18} {'dtype':<9} {'layout':<6} {'blur':<8} {'fwd ms':>8} {'fwd+bwd ms':>11} {'ratio':>6}")
    for spec in block_layers(args.res, 32768, 512, args.blocks):
        base = None
        for dtype, cl, fold in variants:
            if spec[4] == 1 and fold == "never":
                continue  # nothing to fold without downsampling
            fwd, both, folded = measure(spec, args.batch, dtype, cl, fold, device, args.reps)
            base = base or both
            blur = "-" if spec[4] == 1 else ("folded" if folded else "separate")
            print(f"{spec[0]:<18} {str(dtype).split('.')[1]:<9} {'nhwc' if cl else 'nchw':<6} {blur:<8} "
                  f"{fwd:8.2f} {both:11.2f} {both / base:6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
