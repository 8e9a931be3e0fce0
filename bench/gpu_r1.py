"""R1 (double backward) check + timing of the discriminator pair at the paper recipe, fast vs reference conv.

    python bench/gpu_r1.py [--out DIR]

1. GPU check at 64² (fp32 and fp16/channels_last top blocks): R1 penalty and D parameter gradients with
   get3d.nn.ops.conv2d vs PyTorch's own conv autograd (relative L2 error per tensor, worst printed).
2. Paper D pair (1024², batch 4, fp16 top 4 blocks, channels_last): D fwd+bwd and R1 step times (median).
3. 256² diagnosis: one R1 step per kernel combination (conv ref/fast × FIR ref/fast) and its top kernels.
4. torch.profiler of one fast R1 step at 1024²: top CUDA kernels.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import event_times

from get3d.nn import ModelConfig, build_discriminators
from get3d.nn import layers as L


def r1_step(D, img, c):
    x = img.detach().requires_grad_(True)
    lr, lm = D(x, c) if isinstance(D, torch.nn.ModuleDict) or hasattr(D, "rgb") else (D(x, c), None)
    tot = lr.sum() + (lm.sum() if lm is not None else 0)
    (g,) = torch.autograd.grad(tot, x, create_graph=True)
    pen = g.square().sum()
    (pen + 0 * tot).backward()
    return pen.detach()


def d_step(D, img, c):
    lr, lm = D(img, c)
    (torch.nn.functional.softplus(lr).mean() + torch.nn.functional.softplus(lm).mean()).backward()


def timeit(fn, warmup=2, iters=5):
    ts = event_times(fn, iters, warmup)
    return statistics.median(ts), min(ts)


def set_kernels(conv, blur):
    L.register_kernel("conv2d", L.DOUBLE_BACKWARD_KERNELS["conv2d"] if conv == "fast" else None)
    L.register_kernel("upfirdn2d", L.DOUBLE_BACKWARD_KERNELS["upfirdn2d"] if blur == "fast" else None)


def grads_of(D, img, c, force_fp32=False):
    D.zero_grad(set_to_none=True)
    x = img.detach().requires_grad_(True)
    lr, lm = D(x, c, force_fp32=force_fp32)
    (g,) = torch.autograd.grad(lr.sum() + lm.sum(), x, create_graph=True)
    pen = g.square().sum()
    pen.backward()
    return pen.detach(), {n: p.grad.detach().clone() for n, p in D.named_parameters() if p.grad is not None}


def check(dev, num_fp16_res):
    torch.manual_seed(1)
    cfg = ModelConfig().with_overrides(img_resolution=64, d_channels=[64, 128, 256, 512, 512],
                                       num_fp16_res=num_fp16_res)
    D = build_discriminators(cfg, device=dev)
    img = torch.randn(4, 4, 64, 64, device=dev)
    c = torch.rand(4, 2, device=dev)
    set_kernels("ref", "ref")
    p32, g32 = grads_of(D, img, c, force_fp32=True)  # fp32 truth (reference kernels)
    pr, gr = grads_of(D, img, c)
    set_kernels("fast", "fast")
    pf, gf = grads_of(D, img, c)

    def worst(a, b):
        return max(((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-30)).item() for n in b)
    finite = all(torch.isfinite(g).all().item() for g in gf.values())
    print(f"check 64² fp16_res={num_fp16_res}: penalty fast {pf.item():.6e} ref {pr.item():.6e} fp32 {p32.item():.6e}; "
          f"worst param-grad rel L2: fast-vs-ref {worst(gf, gr):.2e}, fast-vs-fp32 {worst(gf, g32):.2e}, "
          f"ref-vs-fp32 {worst(gr, g32):.2e}; {len(gr)} grads, finite={finite}", flush=True)
    return worst(gf, gr)


def diag256(dev, out, combos):
    """R1 at 256² with each kernel combination: time of one step after one warm-up, and the top kernels."""
    from torch.profiler import ProfilerActivity, profile
    torch.manual_seed(2)
    cfg = ModelConfig().with_overrides(img_resolution=256, d_channels=[128, 256, 512, 512, 512, 512, 512])
    D = build_discriminators(cfg, device=dev)
    img = torch.randn(4, 4, 256, 256, device=dev)
    c = torch.rand(4, 2, device=dev)
    text = []
    for conv, blur in combos:
        set_kernels(conv, blur)
        r1_step(D, img, c)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            t = timeit(lambda: (r1_step(D, img, c), D.zero_grad(set_to_none=True)), warmup=0, iters=1)[0]
        ka = sorted((e for e in prof.key_averages() if e.device_time_total > 0),
                    key=lambda e: -e.device_time_total)[:3]
        line = f"diag 256² R1 conv={conv:<4} blur={blur:<4} {t:9.1f} ms; top: " + "; ".join(
            f"{e.key[:70]} {e.device_time_total / 1e3:.1f} ms x{e.count}" for e in ka)
        print(line, flush=True)
        text.append(line)
    set_kernels("fast", "fast")
    if out:
        (out / "r1_diag256.txt").write_text("\n".join(text) + "\n")


def top_kernels(prof, n=15):
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=n, max_name_column_width=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--combos", default="ref:ref,fast:ref,ref:fast,fast:fast",
                    help="conv:fir kernel combinations for the 256² diagnosis (ref|fast each)")
    args = ap.parse_args()
    combos = [tuple(c.split(":")) for c in args.combos.split(",") if c]
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    # the check runs without TF32 so that it compares the conv formulations, not the rounding mode
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    w32 = w16 = float("nan")
    if not args.skip_check:
        w32 = check(dev, 0)
        w16 = check(dev, 4)
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
    diag256(dev, args.out, combos)

    torch.manual_seed(0)
    cfg = ModelConfig()
    D = build_discriminators(cfg, device=dev).train()
    img = torch.randn(4, 4, cfg.img_resolution, cfg.img_resolution, device=dev)
    c = torch.rand(4, 2, device=dev)
    rows = []
    for name in ("fast", "ref"):
        set_kernels(name, "fast")
        torch.cuda.reset_peak_memory_stats()
        t = timeit(lambda: (d_step(D, img, c), D.zero_grad(set_to_none=True)))
        rows.append((name, "D fwd+bwd (rgb+mask)", *t, torch.cuda.max_memory_allocated() / 2**30))
        print(rows[-1], flush=True)
    for conv in ("ref", "fast"):  # FIR taps in both; the reference FIR is hopeless here (see the diagnosis)
        set_kernels(conv, "fast")
        torch.cuda.reset_peak_memory_stats()
        t1 = timeit(lambda: (r1_step(D, img, c), D.zero_grad(set_to_none=True)), warmup=1, iters=1)[0]
        print(f"first timed R1 conv={conv}: {t1:.1f} ms", flush=True)
        if t1 < 3000:
            t = timeit(lambda: (r1_step(D, img, c), D.zero_grad(set_to_none=True)), warmup=0, iters=5)
            rows.append((f"{conv}+taps", "D R1 (rgb+mask)", *t, torch.cuda.max_memory_allocated() / 2**30))
            print(rows[-1], flush=True)
    set_kernels("fast", "fast")
    if True:  # profile of one R1 step as the training loop runs it
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            r1_step(D, img, c)
            D.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
        tab = top_kernels(prof)
        print("\nfast R1 step, top ops by CUDA time:\n" + tab, flush=True)
        if args.out:
            (args.out / "r1_fast_profile.txt").write_text(tab)
    set_kernels("ref", "ref")
    print(f"\n{torch.cuda.get_device_name()} torch {torch.__version__}; check worst rel err fp32 {w32:.2e} "
          f"fp16 {w16:.2e}")
    print(f"{'conv':<6} {'pass':<22} {'median ms':>10} {'min ms':>9} {'peak GiB':>9}")
    for r in rows:
        print(f"{r[0]:<6} {r[1]:<22} {r[2]:>10.1f} {r[3]:>9.1f} {r[4]:>9.2f}")


if __name__ == "__main__":
    main()
