"""The Triton bias_act kernels at the paper recipe's largest shapes (CUDA): forward and backward (with the bias
gradient).  Times are CUDA-event medians in microseconds, with the effective memory bandwidth (bytes the pass
must move / time).

    python3 bench/bias_act_kernels.py
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import median_ms

from get3d.nn.ops import bias_act_triton as K

# (label, shape, layout, dtype): the discriminators' fp16 NHWC blocks and a float32 NCHW layer
SHAPES = [("D 1024² x32", (4, 32, 1024, 1024), "nhwc", torch.float16),
          ("D 512² x64", (4, 64, 512, 512), "nhwc", torch.float16),
          ("D 256² x128", (4, 128, 256, 256), "nhwc", torch.float16),
          ("fp32 256² x64", (4, 64, 256, 256), "nchw", torch.float32)]


def bias_act_cases(reps: int):
    """(shape label, pass, µs, GB/s) for every shape × pass."""
    for label, shape, layout, dtype in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(shape, device="cuda", generator=g).to(dtype)
        if layout == "nhwc":
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        b = torch.randn(shape[1], device="cuda", requires_grad=True)
        dy = torch.randn_like(x)
        nbytes = x.numel() * x.element_size()

        def forward(x=x, b=b):
            return K.bias_act(x, b, 1, "lrelu", 2 ** 0.5, 256.0)
        with torch.no_grad():
            us = 1e3 * median_ms(forward, reps)
        yield label, "forward", us, 2 * nbytes / us / 1e3  # read x, write y
        y = forward()
        us = 1e3 * median_ms(lambda y=y, x=x, b=b, dy=dy: torch.autograd.grad(y, [x, b], dy, retain_graph=True),
                             reps)
        yield label, "backward", us, 3 * nbytes / us / 1e3  # read dy and y, write dx


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bias_act_kernels: needs a CUDA device", file=sys.stderr)
        return 2
    print(f"bias_act kernels on {torch.cuda.get_device_name()}, CUDA-event medians of {args.reps}")
    print(f"{'shape':<16} {'pass':<9} {'us':>9} {'GB/s':>7}")
    for label, kind, us, gbs in bias_act_cases(args.reps):
        print(f"{label:<16} {kind:<9} {us:9.1f} {gbs:7.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
