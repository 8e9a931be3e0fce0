"""A throw-away git+DVC checkout of the project with a tiny params profile (seconds per stage on a CPU)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT_FILES = ("get3d", "tasks", "flows", "dvc.yaml", "params.yaml", "profiles", "envs", "prefect.yaml",
                 "package.json", "package-lock.json")

TINY_MODEL = {
    "z_dim": 16, "w_dim": 16, "mapping_layers": 2, "img_resolution": 32, "triplane_resolution": 16,
    "triplane_channels": [16, 16, 8], "plane_channels": 4, "decoder_hidden": 8, "texture_features": 4,
    "tet_res": 8, "d_channels": [8, 16, 16, 16], "d_mapping_layers": 1, "num_fp16_res": 0,
    "channels_last": False, "raster_backend": "torch", "cmap_dim": 16,
}


def tiny_params(repo_root: Path, assets: int = 4) -> dict:
    """params.yaml shrunk to a few assets, 3 views at 32 px, a few training images, tiny metric counts.

    The metrics are the mesh ones (CD -> COV/MMD, gate on MMD) so that no Inception network runs: the tests
    are about orchestration, and the image metrics have their own tests."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["assets"].update(count=assets, texture_size=16, split=[0.5, 0.25, 0.25])
    params["render"].update(resolution=32, views_per_object=3, samples=4, workers=1, device="cpu")
    params["model"] = {**params["model"], **TINY_MODEL}
    params["train"].update(total_kimg=0.008, batch_size=4, batch_per_gpu=4, kimg_per_tick=0.004,
                           snapshot_kimg=0.004, image_snapshot_ticks=0, device="cpu", backend="torch")
    params["evaluate"].update(metrics=["cd"], num_fake_images=8, fake_mesh_factor=2.0, num_points=256, kid_subsets=2,
                              kid_subset_size=4, batch_size=4, num_preview=4, num_detail_shapes=1, device="cpu",
                              backend="torch")
    params["export"].update(TINY_EXPORT)
    params["tracking"].update(gate_metric="mmd_cd", gate_direction="minimize", gate_min_margin=0.0)
    return params


TINY_EXPORT = {"seeds": "0-1", "texture_size": 64, "preview_resolution": 64, "turntable_frames": 4,
               "video_formats": ["gif"], "grid_size": 0, "interpolation_steps": 0, "perturbation_count": 0,
               "atlas_workers": 1, "device": "cpu", "backend": "torch", "batch_size": 2, "fid_samples": 0}


def write_params(work: Path, params: dict) -> None:
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_workspace(repo_root: Path, dest: Path, params: dict) -> tuple[Path, dict]:
    """Copy the project files, write ``params``, ``git init`` + ``dvc init``; returns (path, env for commands)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = repo_root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", ".prefect"))
        elif src.exists():
            shutil.copy(src, dest / name)
    write_params(dest, params)
    if (repo_root / "node_modules").is_dir():  # the export gallery's vendored viewer (npm ci)
        (dest / "node_modules").symlink_to(repo_root / "node_modules", target_is_directory=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(dest), GET3D_WORKSPACE=str(dest), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.pop("MLFLOW_TRACKING_URI", None)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest, env


def dvc_status(work: Path, env: dict) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=work, env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()
