"""The ``evaluate`` stage: an inference snapshot + the test split → metrics.json, per_shape.json, previews.

:func:`evaluate` builds one :class:`get3d.metrics.MetricContext` and runs :func:`get3d.metrics.compute_metrics`
on ``evaluate.metrics``.  What it feeds the context:

- ``fake_images``: :class:`~get3d.evaluate.generate.Sampler` images (FID-Ori; FID-3D in a second context whose
  keys get a ``_3d`` suffix: ``fid_3d``, ``kid_3d``), ``num_fake_images`` of them;
- the reference image features from ``<reference_dir>/images.npz`` (``real_stats_cache`` + ``real_dataset_key``;
  the reference stage writes it).  If it is missing or stale, the features are computed in memory from the
  dataset (with a warning) and the reference folder is *not* written (it is another stage's output);
- the reference side of the mesh metrics through the public context fields ``real_points`` / ``real_lfd``
  (from ``<reference_dir>/shapes.npz``: cached point clouds + LFD descriptors), so LFD descriptors of the test
  meshes are not recomputed per evaluation, and ``fake_lfd`` (descriptors of the non-empty generated meshes,
  zero codes for empty ones); per_shape.json uses the very matrices the metrics were computed from
  (``MetricContext.distance_matrix``).  ``fake_meshes`` / ``real_meshes`` providers are set as well, for any other
  registered metric.

Outputs in ``out_dir`` (each written atomically):

- ``metrics.json``: flat ``{name: number}`` (DVC metrics): the metric keys (``fid``, ``kid``, ``cov_cd`` (%),
  ``mmd_cd`` (x10^3), ``cov_lfd`` (%), ``mmd_lfd``, ``<metric>_time_s``) plus counts: ``num_fake_images``,
  ``num_fake_meshes``, ``num_reference_shapes``, ``num_reference_images``, ``num_empty_meshes``,
  ``num_degenerate_meshes``, ``num_invalid_meshes`` (non-finite vertices / bad faces: scored as empty),
  ``empty_mesh_fraction``, ``kimg`` and ``eval_time_s``.  A non-finite value is
  written as ``null`` (JSON has no NaN) and named in the warnings.
- ``per_shape.json``: per reference shape its nearest generated shape (index, distance) under CD and LFD; per
  generated shape its nearest reference (index, id, distance), face count and whether it is empty; plus the
  COV / MMD recomputed from these lists (they equal metrics.json's).
- ``preview.png``: the first ``num_preview`` generated images per image source (one block of rows each).
- ``detail/``: for the first ``num_detail_shapes`` reference shapes, the reference mesh and its nearest
  generated meshes under CD and LFD as OBJ (scaled so the largest side is 1, as compared).
- ``evaluate.json``: report: snapshot, kimg, dataset hash, reference keys, resolved config, device, warnings.

Degenerate generated meshes (no faces, one triangle, zero area) never stop the stage.  Their defined values:
an empty mesh's point cloud is its vertices, or the origin when it has none (CD finite:
:func:`get3d.metrics.pointcloud.sample_surface`); its LFD descriptors are all zero (LFD finite:
:func:`get3d.metrics.lfd.mesh_descriptors`); its renderings are black images.  Each such mesh is still one
generated sample (it counts in the 5x set and can be a nearest neighbour).  The count is in metrics.json and a
warning names it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from get3d import perf
from get3d.io import atomic_write_image, atomic_write_json
from get3d.meshio import write_obj
from get3d.schema import to_dict

from . import reference as ref_mod
from .config import EvaluateConfig
from .generate import Sampler, load_generator, resolve_snapshot

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PER_SHAPE_FILE = "per_shape.json"
PREVIEW_FILE = "preview.png"
REPORT_FILE = "evaluate.json"
DETAIL_DIR = "detail"
IMAGE_METRICS = ("fid", "kid")


class EvaluateError(RuntimeError):
    """The evaluation cannot run (bad inputs); the message names the file / key."""


# ------------------------------------------------------------------------------------------------ io

def _atomic_json(path: Path, obj) -> None:
    atomic_write_json(path, obj, allow_nan=False)


def _atomic_png(path: Path, arr: np.ndarray) -> None:
    atomic_write_image(path, arr)


def image_grid(images: list[torch.Tensor], cols: int = 8) -> np.ndarray:
    """uint8 ``[3, H, W]`` images → ``[rows*H, cols*W, 3]`` grid (grey padding)."""
    if not images:
        return np.zeros((1, 1, 3), np.uint8)
    h, w = images[0].shape[-2:]
    cols = max(1, min(cols, len(images)))
    rows = math.ceil(len(images) / cols)
    out = np.full((rows * h, cols * w, 3), 128, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = im.permute(1, 2, 0).numpy()
    return out


# ------------------------------------------------------------------------------------------------ helpers

def mesh_area(v: np.ndarray, f: np.ndarray) -> float:
    if len(f) == 0 or len(v) == 0:
        return 0.0
    t = np.asarray(v, np.float64)[np.asarray(f, np.int64)]
    return float(0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum())


def sanitize_meshes(meshes) -> tuple[list, list[int]]:
    """Replace meshes with non-finite vertices or out-of-range faces by empty meshes (indices returned)."""
    out, bad = [], []
    for i, (v, f) in enumerate(meshes):
        v = np.asarray(v, np.float32).reshape(-1, 3)
        f = np.asarray(f, np.int64).reshape(-1, 3)
        if not np.isfinite(v).all() or (len(f) and (f.min() < 0 or f.max() >= len(v))):
            bad.append(i)
            v, f = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
        out.append((v, f))
    return out, bad


def classify_meshes(meshes) -> dict:
    """Counts of empty (no faces) and degenerate (fewer than 2 faces, zero / non-finite area) meshes."""
    empty, degenerate = [], []
    for i, (v, f) in enumerate(meshes):
        if len(f) == 0:
            empty.append(i)
            degenerate.append(i)
            continue
        a = mesh_area(v, f)
        if len(f) < 2 or not (a > 0 and math.isfinite(a)):
            degenerate.append(i)
    return {"empty": empty, "degenerate": degenerate}


def nearest_lists(dist: torch.Tensor, ref_ids: list[str]) -> dict:
    """From a ``[G, R]`` matrix: nearest reference per generated shape and nearest generated per reference.

    Ties go to the lowest index (``argmin``), as in :func:`get3d.metrics.coverage.coverage_mmd`."""
    d = torch.as_tensor(dist).double()
    G, R = d.shape
    out: dict = {"generated": [], "reference": []}
    if G == 0 or R == 0:
        return out
    g_near = d.argmin(dim=1)
    r_near = d.argmin(dim=0)
    for g in range(G):
        j = int(g_near[g])
        out["generated"].append({"nearest_reference": j, "nearest_reference_id": ref_ids[j],
                                 "distance": float(d[g, j])})
    for r in range(R):
        j = int(r_near[r])
        out["reference"].append({"nearest_generated": j, "distance": float(d[j, r])})
    return out


def coverage_from_lists(lists: dict, num_reference: int, scale: float) -> dict:
    """COV (%) and MMD recomputed from per-shape lists (checks per_shape.json against metrics.json)."""
    if not lists["generated"] or num_reference == 0:
        return {"cov": None, "mmd": None}
    covered = {e["nearest_reference"] for e in lists["generated"]}
    mmd = float(np.mean([e["distance"] for e in lists["reference"]])) * scale
    return {"cov": 100.0 * len(covered) / num_reference, "mmd": mmd}


def _finite_or_none(k: str, v, bad: list[str]):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        bad.append(k)
        return None
    return x


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("numpy", "h5py", "trimesh"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


# ------------------------------------------------------------------------------------------------ stage

def evaluate(snapshot_path: str | os.PathLike, dataset_h5: str | os.PathLike,
             assets_manifest: str | os.PathLike | None, reference_dir: str | os.PathLike,
             out_dir: str | os.PathLike, cfg: EvaluateConfig, perf_cfg=None, tracking=None) -> dict:
    """Evaluate one inference snapshot; see the module docstring for inputs, outputs and degenerate cases.

    ``perf_cfg`` (section ``perf``; None: the choices in force) is applied for the evaluation and recorded in
    ``evaluate.json``.

    ``snapshot_path``: a ``network-*.pt`` file, or a run directory / its ``checkpoints/`` folder (then the
    snapshot named by ``latest.json``, else the newest one).  ``tracking`` (enabled): the metrics and output
    files are logged to the MLflow run that trained the snapshot (the store is checked before any work).

    Returns ``{"metrics": flat dict (as metrics.json), "per_shape": dict, "paths": {...}, "warnings": [...]}``.
    """
    if tracking is not None and tracking.enabled:
        from get3d import tracking as tracking_mod

        tracking_mod.connect(tracking)  # fail now, naming the URI, rather than after the evaluation
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DETAIL_DIR).mkdir(exist_ok=True)  # always present (a DVC output), even when no shape is exported
    with warnings.catch_warnings(record=True) as caught, perf.applied(perf_cfg) as perf_in_force:
        warnings.simplefilter("always")
        result = _evaluate(Path(snapshot_path), Path(dataset_h5),
                           Path(assets_manifest) if assets_manifest is not None else None,
                           Path(reference_dir), out_dir, cfg, caught)
    # re-issue the (deduplicated) warnings to the caller and record them in the report
    seen, msgs = set(), []
    for w in caught:
        m = f"{w.category.__name__}: {w.message}"
        if m not in seen:
            seen.add(m)
            if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
                msgs.append(m)  # library deprecations are not about this evaluation
            warnings.warn(str(w.message), w.category, stacklevel=2)
    result["warnings"] = msgs
    report = json.loads((out_dir / REPORT_FILE).read_text())
    report["warnings"] = msgs
    report["comparison_key"] = comparison_key(report)
    report["perf"] = to_dict(perf_in_force)
    _atomic_json(out_dir / REPORT_FILE, report)
    result["comparison_key"] = report["comparison_key"]
    if tracking is not None and tracking.enabled:
        from get3d import tracking as tracking_mod

        result["mlflow_run_id"] = tracking_mod.log_evaluation(
            tracking, Path(report["snapshot"]), out_dir, result["metrics"], report["comparison_key"])
    return result


#: Evaluation settings that change what a metric value means (two values compare only when these agree).
PROTOCOL_KEYS = ("metrics", "image_sources", "num_fake_images", "fake_mesh_factor", "num_points",
                 "truncation_psi", "fid_resolution", "kid_subset_size")


def comparison_key(report: dict) -> str:
    """Hash of the reference statistics (test-split images / shapes) and the protocol counts of an evaluation:
    metric values of two evaluations are comparable only when their keys are equal."""
    import hashlib

    cfg = report.get("config") or {}
    basis = {"reference_images": report.get("reference_images_key"),
             "reference_shapes": report.get("reference_shapes_key"),
             "protocol": {k: cfg.get(k) for k in PROTOCOL_KEYS}}
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _evaluate(snapshot: Path, dataset_h5: Path, manifest: Path | None, reference_dir: Path, out_dir: Path,
              cfg: EvaluateConfig, caught: list) -> dict:
    t0 = time.perf_counter()
    metric_names = list(cfg.metrics)
    image_metrics = [m for m in metric_names if m in IMAGE_METRICS]
    other_metrics = [m for m in metric_names if m not in IMAGE_METRICS]
    _check_inputs(dataset_h5, manifest, cfg, other_metrics)

    device = cfg.resolve_device()
    gen, prior, report = _load_generator_and_report(snapshot, dataset_h5, manifest, reference_dir, cfg, device)

    # ---- reference images + the sampler of generated images / meshes
    views = ref_mod.TestViews(dataset_h5)
    res = ref_mod.fid_resolution(cfg, views)
    previews: dict[str, list[torch.Tensor]] = {}
    sampler = _make_sampler(gen, prior, cfg, res, previews)
    real_kw = _reference_image_inputs(image_metrics, views, res, reference_dir, dataset_h5, cfg, report)

    # ---- reference shapes + generated meshes
    ref_shapes, gen_meshes, mesh_info = _shapes_and_generated_meshes(sampler, manifest, reference_dir, cfg, report)

    # ---- metrics: one context per image source (mesh metrics on the first)
    contexts = _metric_contexts(sampler, cfg, device, image_metrics, real_kw, manifest, ref_shapes, gen_meshes)
    flat = _compute_all_metrics(contexts, metric_names, image_metrics, other_metrics)

    # ---- per-shape lists (must describe the numbers in metrics.json)
    per_shape = _per_shape(contexts[0][1], ref_shapes, gen_meshes, mesh_info)
    _check_per_shape_agrees(per_shape, flat)

    # ---- previews, detail meshes, metrics.json / per_shape.json / evaluate.json
    paths = _write_previews_and_detail(out_dir, sampler, previews, cfg, manifest, ref_shapes, gen_meshes, per_shape)
    metrics = _final_metrics(flat, cfg, image_metrics, views, ref_shapes, gen_meshes, mesh_info, gen.kimg, t0)
    _write_outputs(out_dir, per_shape, metrics, report, paths)
    return {"metrics": metrics, "per_shape": per_shape, "paths": paths}


# ------------------------------------------------------------------------------------------------ stage steps

def _check_inputs(dataset_h5: Path, manifest: Path | None, cfg: EvaluateConfig, other_metrics: list[str]) -> None:
    if not Path(dataset_h5).is_file():
        raise FileNotFoundError(f"{dataset_h5}: rendered dataset not found (run the render stage)")
    if cfg.needs_meshes and manifest is None:
        raise EvaluateError(f"evaluate.metrics {other_metrics} need the asset manifest (test-split meshes); "
                            "none was given")


def _load_generator_and_report(snapshot: Path, dataset_h5: Path, manifest: Path | None, reference_dir: Path,
                               cfg: EvaluateConfig, device: str):
    """Resolve + load the snapshot; returns ``(generator, camera prior, report dict started)``."""
    from get3d.schema import to_dict
    from get3d.train.checkpoint import read_header
    from get3d.train.models import camera_prior

    snapshot = resolve_snapshot(snapshot)
    gen = load_generator(snapshot, device, cfg.backend)
    header = read_header(snapshot)
    prior = camera_prior(gen.model_config, dataset_h5)
    report: dict = {"snapshot": str(snapshot), "snapshot_sha256": header.get("sha256"), "kimg": gen.kimg,
                    "dataset": str(dataset_h5), "assets_manifest": str(manifest) if manifest else None,
                    "reference_dir": str(reference_dir), "config": to_dict(cfg), "device": device,
                    "camera_prior": to_dict(prior), "versions": _versions()}
    return gen, prior, report


def _make_sampler(gen, prior, cfg: EvaluateConfig, res, previews: dict[str, list[torch.Tensor]]) -> Sampler:
    """A :class:`Sampler` that keeps the first ``num_preview`` images of each source in ``previews``."""
    def on_batch(source: str, start: int, batch: torch.Tensor) -> None:
        lst = previews.setdefault(source, [])
        lst.extend(batch[: max(0, cfg.num_preview - len(lst))].cpu())

    return Sampler(gen, prior, seed=cfg.seed, truncation_psi=cfg.truncation_psi, noise_mode=cfg.noise_mode,
                   batch_size=cfg.batch_size, resolution=res, on_batch=on_batch)


def _reference_image_inputs(image_metrics: list[str], views, res, reference_dir: Path, dataset_h5: Path,
                            cfg: EvaluateConfig, report: dict) -> dict:
    """MetricContext keyword arguments for the reference image side (cached features if up to date)."""
    real_kw: dict = {}
    if image_metrics:
        img_npz = reference_dir / ref_mod.IMAGES_FILE
        feats, key = ref_mod.load_reference_features(img_npz, dataset_h5, cfg)
        report["reference_images_key"] = key
        if feats is None:
            warnings.warn(f"reference image statistics {img_npz} are missing or were made for another dataset / "
                          f"resolution (key {key}); computing them in memory (run the reference stage to cache)",
                          RuntimeWarning, stacklevel=2)
            if len(views) < 2:
                raise EvaluateError(f"{dataset_h5}: the test split has {len(views)} rendered view(s); FID/KID "
                                    "need at least 2")
            real_kw = {"real_images": lambda: views.batches(cfg.batch_size, res)}
        else:
            real_kw = {"real_stats_cache": str(img_npz), "real_dataset_key": key,
                       "real_images": lambda: views.batches(cfg.batch_size, res)}
        report["num_reference_images"] = len(views)
    return real_kw


def _shapes_and_generated_meshes(sampler: Sampler, manifest: Path | None, reference_dir: Path,
                                 cfg: EvaluateConfig, report: dict):
    """``(reference shapes or None, sanitized generated meshes, {"empty", "degenerate", "invalid"} indices)``."""
    ref_shapes = None
    gen_meshes: list = []
    mesh_info: dict = {}
    if cfg.needs_meshes:
        ref_shapes = _reference_shapes(manifest, reference_dir, cfg)
        report["reference_shapes_key"] = ref_shapes["key"]
        n_ref = len(ref_shapes["ids"])
        n_gen = max(1, round(cfg.fake_mesh_factor * n_ref))
        tg = time.perf_counter()
        gen_meshes, invalid = sanitize_meshes(sampler.meshes(n_gen))
        if invalid:
            warnings.warn(f"{len(invalid)} generated meshes have non-finite vertices or bad faces (indices "
                          f"{invalid[:10]}); they are scored as empty meshes", RuntimeWarning, stacklevel=2)
        mesh_info = classify_meshes(gen_meshes)
        mesh_info["invalid"] = invalid
        report["mesh_generation_time_s"] = time.perf_counter() - tg
        if mesh_info["empty"] or mesh_info["degenerate"]:
            warnings.warn(f"{len(mesh_info['empty'])} of {n_gen} generated meshes are empty and "
                          f"{len(mesh_info['degenerate'])} degenerate (no faces / one triangle / zero area); they are "
                          "scored as defined in get3d.evaluate.stage (origin point cloud, zero LFD descriptors)",
                          RuntimeWarning, stacklevel=2)
    return ref_shapes, gen_meshes, mesh_info


def _metric_contexts(sampler: Sampler, cfg: EvaluateConfig, device: str, image_metrics: list[str], real_kw: dict,
                     manifest: Path | None, ref_shapes: dict | None, gen_meshes: list) -> list:
    """One ``(image source, MetricContext)`` per image source (``[(None, ctx)]`` without image metrics); the
    first carries the mesh inputs, the others share its Inception network and reference features."""
    from get3d.metrics import MetricContext

    ctx_kw = {"device": device, "num_fake_images": cfg.num_fake_images, "num_points": cfg.num_points,
              "seed": cfg.seed, "batch_size": cfg.batch_size, "kid_subsets": cfg.kid_subsets,
              "kid_subset_size": cfg.kid_subset_size, "lfd_batch_meshes": cfg.lfd_batch_meshes}
    contexts: list[tuple[str, MetricContext]] = []
    sources = list(cfg.image_sources) if image_metrics else [None]
    for k, source in enumerate(sources):
        ctx = MetricContext(**ctx_kw, **real_kw,
                            fake_images=sampler.provider(source, cfg.num_fake_images) if source else None)
        if k == 0 and ref_shapes is not None:
            ctx.fake_meshes = lambda: gen_meshes
            ctx.real_meshes = _real_mesh_provider(manifest, ref_shapes["ids"])
            _precomputed_inputs(ctx, cfg, gen_meshes, ref_shapes, device)
        if k > 0:  # share the Inception network and the reference features with the first context
            for key in ("inception", "real_features"):
                if key in contexts[0][1].cache:
                    ctx.cache[key] = contexts[0][1].cache[key]
        contexts.append((source, ctx))
    return contexts


def _compute_all_metrics(contexts: list, metric_names: list[str], image_metrics: list[str],
                         other_metrics: list[str]) -> dict:
    """Flat ``{key: value}`` over all contexts; image metric keys of a non-'ori' source get its suffix."""
    from get3d.metrics import compute_metrics

    flat: dict = {}
    for k, (source, ctx) in enumerate(contexts):
        names = metric_names if k == 0 else image_metrics
        if k == 0 and source is not None and source != "ori":
            # image metrics of a non-'ori' first source get suffixed keys; mesh metrics keep theirs
            res_other = compute_metrics(other_metrics, ctx) if other_metrics else {}
            res_img = compute_metrics(image_metrics, ctx)
            flat.update(res_other)
            flat.update(_suffix(res_img, image_metrics, source))
            continue
        res_k = compute_metrics(names, ctx)
        flat.update(res_k if source in (None, "ori") else _suffix(res_k, image_metrics, source))
    return flat


def _check_per_shape_agrees(per_shape: dict, flat: dict) -> None:
    """Warn if per_shape.json's COV / MMD summary differs from the metrics."""
    for name in ("cd", "lfd"):  # per_shape.json must describe the numbers in metrics.json
        summ = per_shape["summary"].get(name)
        if f"cov_{name}" in flat and (summ is None or summ["cov"] is None
                                      or not math.isclose(summ["cov"], flat[f"cov_{name}"], rel_tol=1e-9)
                                      or not math.isclose(summ["mmd"], flat[f"mmd_{name}"], rel_tol=1e-6)):
            warnings.warn(f"per_shape.json {name} summary {summ} disagrees with metrics cov_{name}="
                          f"{flat[f'cov_{name}']}, mmd_{name}={flat.get(f'mmd_{name}')} "
                          "(MetricContext.distance_matrix)", RuntimeWarning, stacklevel=2)


