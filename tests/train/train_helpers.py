"""Shared helpers: a tiny dataset in the render stage's HDF5 layout and tiny real-network configs."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from get3d import cameras
from get3d.dataset.format import DatasetInfo, ObjectViews, write_dataset

REPO = Path(__file__).resolve().parents[2]
RES = 32

#: Tiny, real architecture: unified G, DMTet grid res 8, 32² images, few channels.
MODEL_OVERRIDES = {
    "z_dim": 16, "w_dim": 16, "mapping_layers": 2, "img_resolution": RES, "triplane_resolution": 16,
    "triplane_channels": [16, 16, 8], "plane_channels": 4, "decoder_hidden": 8, "texture_features": 4,
    "tet_res": 8, "d_channels": [8, 16, 16, 16], "d_mapping_layers": 1, "num_fp16_res": 0,
    "channels_last": False, "raster_backend": "torch", "cmap_dim": 16,
}

#: Train knobs for a few-step CPU run (batch 4 in chunks of 2; R1 every 2 steps).
TRAIN_OVERRIDES = {
    "batch_size": 4, "batch_per_gpu": 2, "r1_interval": 2, "r1_gamma": 1.0, "kimg_per_tick": 0.004,
    "snapshot_kimg": 0.004, "image_snapshot_ticks": 0, "num_workers": 0, "device": "cpu", "backend": "torch",
    "deterministic": True, "keep_snapshots": 0, "ema_kimg": 0.01, "lr_g": 0.002, "lr_d": 0.002,
    "dist_timeout_s": 20.0,
}


def write_tiny_dataset(path: Path, n_objects: int = 4, views: int = 4, res: int = RES, seed: int = 0) -> Path:
    """Synthetic multi-view set (coloured discs on black) in the rendered-views format."""
    rng = np.random.default_rng(seed)
    prior = cameras.CameraPrior()
    n = n_objects * views
    az, po = prior.sample_numpy(n, rng)
    yy, xx = np.mgrid[0:res, 0:res] + 0.5
    imgs = np.zeros((n, res, res, 4), np.uint8)
    for i in range(n):
        o = i // views
        r = res * (0.25 + 0.1 * o / max(n_objects - 1, 1))
        cx = res / 2 + 3 * math.cos(az[i])
        inside = (xx - cx) ** 2 + (yy - res / 2) ** 2 < r * r
        col = np.array([60 + 40 * o, 200 - 30 * o, 90 + 20 * (i % views)], np.uint8)
        imgs[i][inside, :3] = col
        imgs[i][inside, 3] = 255
    c2w = cameras.camera_to_world(az, po).astype(np.float32)
    rows = [slice(o * views, (o + 1) * views) for o in range(n_objects)]
    objects = [ObjectViews(id=f"obj{o}", synset="", split="train", rgba=imgs[r], azimuth=az[r], polar=po[r],
                           c2w=c2w[r]) for o, r in enumerate(rows)]
    write_dataset(path, objects, DatasetInfo(
        resolution=res, views_per_object=views, fovy_deg=cameras.FOVY_DEG, radius=cameras.RADIUS,
        source="synthetic", config={"elevation_min_deg": 0.0, "elevation_max_deg": 30.0,
                                    "radius": cameras.RADIUS, "fovy_deg": cameras.FOVY_DEG}))
    return path


def tiny_configs(**train_kw):
    from get3d.nn import ModelConfig
    from get3d.schema import parse_section
    from get3d.train.config import TrainConfig
    cm = parse_section(ModelConfig, dict(MODEL_OVERRIDES), "model")
    ct = parse_section(TrainConfig, {**TRAIN_OVERRIDES, **train_kw}, "train")
    return cm, ct


def cli_args(data: Path, run_dir: Path, **train_kw) -> list[str]:
    args = ["--data", str(data), "--run-dir", str(run_dir), "--threads", "1"]
    for k, v in MODEL_OVERRIDES.items():
        args += ["--set", f"model.{k}={json.dumps(v)}"]
    for k, v in {**TRAIN_OVERRIDES, **train_kw}.items():
        args += ["--set", f"train.{k}={json.dumps(v)}"]
    return args


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cli(data: Path, run_dir: Path, timeout: float = 240, **train_kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "get3d.train.loop", *cli_args(data, run_dir, **train_kw)]
    return subprocess.run(cmd, check=False, env=child_env(), capture_output=True, text=True, timeout=timeout)


def load_state(path):
    from get3d.train.checkpoint import load_checkpoint
    return load_checkpoint(path, "state")[1]
