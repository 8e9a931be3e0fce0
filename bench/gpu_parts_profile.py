"""Where the GPU time goes, part by part, at the paper recipe: top CUDA kernels of each part (torch.profiler)
next to its wall time per iteration.

Parts: ``D`` (RGB + mask discriminators, forward + backward with parameter gradients, batch 4, 1024²),
``Gtrain`` (generator forward + backward of an image loss, training mode, batch 4), ``Ggen`` (generator
inference as in fid50k: eval mode, no grad, batch 32), each optionally in several variants of the
``perf`` choices (``--variant NAME=key=value``, several joined by ``+``) timed side by side.

    python3 bench/gpu_parts_profile.py --parts D,Ggen --out $OUT/parts
    python3 bench/gpu_parts_profile.py --parts Ggen --variant fused=fused_modconv=always \\
        --variant shared=fused_modconv=never
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf_variants import parse_variant, variant

from get3d import cameras
from get3d.nn import ModelConfig
from get3d.nn.config import build_discriminators, build_generator


def make_parts(dev, cfg: ModelConfig):
    torch.manual_seed(0)
    G = build_generator(cfg, device=dev).to(dev)
    D = build_discriminators(cfg, device=dev).to(dev)
    r = cfg.img_resolution
    prior = cameras.CameraPrior()
    g = torch.Generator().manual_seed(0)

    def inputs(b):
        z = torch.randn(2, b, G.z_dim, generator=g).to(dev)
        az, po = prior.sample(b, generator=g)
        return z[0], z[1], (az.to(dev), po.to(dev))

    img = torch.randn(4, 4, r, r, device=dev)
    cam = torch.rand(4, 2, device=dev)

    def part_d():
        D.zero_grad(set_to_none=False)
        lr, lm = D(img, cam)
        (lr.sum() + lm.sum()).backward()

    def part_gtrain():
        G.train().requires_grad_(True)
        G.zero_grad(set_to_none=False)
        out = G(*inputs(4), noise_mode="random")
        out["img"].square().mean().backward()

    def part_ggen():
        G.eval().requires_grad_(False)
        with torch.no_grad():
            G(*inputs(32), noise_mode="random")
        G.requires_grad_(True)

    return {"D": (part_d, 4), "Gtrain": (part_gtrain, 4), "Ggen": (part_ggen, 32)}, G



def timed(fn, iters: int) -> float:
    ts = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def profile(fn, iters: int, out: Path | None, label: str, shapes: bool = False) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof
    with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=shapes) as p:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    evs = [e for e in p.events() if e.device_type.name == "CUDA"]
    busy = sum(e.device_time for e in evs) / 1e3 / iters
    text = (f"## {label}: GPU kernel time {busy:.1f} ms/iter, {len(evs) / iters:.0f} kernels/iter\n"
            + p.key_averages().table(sort_by="self_cuda_time_total", row_limit=22, max_name_column_width=90))
    if shapes:  # which layers the top operators are: the same table per input shape
        text += "\n" + p.key_averages(group_by_input_shape=True).table(
            sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=40, max_shapes_column_width=110)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{label}.txt").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="D,Gtrain,Ggen")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=key=value", help="perf choices (params.yaml perf keys)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--shapes", action="store_true", help="also break the profile down by input shape")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = torch.device("cuda")
    parts, _ = make_parts(dev, ModelConfig(raster_backend="nvdiffrast"))
    variants = [parse_variant("default=")] + [parse_variant(v) for v in args.variant]
    rows = []
    for name in args.parts.split(","):
        fn, batch = parts[name]
        for vname, spec in variants:
            with variant(spec):
                for _ in range(2):
                    fn()
                ms = timed(fn, args.iters)
                rows.append((name, vname, ms, batch * 1000 / ms))
                print(f"{name:<7} {vname:<12} {ms:9.1f} ms/iter  {batch * 1000 / ms:8.1f} img/s", flush=True)
                if not args.no_profile and vname == "default":
                    print(profile(fn, 3, args.out, name, args.shapes), flush=True)
    print(f"\n{'part':<7} {'variant':<12} {'ms/iter':>9} {'img/s':>8} {'ratio':>6}")
    base = {}
    for name, vname, ms, ips in rows:
        base.setdefault(name, ms)
        print(f"{name:<7} {vname:<12} {ms:9.1f} {ips:8.1f} {ms / base[name]:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
