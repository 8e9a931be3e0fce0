"""An exported GLB rendered by Blender (BlenderProc, Cycles) matches the generator's own rendering of the same
shape from the same camera: silhouette IoU >= 0.97 and a small mean colour error (printed, asserted < 4 levels).

The generator is the smoke-config network with its SDF replaced by a closed squashed sphere (its texture field
is the network's own): a random network's fragmented surfaces would make silhouettes a test of aliasing."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import small_export, sphere_geometry

from get3d import cameras
from get3d.export.render import mvp_from_c2w, render_field
from get3d.export.sample import Code, code_latents, generate, load_model, raster_backend, sample_meshes
from get3d.render.testing import render_python_or_none

RES = 128
SCRIPT = Path(__file__).with_name("blender_render_glb.py")


@pytest.mark.render
def test_blender_renders_the_exported_glb_like_the_generator(snapshot, tmp_path):
    python = render_python_or_none()
    gen = load_model(snapshot, "cpu", "torch")
    sphere_geometry(gen.G)
    cfg = small_export(seeds="5", formats=["glb"], gallery=False, texture_size=512)
    rec = sample_meshes(gen, tmp_path / "out", cfg)["meshes"][0]
    az = torch.tensor([0.6, 2.5], dtype=torch.float64)
    po = torch.tensor([1.2, 1.0], dtype=torch.float64)
    c2w = cameras.camera_to_world(az, po, cameras.RADIUS)
    K = cameras.intrinsics(RES, cameras.FOVY_DEG)
    job = {"items": [{"glb": rec["glb"], "c2w": c2w.tolist()}], "K": K.tolist(), "resolution": RES, "samples": 16,
           "out": str(tmp_path / "blender.npz")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([str(python), str(SCRIPT), str(tmp_path / "job.json")], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    blender = np.load(tmp_path / "blender.npz")["rgba"]

    raw, texture_fn = generate(gen, *code_latents([Code(5, 5)], gen.z_dim), cfg.truncation_psi, cfg.noise_mode)
    v, f = (torch.from_numpy(x) for x in raw[0])
    own = render_field(raster_backend(gen, "torch"), [(v, f)] * 2,
                       lambda p, i: texture_fn(p, torch.zeros_like(i)), mvp_from_c2w(c2w), RES)
    own_mask = own["hard_mask"][:, 0].numpy() > 0
    own_rgb = (own["rgb"][:, :3].permute(0, 2, 3, 1).numpy() * 255).round()
    for k in range(2):
        b_mask = blender[k, ..., 3] >= 128
        iou = (b_mask & own_mask[k]).sum() / (b_mask | own_mask[k]).sum()
        inner = _erode(b_mask & own_mask[k])
        err = np.abs(blender[k, ..., :3].astype(float) - own_rgb[k])[inner].mean()
        print(f"view {k}: silhouette IoU {iou:.4f}, mean colour error {err:.2f} levels over {inner.sum()} pixels")
        assert own_mask[k].sum() > 500 and iou >= 0.97
        assert err < 4.0


def _erode(m: np.ndarray) -> np.ndarray:
    e = m.copy()
    e[1:] &= m[:-1]
    e[:-1] &= m[1:]
    e[:, 1:] &= m[:, :-1]
    e[:, :-1] &= m[:, 1:]
    return e
