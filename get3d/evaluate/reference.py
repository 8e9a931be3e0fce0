"""Reference statistics of the test split (their own DVC stage), cached by content keys.

Two caches, each one ``.npz`` written atomically (get3d.io):

- **images** (:func:`reference_stats`): Inception pool3 features (+ mean / covariance) of *all rendered views of
  the test split* of the render-stage HDF5, each view as ``RGB x (alpha > 0)`` on black, uint8 (optionally
  area-resized to ``evaluate.fid_resolution``).  Key = the HDF5's content hash (``attrs['dataset_hash']`` written
  by get3d.render; else a SHA-256 of the file) + resolution + :data:`REFERENCE_VERSION`.
- **shapes** (:func:`reference_shapes`): the test-split meshes of the asset manifest, placed as they were rendered
  (``v * scale + translation``), then per the protocol: ``num_points`` area-uniform surface points after scaling
  the largest bounding-box side to 1 (no centring; :func:`get3d.metrics.pointcloud.sample_surface`), and the
  LFD descriptors (:func:`get3d.metrics.lfd.mesh_descriptors`, which centres + unit-scales itself).
  Key = per-item (id, mesh bytes SHA-256, scale, translation) + num_points + seed + whether LFD is included.

Both functions reuse a cache whose key matches and recompute (and overwrite) it otherwise.
:func:`build_reference` runs both into one folder (the DVC stage's output).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from .config import EvaluateConfig

log = logging.getLogger(__name__)

#: Bump when what is cached for the same inputs changes.
REFERENCE_VERSION = 1
IMAGES_FILE = "images.npz"
SHAPES_FILE = "shapes.npz"
SUMMARY_FILE = "reference.json"
#: Seed offset of the reference point clouds (the convention of get3d.metrics.builtin's ``cd`` metric).
REF_SEED_OFFSET = 1_000_000


class ReferenceError(RuntimeError):
    """The reference set cannot be built (no test split, unreadable dataset, ...)."""


# ------------------------------------------------------------------------------------------------ helpers

from get3d.io import atomic_write_npz
from get3d.io import file_sha256 as _sha256_file


def _read_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["key"])
    except (OSError, KeyError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------ images

class TestViews:
    """The test-split views of a rendered-views dataset (layout: get3d.dataset.format)."""

    def __init__(self, dataset_h5: str | os.PathLike, split: str = "test"):
        from get3d.dataset.format import DatasetFormatError, read_index

        self.path = Path(dataset_h5)
        try:
            index = read_index(self.path)
        except DatasetFormatError as exc:
            raise ReferenceError(str(exc)) from None
        self.resolution = index.resolution
        self.content_hash = index.content_hash
        self.attrs = index.attrs
        self.indices = index.rows_of_splits([split])
        self.num_objects = sum(1 for s in index.object_split if s == split)
        self.split = split

    def __len__(self) -> int:
        return len(self.indices)

    def dataset_hash(self) -> str:
        return self.content_hash or _sha256_file(self.path)

    def batches(self, batch_size: int, resolution: int | None = None) -> Iterator[torch.Tensor]:
        """uint8 ``[B, 3, H, W]`` RGB x (alpha > 0) on black; area-resized when ``resolution`` differs."""
        import torch.nn.functional as F

        from get3d.dataset.format import open_dataset

        res = int(resolution or self.resolution)
        with open_dataset(self.path, require=("images",)) as f:
            ds = f["images"]
            for i in range(0, len(self.indices), batch_size):
                idx = self.indices[i:i + batch_size]
                rgba = torch.from_numpy(np.stack([ds[int(j)] for j in idx]))  # [B, H, W, 4]
                rgb = rgba[..., :3] * (rgba[..., 3:4] > 0)
                x = rgb.permute(0, 3, 1, 2).contiguous()
                if res != self.resolution:
                    mode = "area" if res < self.resolution else "bilinear"
                    kw = {} if mode == "area" else {"align_corners": False}
                    x = F.interpolate(x.float(), size=(res, res), mode=mode, **kw).round_().clamp_(0, 255)
                    x = x.to(torch.uint8)
                yield x


def images_key(views: TestViews, resolution: int) -> str:
    return hashlib.sha256(json.dumps({"dataset": views.dataset_hash(), "split": views.split,
                                      "resolution": int(resolution), "version": REFERENCE_VERSION},
                                     sort_keys=True).encode()).hexdigest()[:32]


def fid_resolution(cfg: EvaluateConfig, views: TestViews) -> int:
    return int(cfg.fid_resolution or views.resolution)


def _extractor(device: str, batch_size: int):
    from get3d.metrics.inception import InceptionFeatureExtractor

    return InceptionFeatureExtractor(device, batch_size)


def reference_stats(dataset_h5: str | os.PathLike, out_npz: str | os.PathLike, cfg: EvaluateConfig,
                    extractor=None) -> dict:
    """Inception features of all test-split views of ``dataset_h5`` into ``out_npz`` (reused if up to date).

    Returns ``{"path", "key", "reused", "num_images", "num_objects", "resolution", "time_s"}``.  Raises
    :class:`ReferenceError` if the test split has fewer than 2 views (FID needs a covariance).
    """
    from get3d.metrics.fid import load_features_npz, save_features_npz

    t0 = time.perf_counter()
    out_npz = Path(out_npz)
    views = TestViews(dataset_h5)
    res = fid_resolution(cfg, views)
    key = images_key(views, res)
    info = {"path": str(out_npz), "key": key, "num_objects": views.num_objects, "resolution": res,
            "dataset": str(views.path)}
    if _read_key(out_npz) == key:
        feats = load_features_npz(out_npz, key)
        if feats is not None and len(feats) == len(views):
            log.info("reference images: reusing %s (key %s)", out_npz, key)
            return info | {"reused": True, "num_images": len(feats), "time_s": time.perf_counter() - t0}
    if len(views) < 2:
        raise ReferenceError(f"{views.path}: the test split has {len(views)} rendered view(s) "
                             f"({views.num_objects} object(s)); FID/KID need at least 2")
    device = cfg.resolve_device()
    ext = extractor if extractor is not None else _extractor(device, cfg.batch_size)
    log.info("reference images: %d test views of %s at %d² -> %s", len(views), views.path, res, out_npz)
    feats = ext.features_from_batches(views.batches(cfg.batch_size, res))
    save_features_npz(out_npz, feats, key)
    return info | {"reused": False, "num_images": len(feats), "time_s": time.perf_counter() - t0}


def load_reference_features(npz: str | os.PathLike, dataset_h5: str | os.PathLike,
                            cfg: EvaluateConfig) -> tuple[np.ndarray | None, str]:
    """``(features, key)`` if ``npz`` is up to date for ``dataset_h5`` at the configured resolution, else
    ``(None, key)``."""
    from get3d.metrics.fid import load_features_npz

    views = TestViews(dataset_h5)
    key = images_key(views, fid_resolution(cfg, views))
    if _read_key(Path(npz)) != key:
        return None, key
    return load_features_npz(npz, key), key


# ------------------------------------------------------------------------------------------------ shapes

def test_items(assets_manifest: str | os.PathLike, split: str = "test") -> list[dict]:
    from get3d.assets.stage import load_manifest

    man = load_manifest(assets_manifest)
    return [it for it in man["items"] if it.get("split") == split]


def load_placed_mesh(item: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices float64 [V,3], faces int64 [F,3])`` of a manifest item, placed as rendered
    (``v * scale + translation``)."""
    import trimesh

    path = Path(item["mesh_path"])
    if not path.is_file():
        raise ReferenceError(f"asset {item.get('id')!r}: mesh file {path} not found")
    try:
        m = trimesh.load(path, force="mesh", process=False, skip_materials=True)
    except Exception as exc:  # noqa: BLE001 - any loader failure is reported with the asset's name
        raise ReferenceError(f"asset {item.get('id')!r}: cannot load {path} ({type(exc).__name__}: {exc})") from None
    v = np.asarray(m.vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(m.faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise ReferenceError(f"asset {item.get('id')!r}: {path} has no faces")
    scale = float(item.get("scale", 1.0))
    t = np.asarray(item.get("translation", (0.0, 0.0, 0.0)), dtype=np.float64).reshape(3)
    return v * scale + t, f


def shapes_key(items: list[dict], cfg: EvaluateConfig, with_lfd: bool) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"num_points": cfg.num_points, "seed": cfg.seed, "lfd": bool(with_lfd),
                         "version": REFERENCE_VERSION}, sort_keys=True).encode())
    for it in items:
        p = Path(it["mesh_path"])
        digest = _sha256_file(p) if p.is_file() else "missing"
        h.update(json.dumps([it.get("id"), digest, float(it.get("scale", 1.0)),
                             [float(x) for x in it.get("translation", (0, 0, 0))]]).encode())
    return h.hexdigest()[:32]


