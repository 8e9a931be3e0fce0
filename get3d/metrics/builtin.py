"""The built-in metrics: ``fid``, ``kid``, ``cd`` (COV-CD / MMD-CD) and ``lfd`` (COV-LFD / MMD-LFD)."""
from __future__ import annotations

import numpy as np
import torch

from .registry import MATRIX_KEYS, MetricContext, iterate_batches, register_metric


def _real_features(ctx: MetricContext) -> np.ndarray:
    def make():
        from .fid import load_features_npz, save_features_npz
        if ctx.real_stats_cache:
            feats = load_features_npz(ctx.real_stats_cache, ctx.real_dataset_key)
            if feats is not None:
                return feats
        ext = ctx.cached("inception", lambda: _extractor(ctx))
        feats = ext.features_from_batches(iterate_batches(ctx.require("real_images", "fid")))
        if ctx.real_stats_cache:
            save_features_npz(ctx.real_stats_cache, feats, ctx.real_dataset_key or "")
        return feats
    return ctx.cached("real_features", make)


def _extractor(ctx):
    from .inception import InceptionFeatureExtractor
    return InceptionFeatureExtractor(ctx.device, ctx.batch_size)


def _fake_features(ctx: MetricContext) -> np.ndarray:
    def make():
        ext = ctx.cached("inception", lambda: _extractor(ctx))
        return ext.features_from_batches(iterate_batches(ctx.require("fake_images", "fid"), ctx.num_fake_images))
    return ctx.cached("fake_features", make)


@register_metric("fid")
def fid_metric(ctx: MetricContext) -> dict:
    from .fid import fid_from_features
    return {"fid": fid_from_features(_real_features(ctx), _fake_features(ctx))}


@register_metric("kid")
def kid_metric(ctx: MetricContext) -> dict:
    from .fid import kid_from_features
    return {"kid": kid_from_features(_real_features(ctx), _fake_features(ctx), ctx.kid_subsets,
                                     ctx.kid_subset_size, ctx.seed, ctx.device)}


@register_metric("cd")
def cd_metric(ctx: MetricContext) -> dict:
    from .chamfer import chamfer_matrix
    from .coverage import coverage_mmd
    from .pointcloud import sample_many

    def make():
        gen = sample_many(ctx.require("fake_meshes", "cd")(), ctx.num_points, ctx.seed)
        if ctx.real_points is not None:
            ref = ctx.real_points
            ref = ref if isinstance(ref, torch.Tensor) else torch.as_tensor(np.asarray(ref))
            if ref.ndim != 3 or ref.shape[-1] != 3:
                raise ValueError(f"MetricContext.real_points must be [R, N, 3], got {tuple(ref.shape)}")
        else:
            ref = sample_many(ctx.require("real_meshes", "cd")(), ctx.num_points, ctx.seed + 1_000_000)
        return chamfer_matrix(gen, ref, device=ctx.device)
    d = ctx.cached(MATRIX_KEYS["cd"], make)
    r = coverage_mmd(d, scale=1e3)
    return {"cov_cd": r["cov"], "mmd_cd": r["mmd"]}


@register_metric("lfd")
def lfd_metric(ctx: MetricContext) -> dict:
    from .coverage import coverage_mmd
    from .lfd import lfd_matrix, mesh_descriptors

    def make():
        if ctx.fake_lfd is not None:
            gen = ctx.fake_lfd()
        else:
            gen = mesh_descriptors(ctx.require("fake_meshes", "lfd")(), ctx.device, ctx.lfd_batch_meshes)
        if ctx.real_lfd is not None:
            ref = ctx.real_lfd
        else:
            ref = mesh_descriptors(ctx.require("real_meshes", "lfd")(), ctx.device, ctx.lfd_batch_meshes)
        return lfd_matrix(gen, ref, device=ctx.device)
    d = ctx.cached(MATRIX_KEYS["lfd"], make)
    r = coverage_mmd(d, scale=1.0)
    return {"cov_lfd": r["cov"], "mmd_lfd": r["mmd"]}
