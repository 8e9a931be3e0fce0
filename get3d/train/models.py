"""The training loop's view of the other packages: networks (get3d.nn) and data (get3d.dataset).

Everything the loop needs from them goes through here, so an interface change touches one file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from get3d import cameras
from get3d.dataset.format import render_settings


def model_config_class() -> type:
    from get3d.nn.config import ModelConfig
    return ModelConfig


@dataclass
class Networks:
    G: torch.nn.Module
    D_rgb: torch.nn.Module
    D_mask: torch.nn.Module
    prior: cameras.CameraPrior

    @property
    def z_dim(self) -> int:
        return int(self.G.z_dim)

    def sample_cameras(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Fake cameras from the camera prior: ``([n, 2] (azimuth, polar), c2w [n, 4, 4])`` on the CPU."""
        az, po = self.prior.sample(n, generator=generator)
        c2w = cameras.camera_to_world(az, po, self.prior.radius).float()
        return cameras.camera_condition(az, po), c2w

    def generate(self, z_tex, z_geo, camera, c2w, *, style_mixing_prob: float, mix_seed: int,
                 update_w_avg: bool, G: torch.nn.Module | None = None, noise_mode: str = "random") -> dict:
        G = self.G if G is None else G
        gen = torch.Generator().manual_seed(int(mix_seed))
        return G(z_tex, z_geo, c2w, style_mixing=float(style_mixing_prob) if style_mixing_prob > 0 else False,
                 generator=gen, update_w_avg=update_w_avg, noise_mode=noise_mode)


def camera_prior(cfg_model, dataset_path=None) -> cameras.CameraPrior:
    """Prior for fake cameras: the one the dataset was rendered with, else model hints, else GET3D's default."""
    r = render_settings(dataset_path) if dataset_path is not None else {}
    if "elevation_min_deg" in r and "elevation_max_deg" in r:
        return cameras.CameraPrior(float(r["elevation_min_deg"]), float(r["elevation_max_deg"]),
                                   float(r.get("radius", cameras.RADIUS)), float(r.get("fovy_deg", cameras.FOVY_DEG)))
    return _camera_prior(cfg_model)


def _camera_prior(cfg_model) -> cameras.CameraPrior:
    lo = getattr(cfg_model, "elevation_min_deg", None)
    hi = getattr(cfg_model, "elevation_max_deg", None)
    rng = getattr(cfg_model, "elevation_range_deg", None)
    if rng is not None:
        lo, hi = rng
    cat = getattr(cfg_model, "category", None)
    if (lo is None or hi is None) and cat in cameras.ELEVATION_RANGE_DEG:
        lo, hi = cameras.ELEVATION_RANGE_DEG[cat]
    kw = {}
    if lo is not None and hi is not None:
        kw.update(elevation_min_deg=float(lo), elevation_max_deg=float(hi))
    for name in ("radius", "fovy_deg"):
        if getattr(cfg_model, f"camera_{name}", None) is not None:
            kw[name] = float(getattr(cfg_model, f"camera_{name}"))
    return cameras.CameraPrior(**kw)


def build_networks(cfg_model, device: torch.device, backend: str | None,
                   prior: cameras.CameraPrior | None = None) -> Networks:
    """``backend`` (train.backend when not 'auto') overrides the model's ``raster_backend``."""
    if backend and hasattr(cfg_model, "raster_backend") and cfg_model.raster_backend != backend:
        import dataclasses
        cfg_model = dataclasses.replace(cfg_model, raster_backend=backend)
    from get3d.nn.config import build_discriminators, build_generator

    G = build_generator(cfg_model, device=device)
    Ds = build_discriminators(cfg_model, device=device)
    D_rgb, D_mask = Ds.rgb, Ds.mask
    G, D_rgb, D_mask = (m.to(device).train() for m in (G, D_rgb, D_mask))
    return Networks(G, D_rgb, D_mask, prior or _camera_prior(cfg_model))


# ---------------------------------------------------------------- data

def open_dataset(path: Path, cfg_model=None):
    from get3d.dataset.dataset import RenderedViews

    res = getattr(cfg_model, "img_resolution", None) if cfg_model is not None else None
    ds = RenderedViews(str(path), resolution=res)
    if len(ds) == 0:
        raise ValueError(f"dataset {path} has no images")
    return ds


def worker_init_fn(worker_id: int) -> None:
    torch.set_num_threads(1)