def reference_shapes(assets_manifest: str | os.PathLike, out_npz: str | os.PathLike, cfg: EvaluateConfig,
                     with_lfd: bool | None = None) -> dict:
    """Point clouds (and LFD descriptors) of the test-split meshes into ``out_npz`` (reused if up to date).

    Items whose mesh cannot be loaded are skipped with a warning and listed in ``failures``.  Returns
    ``{"path", "key", "reused", "num_shapes", "ids", "failures", "with_lfd", "time_s"}``.
    """
    t0 = time.perf_counter()
    out_npz = Path(out_npz)
    with_lfd = ("lfd" in cfg.metrics) if with_lfd is None else with_lfd
    items = test_items(assets_manifest)
    key = shapes_key(items, cfg, with_lfd)
    info = {"path": str(out_npz), "key": key, "with_lfd": bool(with_lfd), "manifest": str(assets_manifest)}
    if _read_key(out_npz) == key:
        with np.load(out_npz, allow_pickle=False) as z:
            ids = [str(x) for x in z["ids"]]
            failures = json.loads(str(z["failures"]))
        log.info("reference shapes: reusing %s (key %s)", out_npz, key)
        return info | {"reused": True, "num_shapes": len(ids), "ids": ids, "failures": failures,
                       "time_s": time.perf_counter() - t0}
    meshes, ids, failures = [], [], []
    for it in items:
        try:
            meshes.append(load_placed_mesh(it))
            ids.append(str(it["id"]))
        except ReferenceError as exc:
            warnings.warn(f"reference shapes: skipping {exc}", RuntimeWarning, stacklevel=2)
            failures.append({"id": str(it.get("id")), "reason": str(exc)})
    if not meshes:
        raise ReferenceError(f"{assets_manifest}: no usable test-split mesh ({len(items)} test item(s), "
                             f"{len(failures)} failed)")
    from get3d.metrics.pointcloud import sample_many

    device = cfg.resolve_device()
    arrays = {"key": np.array(key), "ids": np.array(ids), "failures": np.array(json.dumps(failures)),
              "points": sample_many(meshes, cfg.num_points, cfg.seed + REF_SEED_OFFSET).numpy().astype(np.float32)}
    if with_lfd:
        from get3d.metrics.lfd import mesh_descriptors

        d = mesh_descriptors(meshes, device, cfg.lfd_batch_meshes)
        arrays.update({f"lfd_{k}": getattr(d, k).cpu().numpy() for k in ("art", "fd", "cir", "ecc")})
    atomic_write_npz(out_npz, **arrays)
    return info | {"reused": False, "num_shapes": len(ids), "ids": ids, "failures": failures,
                   "time_s": time.perf_counter() - t0}


