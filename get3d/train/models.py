"""The training loop's view of the other packages: networks (get3d.nn) and data (get3d.data).

Everything the loop needs from them goes through here, so an interface change touches one file.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from get3d import cameras


def _import_attr(candidates: list[str]):
    errors = []
    for spec in candidates:
        mod, _, attr = spec.partition(":")
        try:
            m = importlib.import_module(mod)
        except ImportError as exc:
            errors.append(f"{mod}: {exc}")
            continue
        if hasattr(m, attr):
            return getattr(m, attr)
        errors.append(f"{mod} has no {attr}")
    raise ImportError("; ".join(errors))


def model_config_class() -> type:
    return _import_attr(["get3d.nn.config:ModelConfig", "get3d.nn:ModelConfig"])


def _build_generator():
    return _import_attr(["get3d.nn:build_generator", "get3d.nn.build:build_generator",
                         "get3d.nn.config:build_generator", "get3d.nn.generator:build_generator"])


def _build_discriminators():
    return _import_attr(["get3d.nn:build_discriminators", "get3d.nn.build:build_discriminators",
                         "get3d.nn.config:build_discriminators", "get3d.nn.discriminator:build_discriminators"])


def _call_build(fn, cfg, device, backend):
    import inspect
    params = inspect.signature(fn).parameters
    kw = {}
    if "device" in params:
        kw["device"] = device
    for name in ("backend", "raster_backend"):
        if name in params:
            kw[name] = backend
    return fn(cfg, **kw)


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


def build_networks(cfg_model, device: torch.device, backend: str | None) -> Networks:
    """``backend`` (train.backend when not 'auto') overrides the model's ``raster_backend``."""
    if backend and hasattr(cfg_model, "raster_backend") and cfg_model.raster_backend != backend:
        import dataclasses
        cfg_model = dataclasses.replace(cfg_model, raster_backend=backend)
    G = _call_build(_build_generator(), cfg_model, device, backend)
    Ds = _call_build(_build_discriminators(), cfg_model, device, backend)
    if isinstance(Ds, (tuple, list)):
        D_rgb, D_mask = Ds
    elif isinstance(Ds, dict):
        D_rgb, D_mask = Ds["rgb"], Ds["mask"]
    else:
        D_rgb, D_mask = Ds.rgb, Ds.mask
    G, D_rgb, D_mask = (m.to(device).train() for m in (G, D_rgb, D_mask))
    return Networks(G, D_rgb, D_mask, _camera_prior(cfg_model))


# ---------------------------------------------------------------- data

def open_dataset(path: Path, cfg_model=None):
    cls = _import_attr(["get3d.data.dataset:MultiViewDataset", "get3d.data.dataset:GET3DDataset",
                        "get3d.data.dataset:HDF5Dataset", "get3d.data.dataset:Dataset", "get3d.data:Dataset"])
    res = getattr(cfg_model, "img_resolution", None) if cfg_model is not None else None
    import inspect
    params = inspect.signature(cls).parameters
    kw = {}
    if res is not None:
        for name in ("resolution", "img_resolution"):
            if name in params:
                kw[name] = res
    ds = cls(str(path), **kw)
    if len(ds) == 0:
        raise ValueError(f"dataset {path} has no images")
    return ds


def dataset_digest(path: Path) -> dict:
    """Dataset identity for provenance: the data package's own content hash when it offers one."""
    for spec in ("get3d.data.dataset:dataset_hash", "get3d.data.dataset:content_hash", "get3d.data:dataset_hash"):
        try:
            fn = _import_attr([spec])
        except ImportError:
            continue
        h = fn(path)
        return h if isinstance(h, dict) else {"path": str(path), "sha256": str(h)}
    from get3d.train.rundir import dataset_hash
    return dataset_hash(path)


def worker_init_fn(worker_id: int) -> None:
    torch.set_num_threads(1)