def _write_previews_and_detail(out_dir: Path, sampler: Sampler, previews: dict, cfg: EvaluateConfig,
                               manifest: Path | None, ref_shapes: dict | None, gen_meshes: list,
                               per_shape: dict) -> dict:
    """Write preview.png and detail/ OBJs; returns the output paths dict (metrics / per_shape / report too)."""
    if cfg.num_preview and not previews:  # generate a few if no image metric produced them
        for _ in sampler.images_ori(cfg.num_preview):
            pass
    paths = {"metrics": str(out_dir / METRICS_FILE), "per_shape": str(out_dir / PER_SHAPE_FILE),
             "report": str(out_dir / REPORT_FILE)}
    if cfg.num_preview and previews:
        blocks = [image_grid(previews[s]) for s in ("ori", "3d") if s in previews]
        width = max(b.shape[1] for b in blocks)
        blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=128) for b in blocks]
        _atomic_png(out_dir / PREVIEW_FILE, np.concatenate(blocks, 0))
        paths["preview"] = str(out_dir / PREVIEW_FILE)
    if cfg.num_detail_shapes and ref_shapes is not None and per_shape["reference"]:
        paths["detail"] = str(_write_detail(out_dir / DETAIL_DIR, manifest, ref_shapes, gen_meshes, per_shape,
                                            cfg.num_detail_shapes))
    return paths


