"""Memory peak of the lazy R1 step: the training loss's Dreg (one discriminator at a time) next to the joint
penalty of both discriminators in one double backward, each in a fresh process.

On CUDA the peak is ``torch.cuda.max_memory_allocated`` over the step (weights included); on the CPU it is how far
the step raises the process's peak RSS (large tensors are mmapped, so this follows the live tensors closely).

    python bench/r1_memory.py                      # CUDA: paper D pair, 1024², batch 4, fp16 top blocks
    python bench/r1_memory.py --device cpu --res 256
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("split", "joint")


def build(device: str, res: int, batch: int):
    from get3d.nn import ModelConfig
    from get3d.schema import parse_section
    from get3d.train.config import TrainConfig
    from get3d.train.losses import GET3DLoss, RealInputs
    from get3d.train.models import build_networks

    model = {"img_resolution": res, "tet_res": 8}
    if device == "cpu":
        model.update(raster_backend="torch", num_fp16_res=0, channels_last=False)
    cm = parse_section(ModelConfig, model, "model")
    torch.manual_seed(0)
    nets = build_networks(cm, torch.device(device), "torch" if device == "cpu" else "nvdiffrast")
    ct = parse_section(TrainConfig, {"device": device, "r1_gamma": 40.0}, "train")
    g = torch.Generator().manual_seed(1)
    cam, _ = nets.sample_cameras(batch, g)
    real = RealInputs((torch.rand(batch, 3, res, res, generator=g) * 2 - 1).to(device),
                      (torch.rand(batch, 1, res, res, generator=g) > 0.5).float().to(device), cam.to(device))
    return nets, GET3DLoss(nets, ct, torch.device(device)), real, ct


def joint_r1(nets, real, gamma: float, norm: float, gain: float) -> None:
    """Both discriminators' R1 in one graph: the penalty as the training loss defined it before the split."""
    from get3d.nn.layers import double_backward_kernels
    with double_backward_kernels():
        x = real.image.detach().requires_grad_(True)
        m = real.mask.detach().requires_grad_(True)
        lr, lm = nets.D_rgb(x, real.camera).float(), nets.D_mask(m, real.camera).float()
        gx, gm = torch.autograd.grad([lr.sum(), lm.sum()], [x, m], create_graph=True)
        pen = gx.square().sum(dim=[1, 2, 3]) + gm.square().sum(dim=[1, 2, 3])
        total = (pen.sum() * (gamma / 2) + 0.0 * (lr.sum() + lm.sum())) / norm
        (total * gain).backward()


def measure(variant: str, device: str, res: int, batch: int) -> dict:
    nets, loss, real, ct = build(device, res, batch)
    norm, gain = float(batch), float(ct.r1_interval)

    def step():
        if variant == "split":
            loss.accumulate("Dreg", real, None, norm=norm, gain=gain)
        else:
            joint_r1(nets, real, ct.r1_gamma, norm, gain)

    t0 = time.perf_counter()
    if device == "cuda":
        step()                      # cuDNN autotuning and kernel builds outside the measured step
        for D in (nets.D_rgb, nets.D_mask):
            D.zero_grad(set_to_none=False)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20
    return {"variant": variant, "peak_gib": peak, "sec": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--res", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--one", choices=VARIANTS, default=None, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.one:
        print(json.dumps(measure(args.one, device, args.res, args.batch)))
        return 0
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")   # CPU: large tensors mmapped, freed at once
    rows = []
    for v in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--one", v, "--device", device, "--res", str(args.res),
                              "--batch", str(args.batch)], capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            print(out.stdout[-2000:] + out.stderr[-2000:])
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    what = "peak allocated GiB" if device == "cuda" else "peak RSS rise GiB"
    print(f"R1 step, D pair at {args.res}², batch {args.batch}, {device}"
          + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else ""))
    print(f"{'variant':<8} {what:>20} {'ratio':>6} {'s':>6}")
    for r in rows:
        print(f"{r['variant']:<8} {r['peak_gib']:>20.2f} {r['peak_gib'] / rows[1]['peak_gib']:>6.2f} {r['sec']:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
