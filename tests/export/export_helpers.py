"""Helpers of the export tests: a real generator of the smoke model config (params.yaml ``model``) saved as an
inference snapshot, and small export configs."""
from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def smoke_model_config():
    from get3d.config import load_params

    return load_params(REPO / "params.yaml", only=["model"]).model


def write_snapshot(path: Path, seed: int = 0, **overrides) -> Path:
    """An inference snapshot (``network-*.pt`` format of get3d.train.checkpoint) of a freshly initialised
    generator with the smoke model config."""
    from get3d.nn.config import build_generator
    from get3d.schema import to_dict
    from get3d.train.checkpoint import save_checkpoint

    cfg = smoke_model_config().with_overrides(**overrides) if overrides else smoke_model_config()
    torch.manual_seed(seed)
    G = build_generator(cfg)
    payload = {"G_ema": G.state_dict(), "model_config": to_dict(cfg), "provenance": {"test": True},
               "cur_nimg": 2000, "kimg": 2.0, "train_config": {}}
    return save_checkpoint(path, "network", 2000, payload)


def small_export(**kw):
    from get3d.export.config import ExportConfig

    base = {"seeds": "0-3", "texture_size": 128, "device": "cpu", "backend": "torch", "batch_size": 4,
            "atlas_workers": 2, "preview_resolution": 64, "turntable_frames": 6, "grid_size": 2,
            "interpolation_steps": 3, "perturbation_count": 2, "fid_samples": 0}
    base.update(kw)
    return ExportConfig(**base)


def sphere_geometry(G, radius: float = 0.3) -> None:
    """Replace the generator's SDF by a squashed sphere's (its texture field stays the real one): a clean,
    closed shape for silhouette comparisons."""
    orig = G.backbone.query_geometry

    def query(state, points, return_features=False):
        out = orig(state, points, return_features)
        q = points * torch.tensor([1.0, 1.4, 1.0], device=points.device)
        sdf = radius - q.norm(dim=-1) + 0.0 * out[0]
        return (sdf, torch.zeros_like(out[1])) + tuple(out[2:])

    G.backbone.query_geometry = query


def viewer_available() -> bool:
    """The gallery's vendored viewer script is installed (``npm ci``)."""
    from get3d.export.gallery import GalleryError, viewer_script

    try:
        viewer_script()
    except GalleryError:
        return False
    return True
