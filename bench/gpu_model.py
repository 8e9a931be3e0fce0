"""GPU check + timing of the GET3D networks at the paper recipe.

    python bench/gpu_model.py                      # CUDA, 1024², tet 90, batch 4, unified + separate
    python bench/gpu_model.py --device cpu --small # tiny CPU version for debugging
    python bench/gpu_model.py --json out.json

Per generator variant it times (median of --iters after --warmup, CUDA events, synchronized):
  G fwd           mapping + synthesis + iso-surface + render (or the field queries only, if get3d.geometry
                  is not importable yet: mode 'fields', points = the tet-grid vertex count)
  G fwd+bwd       same, plus backward of a loss on img (or on sdf + colour)
  D fwd+bwd       RGB + mask discriminators on a [B,4,R,R] batch (fp16 in the num_fp16_res top blocks)
and the peak memory of each pass (torch.cuda.max_memory_allocated after reset), plus parameter counts.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from get3d.nn import ModelConfig, build_discriminators, build_generator, count_parameters, small_config

PUBLIC_TET90_VERTS = 98_653


def _timer(device):
    if device.type == "cuda":
        def run(fn):
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end), torch.cuda.max_memory_allocated(device) / 2**30
    else:
        def run(fn):
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3, float("nan")
    return run


def _measure(name, fn, timer, warmup, iters):
    for _ in range(warmup):
        fn()
    ts, mems = [], []
    for _ in range(iters):
        t, m = timer(fn)
        ts.append(t)
        mems.append(m)
    row = {"pass": name, "ms_median": statistics.median(ts), "ms_min": min(ts), "peak_gib": max(mems)}
    print(f"  {name:<22} {row['ms_median']:>10.1f} ms  {row['peak_gib']:.2f} GiB", flush=True)
    return row


def geometry_available() -> bool:
    try:
        from get3d.nn import surface
        surface.make_grid("dmtet", 2, 1.0, "cpu")
        return True
    except (ImportError, RuntimeError, ValueError, OSError):
        return False


def bench_variant(cfg: ModelConfig, batch: int, device, warmup: int, iters: int, mode: str) -> dict:
    torch.manual_seed(0)
    G = build_generator(cfg, device=device).train()
    D = build_discriminators(cfg, device=device).train()
    if cfg.channels_last and device.type == "cuda":
        D = D.to(memory_format=torch.channels_last)
    timer = _timer(device)
    z = lambda: torch.randn(batch, cfg.z_dim, device=device)
    cam = (torch.rand(batch, device=device) * 2 * math.pi, torch.full((batch,), 1.2, device=device))
    rows = []

    if mode == "full":
        def g_fwd(backward):
            out = G(z(), z(), cam, style_mixing=True)
            if backward:
                (out["img"].mean() + out["sdf_reg_loss"]).backward()
    else:
        n_pts = PUBLIC_TET90_VERTS if cfg.tet_res == 90 else (cfg.tet_res + 1) ** 3
        pts = torch.rand(batch, n_pts, 3, device=device) - 0.5
        surf = torch.rand(batch, cfg.img_resolution ** 2 // 4, 3, device=device) - 0.5  # ~¼ of pixels covered

        def g_fwd(backward):
            ws_tex, ws_geo = G.mapping(z(), z(), style_mixing=True)
            st = G.backbone.synthesize(ws_geo, ws_tex)
            sdf, dfm = G.backbone.query_geometry(st, pts)
            rgb = G.backbone.query_texture(st, surf)
            if backward:
                (sdf.mean() + dfm.mean() + rgb.mean()).backward()

    def g_only():
        with torch.no_grad():
            g_fwd(False)

    rows.append(_measure("G fwd", g_only, timer, warmup, iters))
    rows.append(_measure("G fwd+bwd", lambda: (g_fwd(True), G.zero_grad(set_to_none=True)), timer, warmup, iters))
    img = torch.randn(batch, 4, cfg.img_resolution, cfg.img_resolution, device=device)
    if cfg.channels_last and device.type == "cuda":
        img = img.contiguous(memory_format=torch.channels_last)
    c = torch.stack(cam, -1)

    def d_step():
        lr, lm = D(img, c)
        (torch.nn.functional.softplus(lr).mean() + torch.nn.functional.softplus(lm).mean()).backward()
        D.zero_grad(set_to_none=True)
    rows.append(_measure("D fwd+bwd (rgb+mask)", d_step, timer, warmup, iters))

    def r1_step():
        x = img.detach().requires_grad_(True)
        lr, lm = D(x, c)
        (g,) = torch.autograd.grad(lr.sum() + lm.sum(), x, create_graph=True)
        g.square().sum().backward()
        D.zero_grad(set_to_none=True)
    rows.append(_measure("D R1 (double bwd)", r1_step, timer, warmup, max(1, iters // 2)))
    params = {"G": count_parameters(G), "G.synthesis": count_parameters(G.backbone.synthesis),
              "G.mapping(each)": count_parameters(G.mapping_tex), "D(rgb+mask)": count_parameters(D)}
    G = D = None  # free the networks before the next variant
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"generator": cfg.generator, "mode": mode, "rows": rows, "params": params}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny configuration (CPU debugging)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--variants", default="unified,separate")
    ap.add_argument("--mode", choices=("auto", "full", "fields"), default="auto")
    ap.add_argument("--backend", choices=("auto", "torch", "nvdiffrast"), default="auto",
                    help="raster backend (auto: nvdiffrast on CUDA when importable)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("bench/gpu_model.py: CUDA requested but not available (use --device cpu --small)")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    mode = args.mode
    if mode == "auto":
        mode = "full" if geometry_available() else "fields"
    results = []
    for g in args.variants.split(","):
        cfg = small_config(generator=g) if args.small else ModelConfig(generator=g)
        cfg = cfg.with_overrides(raster_backend=args.backend)
        res = bench_variant(cfg, args.batch, device, args.warmup, args.iters, mode)
        results.append(res)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\nGET3D networks on {dev_name}, torch {torch.__version__}, batch {args.batch}, mode {mode}, "
          f"raster {args.backend}, "
          f"{'small' if args.small else 'paper'} config")
    print(f"{'generator':<10} {'pass':<22} {'median ms':>10} {'min ms':>9} {'peak GiB':>9}")
    for r in results:
        for row in r["rows"]:
            print(f"{r['generator']:<10} {row['pass']:<22} {row['ms_median']:>10.1f} {row['ms_min']:>9.1f} "
                  f"{row['peak_gib']:>9.2f}")
    print(f"\n{'generator':<10} " + " ".join(f"{k:>16}" for k in results[0]["params"]))
    for r in results:
        print(f"{r['generator']:<10} " + " ".join(f"{v / 1e6:>15.3f}M" for v in r["params"].values()))
    if args.json:
        args.json.write_text(json.dumps({"device": dev_name, "torch": torch.__version__, "batch": args.batch,
                                         "mode": mode, "small": args.small, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
