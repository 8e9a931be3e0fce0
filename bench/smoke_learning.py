"""Does the smoke run learn? Metrics of the untrained generator next to every snapshot of a run, in one table.

    python bench/smoke_learning.py                      # the DVC smoke outputs under data/
    python bench/smoke_learning.py --run-dir data/train --max-snapshots 3

For each generator (kimg 0 = the run's own initialisation, rebuilt from its config and seed; then each
network-*.pt) it runs the evaluate stage's metrics (FID/KID on renders, CD-based COV/MMD) and compares
silhouettes with the test views: mean mask coverage, the 1-D Wasserstein distance between the coverage
distributions, and the L1 distance between the mean silhouettes (all views at the dataset's prior).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from get3d.config import load_params
from get3d.evaluate.generate import load_generator
from get3d.evaluate.stage import evaluate
from get3d.schema import to_dict
from get3d.train import checkpoint as ckpt


def untrained_snapshot(run_dir: Path, out: Path) -> Path:
    """The generator as training initialised it: same config, same seed path (G_ema starts as G)."""
    from get3d.nn.config import ModelConfig, build_generator
    from get3d.schema import parse_section
    from get3d.train.loop import _seed_everything, derive_seed  # the loop's own seeding

    cfg = json.loads((run_dir / "config.json").read_text())
    mcfg = parse_section(ModelConfig, cfg["model"], "model")
    _seed_everything(derive_seed(cfg["train"]["seed"], 0xB1D))
    G = build_generator(mcfg)
    return ckpt.save_checkpoint(out, "network", 0, {"G_ema": G.state_dict(), "model_config": to_dict(mcfg),
                                                     "provenance": {"note": "untrained initialisation"}})


def silhouettes(snapshot: Path, dataset: Path, n: int, seed: int) -> np.ndarray:
    """``n`` generated masks [n, H, W] in [0, 1] from prior cameras (the dataset's elevation range)."""
    from get3d.train.models import camera_prior

    lg = load_generator(snapshot, "cpu", "torch")
    prior = camera_prior(lg.model_config, dataset)
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for s in range(0, n, 8):
            b = min(8, n - s)
            z = torch.randn(2, b, lg.z_dim, generator=g)
            az, polar = prior.sample(b, generator=g)
            out.append(lg.G(z[0], z[1], (az, polar), noise_mode="const")["mask"][:, 0].numpy())
    return np.concatenate(out)


def real_masks(dataset: Path, res: int, split: str = "test") -> np.ndarray:
    from get3d.dataset.dataset import RenderedViews

    ds = RenderedViews(dataset, resolution=res, split=split)
    return np.stack([ds[i]["mask"][0].numpy() for i in range(len(ds))])


def sil_stats(fake: np.ndarray, real: np.ndarray) -> dict:
    fc, rc = fake.reshape(len(fake), -1).mean(1), real.reshape(len(real), -1).mean(1)
    q = np.linspace(0, 1, 101)
    return {"coverage": float(fc.mean()), "coverage_w1": float(np.abs(np.quantile(fc, q) - np.quantile(rc, q)).mean()),
            "mean_sil_l1": float(np.abs(fake.mean(0) - real.mean(0)).mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--run-dir", type=Path, default=Path("data/train"))
    ap.add_argument("--dataset", type=Path, default=Path("data/dataset/dataset.h5"))
    ap.add_argument("--manifest", type=Path, default=Path("data/assets/manifest.json"))
    ap.add_argument("--reference", type=Path, default=Path("data/reference"))
    ap.add_argument("--num-masks", type=int, default=64)
    ap.add_argument("--max-snapshots", type=int, default=4)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    cfg = replace(load_params(args.params, only=["evaluate"]).evaluate, device="cpu", backend="torch",
                  num_preview=0, num_detail_shapes=0)
    snaps = sorted(ckpt.list_snapshots(args.run_dir / "checkpoints", "network"))
    if len(snaps) > args.max_snapshots:  # spread over the run, always keeping the last one
        idx = np.unique(np.linspace(0, len(snaps) - 1, args.max_snapshots).round().astype(int))
        snaps = [snaps[i] for i in idx]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        entries = [(0, untrained_snapshot(args.run_dir, Path(tmp) / "network-untrained.pt"))] + snaps
        real = None
        for nimg, path in entries:
            res = evaluate(path, args.dataset, args.manifest, args.reference, Path(tmp) / f"eval{nimg}", cfg)
            fake = silhouettes(path, args.dataset, args.num_masks, cfg.seed)
            real = real if real is not None else real_masks(args.dataset, fake.shape[-1])
            m = res["metrics"]
            rows.append({"kimg": nimg / 1000, **{k: m.get(k) for k in ("fid", "kid", "cov_cd", "mmd_cd")},
                         **sil_stats(fake, real), "real_coverage": float(real.mean())})
            print(f"evaluated kimg {nimg / 1000:.3f}", flush=True)
    print(f"\n{'kimg':>6} {'FID':>8} {'KID':>8} {'COV-CD%':>8} {'MMD-CD':>8} {'coverage':>9} {'cov W1':>8} "
          f"{'meanSil L1':>10}   (real coverage {rows[0]['real_coverage']:.3f})")
    for r in rows:
        print(f"{r['kimg']:>6.2f} {r['fid']:>8.2f} {r['kid']:>8.4f} {r['cov_cd']:>8.1f} {r['mmd_cd']:>8.2f} "
              f"{r['coverage']:>9.3f} {r['coverage_w1']:>8.3f} {r['mean_sil_l1']:>10.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