def _final_metrics(flat: dict, cfg: EvaluateConfig, image_metrics: list[str], views, ref_shapes: dict | None,
                   gen_meshes: list, mesh_info: dict, kimg, t0: float) -> dict:
    """metrics.json content: metric values + counts + timing, sorted, non-finite values as None (warned)."""
    n_gen = len(gen_meshes)
    flat.update({
        "num_fake_images": cfg.num_fake_images if image_metrics else 0,
        "num_fake_meshes": n_gen,
        "num_reference_shapes": len(ref_shapes["ids"]) if ref_shapes else 0,
        "num_reference_images": len(views) if image_metrics else 0,
        "num_empty_meshes": len(mesh_info.get("empty", [])),
        "num_degenerate_meshes": len(mesh_info.get("degenerate", [])),
        "num_invalid_meshes": len(mesh_info.get("invalid", [])),
        "empty_mesh_fraction": len(mesh_info.get("empty", [])) / n_gen if n_gen else 0.0,
        "eval_time_s": time.perf_counter() - t0,
    })
    if kimg is not None:
        flat["kimg"] = kimg
    bad: list[str] = []
    metrics = {k: _finite_or_none(k, v, bad) for k, v in sorted(flat.items())}
    if bad:
        warnings.warn(f"non-finite metric values written as null: {bad}", RuntimeWarning, stacklevel=2)
    return metrics


