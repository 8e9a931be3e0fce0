"""D (rgb+mask) at the paper recipe: folded blur+stride-2 conv vs the unfolded order — agreement and speed.

    python bench/gpu_fold.py [--json out.json]

Same weights and inputs for both modes (``perf.fold_downsample_conv``): relative L2 error of the
logits and of every parameter gradient (fp16 blocks on), then fwd+bwd time (median of CUDA-event-timed reps).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args(argv)
    from get3d import perf
    from get3d.nn import ModelConfig
    from get3d.nn.config import build_discriminators
    from get3d.schema import parse_section
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    cfg = parse_section(ModelConfig, {}, "model")
    torch.manual_seed(0)
    D = build_discriminators(cfg, device=dev).to(dev)
    r = cfg.img_resolution
    img = torch.randn(4, 4, r, r, device=dev)
    cam = torch.rand(4, 2, device=dev)

    def run():
        D.zero_grad(set_to_none=True)
        lr, lm = D(img, cam)
        (lr.sum() + lm.sum()).backward()
        return torch.cat([lr, lm]).detach().float(), [p.grad.detach().float().clone() for p in D.parameters()]

    res, rows = {}, []
    outs = {}
    for mode in ("never", "low_precision", "never", "low_precision"):
        perf.apply(perf.with_changes(fold_downsample_conv=mode))
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        ts = []
        for _ in range(args.reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(); run(); b.record(); torch.cuda.synchronize()
            ts.append(a.elapsed_time(b))
        outs[mode] = run()
        rows.append((mode, statistics.median(ts), min(ts)))
    ref_l, ref_g = outs["never"]
    new_l, new_g = outs["low_precision"]
    rel = lambda a, b: float((a - b).norm() / b.norm().clamp_min(1e-30))
    res["logit_rel_l2"] = rel(new_l, ref_l)
    gerr = [rel(a, b) for a, b in zip(new_g, ref_g)]
    res["grad_rel_l2_median"] = statistics.median(gerr)
    res["grad_rel_l2_max"] = max(gerr)
    res["timings"] = rows
    res["gpu"] = torch.cuda.get_device_name(0)
    print(f"{res['gpu']}: D rgb+mask fwd+bwd batch 4 {r}², fp16 top blocks")
    for m, med, mn in rows:
        print(f"  fold={m:<14} median {med:8.2f} ms  min {mn:8.2f} ms")
    print(f"  agreement fold vs unfolded (fp16 blocks): logits rel L2 {res['logit_rel_l2']:.2e}, "
          f"param grads rel L2 median {res['grad_rel_l2_median']:.2e} max {res['grad_rel_l2_max']:.2e}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
