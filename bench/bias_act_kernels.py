"""The Triton bias_act kernels at the paper recipe's largest shapes (CUDA): forward and backward (with the bias
gradient) for kernel settings side by side.  Times are CUDA-event medians in microseconds, with the effective
memory bandwidth (bytes the pass must move / time); ``ratio`` is the variant over the first variant's time.

    python3 bench/bias_act_kernels.py    # defaults vs the bias gradient as a separate reduction
    python3 bench/bias_act_kernels.py --variant new= --variant modulo=get3d.nn.ops.bias_act_triton.MASK_INDEX=false
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from switches import apply_switches
from timing import median_ms

from get3d.nn.ops import bias_act_triton as K

# (label, shape, layout, dtype): the discriminators' fp16 NHWC blocks and a float32 NCHW layer
SHAPES = [("D 1024² x32", (4, 32, 1024, 1024), "nhwc", torch.float16),
          ("D 512² x64", (4, 64, 512, 512), "nhwc", torch.float16),
          ("D 256² x128", (4, 128, 256, 256), "nhwc", torch.float16),
          ("fp32 256² x64", (4, 64, 256, 256), "nchw", torch.float32)]


DEFAULT_VARIANTS = ["defaults=", "db-separate=get3d.nn.ops.bias_act_triton.FUSE_BIAS_GRAD=false"]


def bias_act_cases(reps: int, variants: list[str]):
    """(shape label, pass, variant label, µs, GB/s) for every shape × pass × variant."""
    for label, shape, layout, dtype in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(shape, device="cuda", generator=g).to(dtype)
        if layout == "nhwc":
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        b = torch.randn(shape[1], device="cuda", requires_grad=True)
        dy = torch.randn_like(x)
        nbytes = x.numel() * x.element_size()
        for spec in variants:
            name, _, switches = spec.partition("=")
            undo = apply_switches(switches)
            try:
                def forward(x=x, b=b):
                    return K.bias_act(x, b, 1, "lrelu", 2 ** 0.5, 256.0)
                with torch.no_grad():
                    us = 1e3 * median_ms(forward, reps)
                yield label, "forward", name, us, 2 * nbytes / us / 1e3  # read x, write y
                y = forward()
                us = 1e3 * median_ms(lambda y=y, x=x, b=b, dy=dy: torch.autograd.grad(y, [x, b], dy,
                                                                                    retain_graph=True), reps)
                yield label, "backward", name, us, 3 * nbytes / us / 1e3  # read dy and y, write dx
            finally:
                for u in reversed(undo):
                    u()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--variant", action="append", default=None, metavar="LABEL=SWITCHES",
                    help="kernel settings (bench/switches.py, joined by +); the first is the baseline")
    args = ap.parse_args(argv)
    variants = args.variant or DEFAULT_VARIANTS
    print(f"bias_act kernels on {torch.cuda.get_device_name()}, CUDA-event medians of {args.reps}")
    print(f"{'shape':<16} {'pass':<9} {'variant':<14} {'us':>9} {'GB/s':>7} {'ratio':>6}")
    base = {}
    for label, kind, name, us, gbs in bias_act_cases(args.reps, variants):
        ref = base.setdefault((label, kind), us)
        print(f"{label:<16} {kind:<9} {name:<14} {us:9.1f} {gbs:7.0f} {us / ref:6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
