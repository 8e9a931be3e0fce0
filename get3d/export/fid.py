"""Export FID: what exporting costs in image quality.

``fid_samples`` codes (seeds ``FID_SEED_BASE + i``, the export's ψ and noise mode) are generated once.  Sample
``i`` is seen from test-split camera ``i mod |test views|`` of the dataset (its stored ``c2w``, the prior's field
of view) and rendered twice at the FID resolution on a black background (as the reference views are):

- ``fid_generator``: the generator's own rendering (texture field queried per pixel; FID-3D of get3d.evaluate);
- ``fid_export``: the exported GLB file loaded back with trimesh (UV atlas, baked texture, clean-up) and
  rendered by the project rasterizer with bilinear texture lookup.

Both against the reference features of the test views (``<reference>/images.npz`` from the reference stage when
it matches the dataset and resolution, else computed in memory).  ``fid_export - fid_generator`` is the export
loss; ``export_pixel_error`` the mean absolute difference of the two renderings in 8-bit levels.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from get3d import meshio

from .config import ExportConfig
from .render import mvp_from_c2w, render_field, render_textured, to_uint8
from .sample import Code, Timer, code_latents, export_batch, generate

FID_SEED_BASE = 1_000_000


def split_cameras(dataset_h5: Path) -> np.ndarray:
    """``c2w`` [N, 4, 4] of the test-split views (same order as get3d.evaluate.reference.TestViews)."""
    import h5py

    from get3d.evaluate.reference import TestViews

    views = TestViews(dataset_h5)
    with h5py.File(dataset_h5, "r") as f:
        if "c2w" not in f:
            raise ValueError(f"{dataset_h5}: no 'c2w' dataset (camera poses); not a render-stage HDF5 file")
        return np.asarray(f["c2w"][:], np.float64)[views.indices]


def reference_features(dataset_h5: Path, reference_dir: Path | None, resolution: int, batch_size: int,
                       extractor) -> tuple[np.ndarray, str]:
    from get3d.evaluate import reference as ref
    from get3d.metrics.fid import load_features_npz

    views = ref.TestViews(dataset_h5)
    key = ref.images_key(views, resolution)
    npz = Path(reference_dir) / ref.IMAGES_FILE if reference_dir else None
    feats = load_features_npz(npz, key) if npz is not None and npz.is_file() else None
    if feats is not None and len(feats) == len(views):
        return feats, "cache"
    warnings.warn(f"reference image features for {dataset_h5} at {resolution}² not cached in {npz}; computing them "
                  "in memory (run the reference stage to cache)", RuntimeWarning, stacklevel=2)
    return extractor.features_from_batches(views.batches(batch_size, resolution)), "computed"


@torch.no_grad()
def export_fid(gen, cfg: ExportConfig, psi: float, dataset_h5: Path, reference_dir: Path | None, backend,
               prior, extractor=None) -> dict:
    """See the module docstring; returns the metrics and counts."""
    from get3d.evaluate.reference import TestViews
    from get3d.metrics.inception import InceptionFeatureExtractor

    n = cfg.fid_samples
    if n < 2:
        raise ValueError(f"export.fid_samples: FID needs at least 2 samples, got {n}")
    views = TestViews(dataset_h5)
    res = int(cfg.fid_resolution or views.resolution)
    c2w = split_cameras(dataset_h5)
    if len(c2w) == 0:
        raise ValueError(f"{dataset_h5}: the test split has no views (cameras of the export FID)")
    ext = extractor or InceptionFeatureExtractor(gen.device, 32)
    real, source = reference_features(dataset_h5, reference_dir, res, 32, ext)
    codes = [Code(FID_SEED_BASE + i, FID_SEED_BASE + i) for i in range(n)]
    own, exported, pix_err = [], [], []
    with tempfile.TemporaryDirectory(prefix="get3d-export-fid-") as tmp:
        tmp = Path(tmp)
        for s in range(0, n, cfg.batch_size):
            batch = codes[s:s + cfg.batch_size]
            mvp = mvp_from_c2w(c2w[[i % len(c2w) for i in range(s, s + len(batch))]], prior.fovy_deg, gen.device)
            zt, zg = code_latents(batch, gen.z_dim)
            raw, texture_fn = generate(gen, zt, zg, psi, cfg.noise_mode)
            meshes = [(torch.from_numpy(v).to(gen.device), torch.from_numpy(f).to(gen.device)) for v, f in raw]
            a = to_uint8(render_field(backend, meshes, texture_fn, mvp, res)["rgb"][:, :3])
            recs = export_batch(gen, batch, _glb_only(cfg), psi, backend, tmp, None, Timer())
            files = [None if r["empty"] else meshio.load_textured(r["glb"]) for r in recs]
            b = _render_files(backend, files, mvp, res)
            own.append(ext(a).numpy())
            exported.append(ext(b).numpy())
            pix_err.append(np.abs(a.cpu().numpy().astype(np.float64) - b.cpu().numpy().astype(np.float64)).mean(
                axis=(1, 2, 3)))
            for r in recs:
                Path(r.get("glb", tmp / "none")).unlink(missing_ok=True)
    own_f, exp_f = np.concatenate(own), np.concatenate(exported)
    fid_g, fid_e = fid(real, own_f), fid(real, exp_f)
    return {"fid_generator": fid_g, "fid_export": fid_e, "fid_export_gap": fid_e - fid_g,
            "fid_export_vs_generator": fid(own_f, exp_f),
            "export_pixel_error": float(np.concatenate(pix_err).mean()), "fid_samples": n,
            "fid_resolution": res, "fid_reference_images": len(real), "fid_reference_source": source}


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """FID of two feature sets.  With fewer samples than feature dimensions (smoke runs) the covariances have
    low rank and ``tr sqrt(S1 S2)`` is exactly the sum of the singular values of ``A1 A2^T / sqrt((n1-1)(n2-1))``
    (``A`` = centred features): an ``n1 x n2`` SVD instead of 2048² eigen-decompositions."""
    from get3d.metrics.fid import fid_from_features

    a = np.asarray(real, np.float64)
    b = np.asarray(fake, np.float64)
    if min(len(a), len(b)) >= a.shape[1] or min(len(a), len(b)) < 2:
        return fid_from_features(a, b)
    a_c, b_c = a - a.mean(0), b - b.mean(0)
    tr_a = (a_c * a_c).sum() / (len(a) - 1)
    tr_b = (b_c * b_c).sum() / (len(b) - 1)
    cross = np.linalg.svd(a_c @ b_c.T, compute_uv=False).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    diff = a.mean(0) - b.mean(0)
    return float(max(diff @ diff + tr_a + tr_b - 2.0 * cross, 0.0))


def _glb_only(cfg: ExportConfig) -> ExportConfig:
    import dataclasses

    return dataclasses.replace(cfg, formats=["glb"], gallery=False)


def _render_files(backend, files: list, mvp: torch.Tensor, res: int) -> torch.Tensor:
    dev = mvp.device
    out = torch.zeros(len(files), 3, res, res, dtype=torch.uint8, device=dev)
    live = [i for i, m in enumerate(files) if m is not None]
    if live:
        meshes = [tuple(torch.from_numpy(np.array(x)) for x in (files[i].verts, files[i].faces, files[i].uvs,
                                                                  files[i].texture)) for i in live]
        r = render_textured(backend, meshes, mvp[live], res)
        out[live] = to_uint8(r["rgb"])
    return out