def _write_outputs(out_dir: Path, per_shape: dict, metrics: dict, report: dict, paths: dict) -> None:
    """per_shape.json, metrics.json, then evaluate.json (report completed with metrics + paths)."""
    _atomic_json(out_dir / PER_SHAPE_FILE, per_shape)
    _atomic_json(out_dir / METRICS_FILE, metrics)
    report["metrics"] = metrics
    report["paths"] = paths
    _atomic_json(out_dir / REPORT_FILE, report)


def _suffix(res: dict, image_metrics: list[str], source: str) -> dict:
    out = {}
    for k, v in res.items():
        for m in image_metrics:
            if k == m:
                k = f"{m}_{source}"
                break
            if k == f"{m}_time_s":
                k = f"{m}_{source}_time_s"
                break
        out[k] = v
    return out


def _reference_shapes(manifest: Path, reference_dir: Path, cfg: EvaluateConfig) -> dict:
    """Cached reference shapes if up to date, else computed in a temp folder (with a warning)."""
    with_lfd = "lfd" in cfg.metrics
    npz = reference_dir / ref_mod.SHAPES_FILE
    items = ref_mod.test_items(manifest)
    key = ref_mod.shapes_key(items, cfg, with_lfd)
    if ref_mod._read_key(npz) == key:
        return ref_mod.load_reference_shapes(npz)
    warnings.warn(f"reference shapes {npz} are missing or stale (key {key}); computing them in memory "
                  "(run the reference stage to cache)", RuntimeWarning, stacklevel=3)
    with tempfile.TemporaryDirectory() as tmp:
        ref_mod.reference_shapes(manifest, Path(tmp) / ref_mod.SHAPES_FILE, cfg, with_lfd)
        return ref_mod.load_reference_shapes(Path(tmp) / ref_mod.SHAPES_FILE)


