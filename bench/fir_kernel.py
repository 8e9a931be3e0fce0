"""The discriminators' FIR blur (``[1, 3, 3, 1]``) as the Triton kernel vs the reference, at the paper's D shapes.

For each fp16 channels-last D block input (batch 8: Dmain's merged pass) and each use (``blur``: padding 2 before a
3×3 stride-2 conv; ``skip``: downsampling by 2), the forward of the two kernels of ``get3d/nn/ops/fir_triton.py`` at
each tile × warps (``flat``: a run of output pixels, every tap loaded; ``rows``: output rows × pixels, each input
row filtered once: the sweep behind ``ROWS_PER_PROGRAM``, ``ROW_PIXELS`` and the warp rule), then forward and
forward+backward as dispatched and of the reference (depthwise convolutions); for the blur, also a conv's
bias/activation followed by the blur as two kernels against the fused pass (``perf.fused_blur_epilogue``).
Median CUDA-event times; GB/s counts one read of the input and one write of the output.

    python3 bench/fir_kernel.py            # CUDA only
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import median_ms

from get3d.nn.layers import setup_filter, upfirdn2d_ref
from get3d.nn.ops import bias_act_triton, fir_triton


def _rows(x: torch.Tensor, f: torch.Tensor, down: int, pad: tuple[int, int, int, int], reps: int):
    """(variant, ms) of one input and use."""
    y = fir_triton.upfirdn2d(x, f, 1, down, pad)
    ch = x.shape[1]
    bc = min(triton.next_power_of_2(ch), 64)
    n_pix = y.shape[0] * y.shape[2] * y.shape[3]
    oh, ow = y.shape[2], y.shape[3]
    common = (*x.stride(), *y.stride(), pad[0], pad[2], 1.0)
    rows = []
    for bp, warps in itertools.product((32, 64), (4, 8)):  # one output pixel × channels per row of the tile

        def launch(bp=bp, w=warps):
            fir_triton._fir_kernel[(triton.cdiv(n_pix, bp), triton.cdiv(ch, bc))](
                x, f, y, n_pix, ch, oh, ow, x.shape[2], x.shape[3], *common, TAPS=4, FLIP=True, UP=1, DOWN=down,
                BP=bp, BC=bc, num_warps=w)
        rows.append((f"flat {bp} px, {warps} w", median_ms(launch, reps)))
    for (th, tw), warps in itertools.product(((2, 32), (4, 32), (8, 32), (4, 16), (8, 16), (4, 64)), (4, 8)):

        def launch(th=th, tw=tw, w=warps):
            nty, ntx = triton.cdiv(oh, th), triton.cdiv(ow, tw)
            fir_triton._fir_rows_kernel[(y.shape[0] * nty * ntx, triton.cdiv(ch, bc))](
                x, f, y, ch, oh, ow, x.shape[2], x.shape[3], nty, ntx, *common, TAPS=4, FLIP=True, DOWN=down,
                TH=th, TW=tw, BC=bc, **fir_triton._NO_ACT, B=x, HP=x, DB=x, num_warps=w)
        rows.append((f"rows {th}×{tw}, {warps} w", median_ms(launch, reps)))
    rows.append(("kernel fwd", median_ms(lambda: fir_triton.upfirdn2d(x, f, 1, down, pad), reps)))
    rows.append(("reference fwd", median_ms(lambda: upfirdn2d_ref(x, f, down=down, padding=pad), reps)))
    xg = x.detach().requires_grad_(True)
    dy = torch.randn_like(y)
    rows.append(("kernel fwd+bwd", median_ms(
        lambda: torch.autograd.grad(fir_triton.upfirdn2d(xg, f, 1, down, pad), xg, dy), reps)))
    rows.append(("reference fwd+bwd", median_ms(
        lambda: torch.autograd.grad(upfirdn2d_ref(xg, f, down=down, padding=pad), xg, dy), reps)))
    if down == 1:  # the blur after a conv's bias/activation: the two kernels vs one (perf.fused_blur_epilogue)
        b = torch.randn(ch, device=x.device, requires_grad=True)
        act = ("lrelu", 2 ** 0.5, 256.0)

        def two():
            return fir_triton.upfirdn2d(bias_act_triton.bias_act(xg, b, 1, *act), f, 1, 1, pad)

        def one():
            return fir_triton.bias_act_blur(xg, b, f, pad, *act)
        for name, fn in (("bias_act + blur", two), ("fused", one)):
            with torch.no_grad():
                rows.append((f"{name} fwd", median_ms(fn, reps)))
            rows.append((f"{name} fwd+bwd", median_ms(lambda fn=fn: torch.autograd.grad(fn(), [xg, b], dy), reps)))
    return rows, (x.numel() + y.numel()) * x.element_size() / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 1
    f = setup_filter([1, 3, 3, 1]).cuda()
    print(f"FIR blur on {torch.cuda.get_device_name()}, batch {args.batch}, fp16 channels-last, median of {args.reps}")
    print(f"{'input':<14} {'use':<5} {'variant':<24} {'ms':>7} {'GB/s':>7}")
    for res, ch in ((1024, 32), (512, 64), (256, 128), (128, 256)):
        x = torch.randn(args.batch, ch, res, res, device="cuda").half().contiguous(memory_format=torch.channels_last)
        for use, down, pad in (("blur", 1, (2, 2, 2, 2)), ("skip", 2, (1, 1, 1, 1))):
            rows, gb = _rows(x, f, down, pad, args.reps)
            for name, ms in rows:
                rate = f"{gb / ms * 1e3:7.0f}" if "bwd" not in name else f"{'':>7}"
                print(f"{f'{res}² × {ch}':<14} {use:<5} {name:<24} {ms:7.3f} {rate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
