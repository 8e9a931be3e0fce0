"""The ``export`` stage (``get3d export``, DVC stage ``export``): a trained generator → ``data/export/``.

Writes, in ``out_dir``:

- ``meshes/``: one ``<name>.glb`` and ``<name>.obj`` + ``.mtl`` + ``.png`` per sample (:mod:`.sample`) and
  ``samples.json``;
- ``previews/`` and ``turntables/`` (:mod:`.previews`);
- ``gallery.html`` + the vendored viewer script (:mod:`.gallery`);
- ``metrics.json`` (DVC metrics): the export FID (:mod:`.fid`, when ``export.fid_samples`` > 0) and counts;
- ``export.json``: the report (config, model, timings, warnings, paths).
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

from get3d.io import atomic_write_json

from .config import ExportConfig
from .sample import ExportError, check_writable, load_model, raster_backend, sample_meshes

MESH_DIR = "meshes"
METRICS_FILE = "metrics.json"
REPORT_FILE = "export.json"


def run_export(model, out_dir: str | os.PathLike, cfg: ExportConfig, *, dataset_h5: str | os.PathLike | None = None,
               reference_dir: str | os.PathLike | None = None) -> dict:
    """Sample, preview, publish and measure an export (see the module docstring).

    ``dataset_h5`` gives the camera prior (previews) and the test cameras + reference images of the export FID
    (needed when ``export.fid_samples`` > 0); ``reference_dir`` the cached reference features.
    Returns ``{"metrics", "samples", "previews", "gallery", "warnings", "paths"}``."""
    out_dir = check_writable(Path(out_dir))
    dataset_h5 = Path(dataset_h5) if dataset_h5 is not None else None
    if cfg.fid_samples > 0 and (dataset_h5 is None or not dataset_h5.is_file()):
        raise ExportError(f"export.fid_samples is {cfg.fid_samples} but the dataset {dataset_h5} is missing (the "
                          "export FID renders from its test cameras; set export.fid_samples: 0 to skip)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _run(model, out_dir, cfg, dataset_h5, Path(reference_dir) if reference_dir else None)
    seen: dict = {}
    for w in caught:
        if not issubclass(w.category, (DeprecationWarning, FutureWarning)):
            seen.setdefault(f"{w.category.__name__}: {w.message}", w)
    for w in seen.values():
        warnings.warn(str(w.message), w.category, stacklevel=2)
    result["warnings"] = list(seen)
    report = {k: result[k] for k in ("metrics", "previews", "gallery", "warnings", "timing")}
    report.update(config=result["samples"]["config"], model=result["samples"]["model"],
                  device=result["samples"]["device"], dataset=str(dataset_h5) if dataset_h5 else None)
    atomic_write_json(out_dir / REPORT_FILE, report)
    return result


def _run(model, out_dir: Path, cfg: ExportConfig, dataset_h5: Path | None, reference_dir: Path | None) -> dict:
    from get3d.train.models import camera_prior

    t0 = time.perf_counter()
    gen = load_model(model, cfg.resolve_device(), cfg.backend)
    backend = raster_backend(gen, cfg.backend)
    prior = camera_prior(gen.model_config, dataset_h5 if dataset_h5 and dataset_h5.is_file() else None)
    psi = cfg.truncation_psi
    samples = sample_meshes(gen, out_dir / MESH_DIR, cfg)
    samples["model"]["source"] = str(model)
    timing = {f"{k}_s": v for k, v in samples["timing"].items()}

    t = time.perf_counter()
    from .previews import write_previews

    previews = write_previews(gen, samples["meshes"], cfg, psi, out_dir, backend, prior)
    timing["previews_s"] = time.perf_counter() - t

    gallery = None
    if cfg.gallery:
        from .gallery import write_gallery

        n = sum(not m["empty"] for m in samples["meshes"])
        gallery = str(write_gallery(out_dir, samples["meshes"], previews["turntables"], "GET3D samples",
                                    f"{n} samples, truncation psi {psi}, {cfg.texture_size}² textures",
                                    fov_deg=prior.fovy_deg))
    metrics = {"num_samples": len(samples["meshes"]),
               "num_empty_samples": sum(m["empty"] for m in samples["meshes"]),
               "shapes_per_s": samples["shapes_per_s"]}
    if cfg.fid_samples > 0:
        from .fid import export_fid

        t = time.perf_counter()
        metrics.update(export_fid(gen, cfg, psi, dataset_h5, reference_dir, backend, prior))
        timing["fid_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t0
    metrics["export_time_s"] = timing["total_s"]
    atomic_write_json(out_dir / METRICS_FILE, {k: v for k, v in metrics.items() if not isinstance(v, str)})
    return {"metrics": metrics, "samples": samples, "previews": previews, "gallery": gallery, "timing": timing,
            "paths": {"meshes": str(out_dir / MESH_DIR), "metrics": str(out_dir / METRICS_FILE),
                      "report": str(out_dir / REPORT_FILE)}}