def load_reference_shapes(npz: str | os.PathLike) -> dict:
    """``{"key", "ids", "points" [R,N,3] tensor, "lfd" LFDDescriptor | None}``."""
    with np.load(npz, allow_pickle=False) as z:
        out = {"key": str(z["key"]), "ids": [str(x) for x in z["ids"]], "points": torch.from_numpy(z["points"]),
               "lfd": None}
        if "lfd_art" in z:
            from get3d.metrics.lfd import LFDDescriptor

            out["lfd"] = LFDDescriptor(*(torch.from_numpy(z[f"lfd_{k}"]) for k in ("art", "fd", "cir", "ecc")))
    return out


# ------------------------------------------------------------------------------------------------ stage

def build_reference(dataset_h5: str | os.PathLike, assets_manifest: str | os.PathLike | None,
                    reference_dir: str | os.PathLike, cfg: EvaluateConfig, perf_cfg=None) -> dict:
    """The ``reference`` stage: ``<reference_dir>/images.npz`` (when FID/KID are configured),
    ``shapes.npz`` (when mesh metrics are configured and a manifest is given) and ``reference.json``.
    ``perf_cfg``: section ``perf`` (its ``lfd_sweep`` runs the LFD descriptors)."""
    from get3d import perf
    from get3d.io import atomic_write_json

    reference_dir = Path(reference_dir)
    summary: dict = {"version": REFERENCE_VERSION}
    with perf.applied(perf_cfg):
        if cfg.needs_images:
            summary["images"] = reference_stats(dataset_h5, reference_dir / IMAGES_FILE, cfg)
        if cfg.needs_meshes and assets_manifest is not None:
            summary["shapes"] = reference_shapes(assets_manifest, reference_dir / SHAPES_FILE, cfg)
    atomic_write_json(reference_dir / SUMMARY_FILE, summary)
    return summary


ProgressFn = Callable[[str], None]
