"""Metric registry: every evaluation metric is one small function.

A metric is ``fn(ctx: MetricContext) -> dict[str, float]`` registered under a name::

    @register_metric("fid")
    def _fid(ctx): ...

:func:`compute_metrics` runs a list of names against one shared :class:`MetricContext` and merges the
returned dicts (keys are prefixed by nothing: each metric chooses distinct keys such as ``"fid"``,
``"cov_cd"``).  The context carries *providers* (callables), so data is only produced for metrics that
need it, and caches what several metrics share (e.g. the CD distance matrix used by COV-CD and MMD-CD,
the generated-image Inception features used by FID and KID).
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

MetricFn = Callable[["MetricContext"], dict]
_REGISTRY: dict[str, MetricFn] = {}


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Decorator registering ``fn`` as metric ``name`` (names are unique)."""

    def deco(fn: MetricFn) -> MetricFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"metric {name!r} is already registered (by {_REGISTRY[name].__module__})")
        _REGISTRY[name] = fn
        return fn

    return deco


def available_metrics() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_metric(name: str) -> MetricFn:
    _load_builtin()
    if name not in _REGISTRY:
        raise KeyError(f"unknown metric {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


Mesh = tuple[np.ndarray, np.ndarray]  # (vertices [V,3] float, faces [F,3] int)

#: cache keys of the distance matrices of the mesh metrics (read them with MetricContext.distance_matrix)
MATRIX_KEYS = {"cd": "cd_matrix", "lfd": "lfd_matrix"}


@dataclasses.dataclass
class MetricContext:
    """Everything a metric may ask for.  Unused providers can stay ``None``.

    - ``real_images`` / ``fake_images``: callables returning an iterator of uint8 RGB batches ``[B,3,H,W]``
      (numpy or torch).  ``real_stats_cache``: optional ``.npz`` path for the real-image feature stats.
    - ``real_meshes`` / ``fake_meshes``: callables returning a list of ``(vertices, faces)``.
    - ``num_fake_images``: how many generated images FID/KID consume (50k in the protocol).
    - ``real_points``: precomputed reference point clouds ``[R, num_points, 3]`` (already scale-normalised and
      sampled as :func:`get3d.metrics.pointcloud.sample_many` does); when set, ``cd`` uses them instead of
      sampling ``real_meshes``.
    - ``real_lfd``: precomputed reference :class:`get3d.metrics.lfd.LFDDescriptor`; when set, ``lfd`` uses it
      instead of computing descriptors of ``real_meshes``.
    - ``fake_lfd``: optional callable returning the generated meshes' descriptors (e.g. one that skips empty
      meshes); default: :func:`get3d.metrics.lfd.mesh_descriptors` of ``fake_meshes``.

    The generated x reference distance matrices that ``cd`` / ``lfd`` compute stay available through
    :meth:`distance_matrix` (e.g. for per-shape nearest-neighbour lists).
    """

    device: str | torch.device = "cpu"
    real_images: Callable[[], Iterable] | None = None
    fake_images: Callable[[], Iterable] | None = None
    real_stats_cache: str | None = None
    real_dataset_key: str | None = None  # identifies the real set for the cache (e.g. a hash of the file list)
    num_fake_images: int = 50_000
    real_meshes: Callable[[], list[Mesh]] | None = None
    fake_meshes: Callable[[], list[Mesh]] | None = None
    num_points: int = 2048
    seed: int = 0
    batch_size: int = 64
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    lfd_batch_meshes: int = 8
    real_points: Any = None
    real_lfd: Any = None
    fake_lfd: Callable[[], Any] | None = None
    cache: dict = dataclasses.field(default_factory=dict)

    def distance_matrix(self, name: str):
        """The ``[generated, reference]`` distance matrix metric ``name`` ("cd" or "lfd") computed, or None."""
        if name not in MATRIX_KEYS:
            raise KeyError(f"distance_matrix: no matrix for metric {name!r}; known: {sorted(MATRIX_KEYS)}")
        return self.cache.get(MATRIX_KEYS[name])

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def require(self, attr: str, metric: str) -> Any:
        val = getattr(self, attr)
        if val is None:
            raise ValueError(f"metric {metric!r} needs MetricContext.{attr}, which is None")
        return val


def compute_metrics(names: Iterable[str], ctx: MetricContext) -> dict[str, float]:
    """Run the named metrics on ``ctx``; returns the merged dict plus ``"<name>_time_s"`` per metric."""
    out: dict[str, float] = {}
    for name in names:
        fn = get_metric(name)
        t0 = time.perf_counter()
        res = fn(ctx)
        for k, v in res.items():
            if k in out:
                warnings.warn(f"metric {name!r} overwrites key {k!r}", stacklevel=2)
            out[k] = v
        out[f"{name}_time_s"] = time.perf_counter() - t0
    return out


def iterate_batches(provider: Callable[[], Iterable], limit: int | None = None) -> Iterator[torch.Tensor]:
    """Yield uint8 ``[B,3,H,W]`` torch batches from a provider, stopping after ``limit`` images."""
    seen = 0
    for batch in provider():
        t = torch.as_tensor(np.asarray(batch)) if not isinstance(batch, torch.Tensor) else batch
        if limit is not None and seen + t.shape[0] > limit:
            t = t[: limit - seen]
        if t.shape[0] == 0:
            break
        seen += t.shape[0]
        yield t
        if limit is not None and seen >= limit:
            break


_BUILTIN_LOADED = False


def _load_builtin() -> None:
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        from . import builtin  # noqa: F401  (registers fid, kid, cd, lfd)
