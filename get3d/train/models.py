"""The training loop's view of the other packages: networks (get3d.nn) and data (get3d.data).

Everything the loop needs from them goes through here, so an interface change touches one file.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

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


def _render_attrs(path) -> dict:
    """Camera settings the dataset was rendered with (HDF5 attrs written by get3d.render), or {}."""
    try:
        import json

        import h5py
        with h5py.File(path, "r") as f:
            cfg = json.loads(f.attrs["config"]) if "config" in f.attrs else {}
            for k in ("radius", "fovy_deg"):
                if k in f.attrs:
                    cfg.setdefault(k, float(f.attrs[k]))
            return cfg
    except Exception:  # noqa: BLE001 - not an HDF5 of ours: fall back to the model / default prior
        return {}


def camera_prior(cfg_model, dataset_path=None) -> cameras.CameraPrior:
    """Prior for fake cameras: the one the dataset was rendered with, else model hints, else GET3D's default."""
    r = _render_attrs(dataset_path) if dataset_path is not None else {}
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
    G = _call_build(_build_generator(), cfg_model, device, backend)
    Ds = _call_build(_build_discriminators(), cfg_model, device, backend)
    if isinstance(Ds, (tuple, list)):
        D_rgb, D_mask = Ds
    elif isinstance(Ds, dict):
        D_rgb, D_mask = Ds["rgb"], Ds["mask"]
    else:
        D_rgb, D_mask = Ds.rgb, Ds.mask
    G, D_rgb, D_mask = (m.to(device).train() for m in (G, D_rgb, D_mask))
    return Networks(G, D_rgb, D_mask, prior or _camera_prior(cfg_model))


# ---------------------------------------------------------------- data

class H5Views(torch.utils.data.Dataset):
    """Minimal reader of the render stage's HDF5 (images [N,R,R,4] uint8, masks, azimuth, polar, c2w).

    Fallback only, used while ``get3d.data.dataset`` is not importable; same item dict as that class.
    The file is opened lazily per process (h5py handles do not survive pickling into workers).
    """

    def __init__(self, path: str):
        import h5py
        self.path = str(path)
        with h5py.File(self.path, "r") as f:
            for key in ("images", "azimuth", "polar", "c2w"):
                if key not in f:
                    raise ValueError(f"dataset {self.path}: missing HDF5 dataset {key!r}")
            self.n = int(f["images"].shape[0])
        self._f = None

    def __len__(self):
        return self.n

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_f"] = None
        return d

    def __getitem__(self, i: int) -> dict:
        import h5py
        import numpy as np
        if self._f is None:
            self._f = h5py.File(self.path, "r")
        f = self._f
        rgba = torch.from_numpy(np.asarray(f["images"][i])).permute(2, 0, 1).float() / 255.0
        mask = (rgba[3:4] > 0).float()
        image = (rgba[:3] * mask) * 2 - 1
        cam = torch.tensor([float(f["azimuth"][i]), float(f["polar"][i])], dtype=torch.float32)
        return {"image": image, "mask": mask, "camera": cam,
                "c2w": torch.from_numpy(np.asarray(f["c2w"][i], dtype=np.float32)), "index": i}


def open_dataset(path: Path, cfg_model=None):
    try:
        cls = _import_attr(["get3d.data.dataset:RenderedViews", "get3d.data.dataset:MultiViewDataset", "get3d.data.dataset:GET3DDataset",
                            "get3d.data.dataset:HDF5Dataset", "get3d.data.dataset:Dataset", "get3d.data:Dataset"])
    except ImportError:
        cls = H5Views
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
    try:
        import h5py
        with h5py.File(path, "r") as f:
            if "dataset_hash" in f.attrs:
                return {"path": str(path), "sha256": str(f.attrs["dataset_hash"]), "kind": "render-stage content hash"}
    except Exception:  # noqa: BLE001 - not HDF5: hash the bytes
        pass
    from get3d.train.rundir import dataset_hash
    return dataset_hash(path)


def worker_init_fn(worker_id: int) -> None:
    torch.set_num_threads(1)
