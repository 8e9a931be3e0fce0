"""Helpers of the tracking tests: a tracking config on a throw-away store, the train test helpers."""
from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for sub in ("train", "evaluate"):
    if str(TESTS / sub) not in sys.path:
        sys.path.insert(0, str(TESTS / sub))


def tracking_config(root: Path, uri: str | None = None, **kw):
    from get3d.schema import parse_section
    from get3d.tracking_config import TrackingConfig

    values = {"uri": uri or f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "artifacts"),
              "experiment": "test", "model_name": "gen-test", **kw}
    return parse_section(TrackingConfig, values, "tracking")


# ------------------------------------------------------------------------------------------------ tiny pipeline

def tiny_export_config():
    from get3d.export.config import ExportConfig

    return ExportConfig(seeds="0-1", texture_size=64, preview_resolution=64, turntable_frames=4,
                        video_formats=["gif"], grid_size=0, interpolation_steps=0, perturbation_count=0,
                        gallery=False, atlas_workers=1, device="cpu", backend="torch", batch_size=2)


def tiny_eval_config(**kw):
    from get3d.evaluate.config import smoke_config

    return smoke_config(metrics=["fid"], **kw)


def tiny_pipeline_inputs(root: Path) -> dict:
    """A render-format dataset (train/val/test splits) and its FID reference statistics."""
    from get3d.evaluate.reference import build_reference
    from get3d.render.testing import synthetic_dataset

    dataset = synthetic_dataset(root / "data", n_objects=4, views=4, resolution=32, seed=0)
    build_reference(dataset, None, root / "reference", tiny_eval_config())
    return {"dataset": dataset, "reference": root / "reference"}


def train_tiny(inputs: dict, root: Path, tracking, total_kimg: float = 0.004) -> dict:
    from train_helpers import tiny_configs

    from get3d.train.stage import run_train_stage

    cm, ct = tiny_configs(total_kimg=total_kimg, image_snapshot_ticks=1)
    return run_train_stage(cm, ct, inputs["dataset"], root / "train", root / "model" / "generator.pt",
                           tracking=tracking)


def evaluate_tiny(inputs: dict, model: Path, out: Path, tracking, seed: int = 0) -> dict:
    from get3d.evaluate.stage import evaluate

    return evaluate(model, inputs["dataset"], None, inputs["reference"], out, tiny_eval_config(seed=seed),
                    tracking=tracking)


def write_random_snapshot(path: Path, seed: int = 0) -> Path:
    """An inference snapshot of a freshly initialised tiny generator (32² renders, as the tiny dataset)."""
    import torch

    from get3d.nn.config import build_generator, small_config
    from get3d.schema import to_dict
    from get3d.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    cfg = small_config(img_resolution=32, z_dim=16, w_dim=16)
    G = build_generator(cfg)
    payload = {"G_ema": G.state_dict(), "model_config": to_dict(cfg), "provenance": {"seed": seed},
               "cur_nimg": 0, "kimg": 0.0, "train_config": {}}
    return save_checkpoint(path, "network", 0, payload)
