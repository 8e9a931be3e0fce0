"""Where the wall time of generating images goes (the fid50k generator pass): each stage of
``Sampler.images_ori`` timed with a device synchronisation around it, per batch size.

    python3 bench/gpu_gen_stages.py --batch 32,64 --iters 4

Stages: mapping, tri-plane synthesis, geometry query (tri-plane sampling + SDF/deformation decoders at every grid
vertex), surface extraction (marching tets), rasterisation + antialiasing (render minus texture), texture query,
and the uint8 copy to the host.  The synchronisations cost a little; "total (no sync)" is the plain pass.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from get3d import cameras
from get3d.evaluate.generate import LoadedGenerator, Sampler
from get3d.nn import surface
from get3d.nn.config import ModelConfig, build_generator


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="32,64")
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--res", type=int, default=1024)
    ap.add_argument("--profile", action="store_true", help="also torch.profiler of one batch of the first size")
    args = ap.parse_args(argv)
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    cfg = ModelConfig(img_resolution=args.res, raster_backend="nvdiffrast")
    G = build_generator(cfg, device=dev).to(dev).eval().requires_grad_(False)
    gen = LoadedGenerator(G, cfg, {}, dev)
    acc: dict[str, float] = collections.defaultdict(float)
    enabled = [False]

    def timed(name, fn):
        def wrapper(*a, **k):
            if not enabled[0]:
                with torch.profiler.record_function(f"stage/{name}"):
                    return fn(*a, **k)
            torch.cuda.synchronize()
            t = time.perf_counter()
            r = fn(*a, **k)
            torch.cuda.synchronize()
            acc[name] += time.perf_counter() - t
            return r
        return wrapper

    G.mapping = timed("mapping", G.mapping)
    G.backbone.synthesize = timed("synthesis", G.backbone.synthesize)
    G.backbone.query_geometry = timed("geometry query", G.backbone.query_geometry)
    G.backbone.query_texture = timed("texture query", G.backbone.query_texture)
    surface.extract_surface = timed("surface extraction", surface.extract_surface)
    surface.render = timed("render (incl. texture)", surface.render)

    print(f"generator stages on {torch.cuda.get_device_name(0)}, {args.res}², "
          f"ms per batch (median-free mean of {args.iters})")
    for b in (int(x) for x in args.batch.split(",")):
        s = Sampler(gen, cameras.CameraPrior(), seed=0, batch_size=b, resolution=args.res)
        for _ in s.images_ori(b):  # warm-up
            pass
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in s.images_ori(b * args.iters):
            pass
        torch.cuda.synchronize()
        plain = (time.perf_counter() - t) / args.iters * 1e3
        acc.clear()
        enabled[0] = True
        t = time.perf_counter()
        for _ in s.images_ori(b * args.iters):
            pass
        synced = (time.perf_counter() - t) / args.iters * 1e3
        enabled[0] = False
        stages = {k: v / args.iters * 1e3 for k, v in acc.items()}
        stages["rasterise + antialias"] = stages.pop("render (incl. texture)") - stages.get("texture query", 0.0)
        stages["other (latents, cameras, uint8 to host)"] = synced - sum(stages.values())
        print(f"\nbatch {b}: total (no sync) {plain:.1f} ms = {b * 1e3 / plain:.1f} img/s; with syncs {synced:.1f} ms; "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
            print(f"  {k:<42} {v:8.1f} ms  {v / synced:6.1%}")
    if args.profile:
        profile_one_batch(Sampler(gen, cameras.CameraPrior(), seed=0, batch_size=int(args.batch.split(",")[0]),
                                  resolution=args.res))
    return 0


def profile_one_batch(s: Sampler) -> None:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in s.images_ori(s.batch_size):
            pass
        torch.cuda.synchronize()
    ka = p.key_averages()
    print("\nprofile of one batch: stages (CPU wall of the range, CUDA time of its kernels)")
    for e in ka:
        if e.key.startswith("stage/"):
            print(f"  {e.key:<40} cpu {e.cpu_time_total / 1e3:8.1f} ms   cuda {e.device_time_total / 1e3:8.1f} ms")
    print("runtime calls:")
    for e in ka:
        if e.key.startswith("cuda") and e.count > 0:
            print(f"  {e.key:<40} n={e.count:<6} cpu {e.cpu_time_total / 1e3:8.1f} ms")
    print(ka.table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=80))


if __name__ == "__main__":
    sys.exit(main())