def _real_mesh_provider(manifest: Path, ids: list[str]):
    def load():
        by_id = {str(it["id"]): it for it in ref_mod.test_items(manifest)}
        return [ref_mod.load_placed_mesh(by_id[i]) for i in ids]
    return load


def _precomputed_inputs(ctx, cfg: EvaluateConfig, gen_meshes: list, ref_shapes: dict, device: str) -> None:
    """Hand the cached reference point clouds / LFD descriptors (and the empty-skipping generated-descriptor
    provider) to the built-in ``cd`` / ``lfd`` metrics through the public MetricContext fields."""
    if "cd" in cfg.metrics:
        ctx.real_points = ref_shapes["points"]
    if "lfd" in cfg.metrics:
        if ref_shapes["lfd"] is None:
            raise EvaluateError("reference shapes carry no LFD descriptors although 'lfd' is configured")
        ctx.real_lfd = ref_shapes["lfd"]
        ctx.fake_lfd = lambda: generated_lfd_descriptors(gen_meshes, device, cfg.lfd_batch_meshes)


def generated_lfd_descriptors(meshes: list, device: str, batch: int):
    """:func:`get3d.metrics.lfd.mesh_descriptors` of the non-empty meshes; empty meshes get the all-zero codes
    that function defines for them, without rendering / analysing 100 blank silhouettes each."""
    from get3d.metrics.lfd import LFDDescriptor, mesh_descriptors

    keep = [i for i, (v, f) in enumerate(meshes) if len(f) and len(v)]
    d = mesh_descriptors([meshes[i] for i in keep], device, batch)
    out = []
    for k in ("art", "fd", "cir", "ecc"):
        src = getattr(d, k)
        full = torch.zeros((len(meshes),) + tuple(src.shape[1:]), dtype=src.dtype, device=src.device)
        if keep:
            full[torch.as_tensor(keep, device=src.device)] = src
        out.append(full)
    return LFDDescriptor(*out)


