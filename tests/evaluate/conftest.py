"""Fixtures of the evaluate tests: a tiny real generator saved as an inference snapshot, a tiny render-stage
HDF5 (get3d.render.testing.synthetic_dataset: same writer as the render stage) and a tiny asset manifest of
trimesh primitives written as OBJ."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

RES = 32


def write_snapshot(path: Path, seed: int = 0) -> Path:
    from get3d.nn.config import build_generator, small_config
    from get3d.schema import to_dict
    from get3d.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    cfg = small_config(img_resolution=RES, z_dim=16, w_dim=16)
    G = build_generator(cfg)
    payload = {"G_ema": G.state_dict(), "model_config": to_dict(cfg), "provenance": {"test": True},
               "cur_nimg": 1234, "kimg": 1.234, "train_config": {}}
    return save_checkpoint(path, "network", 1234, payload)


def write_assets(root: Path) -> Path:
    """Asset manifest (get3d.assets format, version 1): 2 test shapes (box, icosphere), 2 train shapes."""
    import trimesh

    root.mkdir(parents=True, exist_ok=True)
    shapes = {
        "box_a": (trimesh.creation.box((0.6, 0.3, 0.4)), "test"),
        "ball_b": (trimesh.creation.icosphere(subdivisions=1, radius=0.3), "test"),
        "cyl_c": (trimesh.creation.cylinder(radius=0.2, height=0.5, sections=12), "train"),
        "box_d": (trimesh.creation.box((0.2, 0.5, 0.2)), "train"),
    }
    items = []
    for sid, (mesh, split) in shapes.items():
        d = root / "03001627" / sid
        d.mkdir(parents=True, exist_ok=True)
        mesh.export(d / "model.obj")
        items.append({"id": sid, "synset": "03001627", "mesh": f"03001627/{sid}/model.obj", "scale": 1.0,
                      "translation": [0.0, 0.05, 0.0], "split": split, "sha256": ""})
    man = {"version": 1, "source": "test", "category": "chair", "synset": "03001627", "items": items,
           "failures": []}
    path = root / "manifest.json"
    path.write_text(json.dumps(man, indent=1))
    return path


@pytest.fixture(scope="session")
def eval_inputs(tmp_path_factory) -> dict:
    from get3d.render.testing import synthetic_dataset

    root = tmp_path_factory.mktemp("evaluate")
    return {
        "snapshot": write_snapshot(root / "network-000000001234.pt"),
        "dataset": synthetic_dataset(root / "data", n_objects=4, views=3, resolution=RES, seed=0),
        "manifest": write_assets(root / "assets"),
        "root": root,
    }


@pytest.fixture(scope="session")
def reference_dir(eval_inputs) -> Path:
    """The reference stage run once per test run (default smoke config: fid, kid, cd, lfd)."""
    from get3d.evaluate.config import smoke_config
    from get3d.evaluate.reference import build_reference

    out = eval_inputs["root"] / "reference"
    build_reference(eval_inputs["dataset"], eval_inputs["manifest"], out, smoke_config())
    return out