def _per_shape(ctx, ref_shapes: dict | None, gen_meshes: list, mesh_info: dict) -> dict:
    out: dict = {"reference": [], "generated": [], "summary": {}}
    if ref_shapes is None:
        return out
    ids = ref_shapes["ids"]
    empty = set(mesh_info.get("empty", []))
    out["reference"] = [{"index": i, "id": rid} for i, rid in enumerate(ids)]
    out["generated"] = [{"index": g, "num_faces": len(f), "num_vertices": len(v), "empty": g in empty}
                        for g, (v, f) in enumerate(gen_meshes)]
    for name, scale in (("cd", 1e3), ("lfd", 1.0)):
        matrix = ctx.distance_matrix(name)
        if matrix is None:
            continue
        lists = nearest_lists(matrix, ids)
        for e, l in zip(out["reference"], lists["reference"]):
            e[name] = l
        for e, l in zip(out["generated"], lists["generated"]):
            e[name] = l
        out["summary"][name] = coverage_from_lists(lists, len(ids), scale) | {"mmd_scale": scale}
    return out


def _write_detail(folder: Path, manifest: Path, ref_shapes: dict, gen_meshes: list, per_shape: dict,
                  n: int) -> Path:
    from get3d.metrics.pointcloud import normalize_scale

    by_id = {str(it["id"]): it for it in ref_mod.test_items(manifest)}
    folder.mkdir(parents=True, exist_ok=True)
    for e in per_shape["reference"][:n]:
        rid = e["id"]
        try:
            v, f = ref_mod.load_placed_mesh(by_id[rid])
        except (KeyError, ref_mod.ReferenceError) as exc:
            warnings.warn(f"detail: cannot export reference {rid}: {exc}", RuntimeWarning, stacklevel=2)
            continue
        stem = f"ref{e['index']:04d}_{''.join(c if c.isalnum() or c in '-_' else '_' for c in rid)}"
        write_obj(folder / f"{stem}.obj", normalize_scale(v), f)
        for name in ("cd", "lfd"):
            if name in e:
                j = e[name]["nearest_generated"]
                gv, gf = gen_meshes[j]
                write_obj(folder / f"{stem}_nearest_{name}_gen{j:05d}.obj", normalize_scale(gv), gf)
    return folder
